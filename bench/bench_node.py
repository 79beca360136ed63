#!/usr/bin/env python3
"""Benchmark of the evf_sam node alone (a fake constant-time model, so it measures the node).

For each input size (640x480, 1280x720, 1920x1080) a camera publishes bgr8 frames at 30 Hz
(best effort, stamped with the publish time) and one prompt; we measure

* frame -> result latency p50/p95: ``~/segmentations`` receipt time minus the image stamp
  (includes transport both ways when cross-process);
* achieved output rate, and the fraction of camera frames the node received;
* node overhead p50/p95 = (image receipt -> all outputs published) minus model time, reported by
  the node itself (``overhead_ms_*`` on /diagnostics); it covers image conversion, gating, 2D/3D
  geometry, label map and message building and publishing (mask, segmentations, centroid,
  markers), with an aligned 32FC1 depth image and camera_info, i.e. the full 3D path;
* backlog: whether latency grows over the run (p95 of the last third vs the first third).

Same process: node and camera in one process (intra-process, lossless). Cross process: the node
is a subprocess (`python -m evf_sam_ros.ros.node`), the camera another one, with and without the
large-images Fast DDS profile ``config/fastdds_large_images.xml`` (``FASTDDS_DEFAULT_PROFILES_FILE``).

    python bench/bench_node.py                # default run (< 2 minutes)
    python bench/bench_node.py --duration 10 --model-ms 50 --sizes 1280x720
    python bench/bench_node.py --backend onnxruntime --modes same --sizes 1280x720   # the embedded model

``--backend torch|onnxruntime|openvino`` runs the real embedded model through that backend instead of
the fake (exporting its graphs first when needed), so the overhead table can be redone per backend.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHM_PROFILE = ROOT / "config" / "fastdds_large_images.xml"


def _percentile(values, q):
    import numpy as np
    return float(np.percentile(values, q)) if values else float('nan')


def _measure(context, node_name_ns, w, h, duration, rate_hz, extra_wait=1.0):
    """Publish frames from a node in `context`; returns the measurement dict."""
    import array

    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from evf_sam_ros.msg import SegmentationArray

    node = rclpy.create_node('bench_camera', context=context)
    img_pub = node.create_publisher(Image, '/image', qos_profile_sensor_data)
    depth_pub = node.create_publisher(Image, '/depth', qos_profile_sensor_data)
    info_pub = node.create_publisher(CameraInfo, '/camera_info', qos_profile_sensor_data)
    prompt_pub = node.create_publisher(String, '/prompt', 10)
    lat, recv_t = [], []
    diag = {}
    lock = threading.Lock()

    def on_seg(msg):
        now = node.get_clock().now().nanoseconds
        st = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with lock:
            lat.append((now - st) / 1e6)
            recv_t.append(time.monotonic())

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith(node_name_ns):
                with lock:
                    diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(SegmentationArray, '/segmentations', on_seg,
                             QoSProfile(depth=100))
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    spin = threading.Thread(target=lambda: _spin(ex), daemon=True)
    spin.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (img_pub.get_subscription_count() == 0 or
                                           prompt_pub.get_subscription_count() == 0):
        time.sleep(0.05)
    connected = img_pub.get_subscription_count() > 0
    # prompt until the node has it (reliable, but it may be discovered late)
    prompt_pub.publish(String(data='the object'))
    frame = np.full((h, w, 3), 80, np.uint8)
    data = array.array('B', frame.tobytes())
    depth = np.full((h, w), 1.2, np.float32)
    ddata = array.array('B', depth.tobytes())
    info = CameraInfo(width=w, height=h, k=[500.0, 0, w / 2, 0, 500.0, h / 2, 0, 0, 1])
    info.header.frame_id = 'bench_optical'
    sent = 0
    t0 = time.monotonic()
    n = int(duration * rate_hz)
    for i in range(n):
        target = t0 + i / rate_hz
        time.sleep(max(0.0, target - time.monotonic()))
        stamp = node.get_clock().now().to_msg()
        d = Image(height=h, width=w, encoding='32FC1', step=w * 4)
        d.header.stamp, d.header.frame_id = stamp, 'bench_optical'
        d.data = ddata
        depth_pub.publish(d)
        info.header.stamp = stamp
        info_pub.publish(info)
        msg = Image(height=h, width=w, encoding='bgr8', step=w * 3)
        msg.header.stamp, msg.header.frame_id = stamp, 'bench_optical'
        msg.data = data
        img_pub.publish(msg)
        sent += 1
        if i % 15 == 0:
            prompt_pub.publish(String(data='the object'))
    t_end = time.monotonic()
    time.sleep(extra_wait)
    ex.shutdown(timeout_sec=1.0)
    with lock:
        lat_c, recv_c, diag_c = list(lat), list(recv_t), dict(diag)
    node.destroy_node()
    in_window = [t for t in recv_c if t <= t_end + 0.2]
    third = max(1, len(lat_c) // 3)
    return {
        'connected': connected,
        'sent': sent,
        'results': len(lat_c),
        'lat_p50': _percentile(lat_c, 50),
        'lat_p95': _percentile(lat_c, 95),
        'lat_first_p95': _percentile(lat_c[:third], 95),
        'lat_last_p95': _percentile(lat_c[-third:], 95),
        'out_rate': (len(in_window) - 1) / (in_window[-1] - in_window[0]) if len(in_window) > 1
        else 0.0,
        'node_received': float(diag_c.get('received', 'nan')),
        'overhead_p50': float(diag_c.get('overhead_ms_p50', 'nan')),
        'overhead_p95': float(diag_c.get('overhead_ms_p95', 'nan')),
        'model_p50': float(diag_c.get('model_ms_p50', 'nan')),
    }


def _spin(ex):
    try:
        ex.spin()
    except Exception:  # noqa: BLE001
        pass


def run_same_process(w, h, args):
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from evf_sam_ros.ros.fake_predictor import FakePredictor
    from evf_sam_ros.ros.node import SegmentNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=args.domain_id)
    params = [Parameter('diagnostics_period', value=0.25), Parameter('depth_sync_tolerance', value=0.0)]
    if args.backend:   # the real embedded model through that backend
        node = SegmentNode(context=ctx, parameter_overrides=params + [
            Parameter('backend', value=args.backend), Parameter('device', value='cpu'),
            Parameter('prompt_mode', value='raw')])
    else:
        pred = FakePredictor(delay=args.model_ms / 1000.0, radius=0.2)
        node = SegmentNode(context=ctx, predictor_factory=lambda *a: pred, parameter_overrides=params)
    from rclpy.logging import LoggingSeverity
    node.get_logger().set_level(LoggingSeverity.WARN)
    ex = MultiThreadedExecutor(num_threads=4, context=ctx)
    ex.add_node(node)
    t = threading.Thread(target=lambda: _spin(ex), daemon=True)
    t.start()
    try:
        return _measure(ctx, '/evf_sam', w, h, args.duration, args.rate)
    finally:
        ex.shutdown(timeout_sec=1.0)
        node.close()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _ensure_default_export():
    """The embedded model's ONNX graphs, exported once into the user cache."""
    from evf_sam_ros.model.loading import resolve_checkpoint_dir
    from evf_sam_ros.model.runtimes import EXPORT_MANIFEST, default_model_export_dir
    if not (default_model_export_dir(resolve_checkpoint_dir(None)[0]) / EXPORT_MANIFEST).is_file():
        subprocess.run([sys.executable, '-m', 'evf_sam_ros.cli', 'export', 'default'], check=True, cwd=str(ROOT))


def run_client(args):
    """Child process: the camera/measuring side of a cross-process run; prints JSON."""
    import rclpy
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=args.domain_id)
    try:
        w, h = map(int, args.client.split('x'))
        res = _measure(ctx, '/evf_sam', w, h, args.duration, args.rate, extra_wait=1.5)
    finally:
        rclpy.shutdown(context=ctx)
    print('RESULT ' + json.dumps(res), flush=True)
    return 0


def run_cross_process(w, h, args, shm: bool):
    from evf_sam_ros.ros.process import NodeProcess, ros_env

    os.environ.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)  # each case chooses its transport explicitly
    node_env = {'FASTDDS_DEFAULT_PROFILES_FILE': str(SHM_PROFILE)} if shm else {}
    env = ros_env(args.domain_id, **node_env)
    model = (['-p', f'backend:={args.backend}', '-p', 'device:=cpu', '-p', 'prompt_mode:=raw'] if args.backend
             else ['-p', f'model_path:=fake:delay={args.model_ms / 1000.0},radius=0.2'])
    node = NodeProcess.python_module(
        'evf_sam_ros.ros.node',
        model + ['-p', 'diagnostics_period:=0.25', '-p', 'depth_sync_tolerance:=0.0', '--log-level', 'warn'],
        args.domain_id, **node_env)
    try:
        out = subprocess.run(
            [sys.executable, __file__, '--client', f'{w}x{h}', '--duration', str(args.duration),
             '--rate', str(args.rate), '--domain-id', str(args.domain_id)],
            env=env, capture_output=True, text=True, timeout=args.duration + 60, cwd=str(ROOT))
        for line in out.stdout.splitlines():
            if line.startswith('RESULT '):
                return json.loads(line[7:])
        raise RuntimeError(f'client failed: {out.stdout[-2000:]} {out.stderr[-2000:]}')
    finally:
        node.stop(timeout=6.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--sizes', default='640x480,1280x720,1920x1080')
    ap.add_argument('--duration', type=float, default=5.0, help='seconds of camera stream per case')
    ap.add_argument('--rate', type=float, default=30.0, help='camera rate [Hz]')
    ap.add_argument('--model-ms', type=float, default=20.0, help='fake model time per frame [ms]')
    ap.add_argument('--modes', default='same,cross-shm,cross-default',
                    help='same | cross-shm | cross-default (cross-default only at 1920x1080 '
                         'unless --all-default)')
    ap.add_argument('--all-default', action='store_true')
    ap.add_argument('--domain-id', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '0') or 0)
                    or 147)
    ap.add_argument('--json', help='also write the results here')
    ap.add_argument('--backend', choices=['torch', 'onnxruntime', 'openvino'],
                    help='run the real embedded model with this backend instead of the fake model')
    ap.add_argument('--client', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    if args.client:
        return run_client(args)
    modes = args.modes.split(',')
    rows = []
    if args.backend in ('onnxruntime', 'openvino'):
        _ensure_default_export()
    model = f'embedded model, {args.backend}' if args.backend else f'fake model {args.model_ms:.0f} ms'
    print(f'evf_sam node benchmark: {model}, camera {args.rate:.0f} Hz '
          f'bgr8 + 32FC1 depth, {args.duration:.0f} s per case, {os.cpu_count()} CPU cores',
          flush=True)
    for size in args.sizes.split(','):
        w, h = map(int, size.split('x'))
        for mode in modes:
            if mode == 'cross-default' and not args.all_default and w < 1920:
                continue
            if mode == 'same':
                r = run_same_process(w, h, args)
            else:
                r = run_cross_process(w, h, args, shm=(mode == 'cross-shm'))
            r.update(size=size, mode=mode)
            rows.append(r)
            print(_row(r), flush=True)
    print()
    print(table(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


HEADER = ('| input | transport | frames received by node | results | latency p50 / p95 [ms] | '
          'output rate [Hz] | node overhead p50 / p95 [ms] | backlog |')


def _row(r):
    recv = r['node_received']
    recv_s = f"{int(recv)}/{r['sent']} ({100 * recv / r['sent']:.0f} %)" if recv == recv else 'n/a'
    backlog = 'yes' if r['lat_last_p95'] > r['lat_first_p95'] + 100 else 'no'
    names = {'same': 'same process', 'cross-shm': 'cross-process, SHM profile',
             'cross-default': 'cross-process, default transports'}
    return (f"| {r['size']} | {names.get(r['mode'], r['mode'])} | {recv_s} | {r['results']} | "
            f"{r['lat_p50']:.1f} / {r['lat_p95']:.1f} | {r['out_rate']:.1f} | "
            f"{r['overhead_p50']:.1f} / {r['overhead_p95']:.1f} | {backlog} |")


def table(rows):
    lines = [HEADER, '|' + '---|' * 8]
    lines += [_row(r) for r in rows]
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
