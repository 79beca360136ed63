"""The synthetic RGB-D camera node: image/depth/camera_info with one header, ground truth on ~/scene."""
import json

import numpy as np
import pytest

from ros_helpers import spin_until

pytestmark = pytest.mark.ros


def test_synthetic_camera_publishes_aligned_frames(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from evf_sam_ros.ros.synthetic_camera import SyntheticCamera
    from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene

    cam = SyntheticCamera(context=ros_context, parameter_overrides=[
        Parameter('rate', value=20.0), Parameter('width', value=320), Parameter('height', value=240),
        Parameter('seed', value=5)])
    import rclpy
    probe = rclpy.create_node('probe', context=ros_context)
    got = {'image': [], 'depth': [], 'info': [], 'scene': []}
    probe.create_subscription(Image, 'image', got['image'].append, qos_profile_sensor_data)
    probe.create_subscription(Image, 'depth', got['depth'].append, qos_profile_sensor_data)
    probe.create_subscription(CameraInfo, 'camera_info', got['info'].append, qos_profile_sensor_data)
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    probe.create_subscription(String, '/synthetic_camera/scene', got['scene'].append, latched)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(cam)
    ex.add_node(probe)
    try:
        def complete():
            stamps = [{(m.header.stamp.sec, m.header.stamp.nanosec) for m in got[k]} for k in ('image', 'depth', 'info')]
            return got['scene'] and len(stamps[0] & stamps[1] & stamps[2]) > 0
        assert spin_until(ex, complete, timeout=20.0)
        img, depth, info = got['image'][-1], got['depth'][-1], got['info'][-1]
        assert img.encoding == 'rgb8' and (img.width, img.height) == (320, 240) and img.step == 960
        assert depth.encoding == '32FC1' and depth.step == 320 * 4
        assert img.header.frame_id == depth.header.frame_id == info.header.frame_id
        ref = generate_scene(5, SceneConfig(width=320, height=240))
        rgb = np.frombuffer(bytes(img.data), np.uint8).reshape(240, 320, 3)
        d = np.frombuffer(bytes(depth.data), np.float32).reshape(240, 320)
        assert np.array_equal(rgb, ref.rgb) and np.array_equal(d, ref.depth)
        k = ref.intrinsics
        assert list(info.k) == pytest.approx([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1])
        scene = json.loads(got['scene'][-1].data)
        assert scene['seed'] == 5 and len(scene['objects']) == len(ref.objects)
        assert scene['objects'][0]['center'] == pytest.approx(list(ref.objects[0].center_cam), abs=1e-4)
        # switching scenes at runtime
        cam.set_parameters([Parameter('seed', value=6)])
        got['scene'].clear()
        assert spin_until(ex, lambda: got['scene'] and json.loads(got['scene'][-1].data)['seed'] == 6, timeout=20.0)
    finally:
        ex.shutdown()
        cam.destroy_node()
        probe.destroy_node()
