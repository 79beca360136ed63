"""The node as a separate process: a tiny random-weight checkpoint on CPU (full graph with depth),
a missing model (stays unconfigured), and large images across processes with the SHM profile."""
import array
import os
import sys
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from lifecycle_msgs.srv import GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from evf_sam_ros.msg import SegmentationArray
from ros_helpers import NodeProcess, spin_until

pytestmark = pytest.mark.ros
H, W = 48, 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Tester:
    def __init__(self, context, ns=''):
        self.node = rclpy.create_node('sub_tester', context=context)
        self.ex = SingleThreadedExecutor(context=context)
        self.ex.add_node(self.node)
        self.out = {'segmentations': [], 'mask': [], 'centroid': [], 'diagnostics': []}
        q = QoSProfile(depth=20)
        n = self.node
        n.create_subscription(SegmentationArray, f'{ns}/segmentations',
                              self.out['segmentations'].append, q)
        n.create_subscription(Image, f'{ns}/mask', self.out['mask'].append, q)
        n.create_subscription(PointStamped, f'{ns}/centroid', self.out['centroid'].append, q)
        n.create_subscription(DiagnosticArray, '/diagnostics', self.out['diagnostics'].append, q)
        self.image = n.create_publisher(Image, '/image', qos_profile_sensor_data)
        self.depth = n.create_publisher(Image, '/depth', qos_profile_sensor_data)
        self.info = n.create_publisher(CameraInfo, '/camera_info', qos_profile_sensor_data)
        self.prompt = n.create_publisher(String, '/prompt', 10)
        self.stamps = []

    def wait(self, pred, timeout):
        return spin_until(self.ex, pred, timeout=timeout, step=0.05)

    def send_frame(self, i):
        stamp = self.node.get_clock().now().to_msg()
        stamp.sec, stamp.nanosec = 1000 + i, 123
        info = CameraInfo(height=H, width=W, k=[60.0, 0, (W - 1) / 2, 0, 60.0, (H - 1) / 2, 0, 0, 1])
        info.header.stamp, info.header.frame_id = stamp, 'tiny_optical'
        self.info.publish(info)
        d = Image(height=H, width=W, encoding='32FC1', step=W * 4)
        d.header.stamp, d.header.frame_id = stamp, 'tiny_optical'
        d.data = array.array('B', np.full((H, W), 1.25, np.float32).tobytes())
        self.depth.publish(d)
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        m = Image(height=H, width=W, encoding='rgb8', step=W * 3)
        m.header.stamp, m.header.frame_id = stamp, 'tiny_optical'
        m.data = array.array('B', img.tobytes())
        self.image.publish(m)
        self.stamps.append((stamp.sec, stamp.nanosec))

    def stream_until(self, pred, timeout, period=0.3):
        deadline = time.monotonic() + timeout
        i = len(self.stamps)
        while time.monotonic() < deadline:
            i += 1
            self.send_frame(i)
            if self.wait(pred, period):
                return True
        return pred()

    def close(self):
        self.ex.shutdown()
        self.node.destroy_node()


def test_subprocess_full_graph_with_tiny_sam2(ros_context, ros_domain_id, tiny_checkpoint_sam2,
                                              tmp_path):
    params = {'model_path': str(tiny_checkpoint_sam2), 'device': 'cpu', 'dtype': 'fp32',
              'mode': 'once', 'score_threshold': -1.0, 'object_score_threshold': -100.0,
              'min_mask_area': 1, 'mask_erosion_px': 0, 'min_depth_pixels': 1,
              'depth_sync_tolerance': 0.0, 'warmup': False, 'torch_threads': 1}
    ros_args = [a for k, v in params.items() for a in ('-p', f'{k}:={v}')]
    proc = NodeProcess.python_module('evf_sam_ros.ros.node', ros_args, ros_domain_id,
                                     log_path=str(tmp_path / 'node.log'))
    t = _Tester(ros_context)
    try:
        assert t.wait(lambda: t.image.get_subscription_count() > 0 and
                      t.prompt.get_subscription_count() > 0, 60), proc.output()[-3000:]
        t.prompt.publish(String(data='the cup; [semantic] table'))
        assert t.stream_until(lambda: t.out['segmentations'] and t.out['mask'], 60), \
            proc.output()[-3000:]
        seg, mask = t.out['segmentations'][-1], t.out['mask'][-1]
        # outputs carry the header of one of the frames we sent
        assert (seg.header.stamp.sec, seg.header.stamp.nanosec) in t.stamps
        assert seg.header == mask.header and seg.header.frame_id == 'tiny_optical'
        assert [s.prompt for s in seg.segmentations] == ['the cup', '[semantic] table']
        assert [s.label for s in seg.segmentations] == [1, 2]
        assert all(s.has_object_score for s in seg.segmentations)   # SAM-2 checkpoint
        lm = np.frombuffer(mask.data, np.uint8).reshape(H, W)
        assert set(np.unique(lm)) <= {0, 1, 2}
        s1, s2 = seg.segmentations
        # label 1 wins overlaps, so its pixels are exactly its area; label 2 at most its area
        assert (lm == 1).sum() == (s1.area if s1.detected else 0)
        assert (lm == 2).sum() <= (s2.area if s2.detected else 0)
        detected = [s for s in seg.segmentations if s.detected]
        assert detected, 'random tiny model (seed 0) gives non-empty masks here'
        if detected:
            assert detected[0].has_position
            assert detected[0].position.z == pytest.approx(1.25)
            assert t.wait(lambda: t.out['centroid'], 5)
            c = t.out['centroid'][-1]
            assert c.header == seg.header and c.point.z == pytest.approx(1.25)
        # a threshold above any score: every prompt is reported, none detected
        pc = AsyncParameterClient(t.node, '/evf_sam')
        assert pc.wait_for_services(timeout_sec=20)
        fut = pc.set_parameters([Parameter('score_threshold', value=1.0)])
        assert t.wait(fut.done, 20) and fut.result().results[0].successful
        n = len(t.out['segmentations'])
        t.prompt.publish(String(data='the cup; [semantic] table'))
        assert t.stream_until(lambda: len(t.out['segmentations']) > n and
                              len(t.out['mask']) > n, 60)
        seg = t.out['segmentations'][-1]
        assert [s.detected for s in seg.segmentations] == [False, False]
        assert not np.frombuffer(t.out['mask'][-1].data, np.uint8).any()
        assert proc.alive()
    finally:
        t.close()
        rc = proc.stop()
    out = proc.output()
    assert 'Traceback' not in out, out[-3000:]
    assert rc in (0, -2, 130), (rc, out[-2000:])


def test_subprocess_missing_model_stays_unconfigured(ros_context, ros_domain_id, tmp_path):
    from ament_index_python.packages import get_package_prefix
    exe = os.path.join(get_package_prefix('evf_sam_ros'), 'lib', 'evf_sam_ros', 'segment_node')
    proc = NodeProcess([exe, '--ros-args', '-p', 'model_path:=/no/such/checkpoint',
                        '-p', 'device:=cpu'], ros_domain_id, log_path=str(tmp_path / 'node.log'))
    t = _Tester(ros_context)
    try:
        assert t.wait(lambda: 'stays unconfigured' in proc.output(), 60), proc.output()[-3000:]
        out = proc.output()
        assert 'could not load the model' in out and '/no/such/checkpoint' in out
        cli = t.node.create_client(GetState, '/evf_sam/get_state')
        assert cli.wait_for_service(timeout_sec=20)
        fut = cli.call_async(GetState.Request())
        assert t.wait(fut.done, 20)
        assert fut.result().current_state.label == 'unconfigured'
        assert t.wait(lambda: any(s.level == s.ERROR for d in t.out['diagnostics']
                                  for s in d.status), 10)
        assert proc.alive()
    finally:
        t.close()
        rc = proc.stop()
    assert 'Traceback' not in proc.output()
    assert rc in (0, -2, 130)


def test_large_images_cross_process_with_the_large_images_profile(ros_domain_id):
    """1920x1080 bgr8 (+ 32FC1 depth) best effort at 30 Hz between processes, with the shipped
    large-images profile (config/fastdds_large_images.xml: shared memory plus UDP) on both sides
    (camera and node): frames reach the node and results come back. (bench/bench_node.py measures
    it with and without the profile.)"""
    sys.path.insert(0, os.path.join(ROOT, 'bench'))
    import argparse

    import bench_node
    ns = argparse.Namespace(duration=2.0, rate=30.0, model_ms=10.0, domain_id=ros_domain_id, backend=None)
    r = bench_node.run_cross_process(1920, 1080, ns, shm=True)
    assert r['connected']
    # Uncontended, 98 % arrive with the profile and 2 % without (bench/bench_delivery.py); with the whole
    # suite's load on 2 cores the receiving process itself drops some (seen: 38 %): 25 % still tells the
    # profile's delivery from the default's
    assert r['node_received'] >= 0.25 * r['sent'], r
    assert r['results'] >= 5, r
