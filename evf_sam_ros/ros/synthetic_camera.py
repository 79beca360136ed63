"""A synthetic RGB-D camera: publishes generated tabletop scenes with metric depth and intrinsics.

Topics (relative, so remap or namespace them like a real driver):
    image        sensor_msgs/Image rgb8
    depth        sensor_msgs/Image 32FC1, metres, aligned to ``image``
    camera_info  sensor_msgs/CameraInfo (plumb_bob, no distortion)
    ~/scene      std_msgs/String (JSON: seed and every object's colour, shape, size, 3D centre in the optical
                 frame), latched, so a listener can check results against ground truth
All three image topics of one frame carry the same header (stamp, ``frame_id``).

Parameters: ``rate`` [Hz] (5), ``width``/``height`` (640x480), ``seed`` (0; change it at runtime to switch
scenes), ``cycle_period`` [s] (0 = keep the scene; > 0: next seed every period), ``frame_id``,
``qos`` (``sensor_data`` | ``reliable``).

    python -m evf_sam_ros.ros.synthetic_camera --ros-args -p seed:=3 -p rate:=10.0
"""
from __future__ import annotations

import json
import sys

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene

__all__ = ['SyntheticCamera', 'scene_messages', 'scene_json', 'main']


def scene_json(scene) -> str:
    return json.dumps({
        'seed': scene.seed,
        'width': scene.intrinsics.width, 'height': scene.intrinsics.height,
        'objects': [{'index': o.index, 'colour': o.colour, 'shape': o.shape, 'size': o.size,
                     'center': [round(float(v), 5) for v in o.center_cam],
                     'pixel': [round(o.pixel[0], 1), round(o.pixel[1], 1)]} for o in scene.objects],
    })


def scene_messages(scene, stamp, frame_id: str):
    """(Image rgb8, Image 32FC1, CameraInfo) of a scene, all with the same header."""
    header = Header(stamp=stamp, frame_id=frame_id)
    h, w = scene.rgb.shape[:2]
    rgb = Image(header=header, height=h, width=w, encoding='rgb8', is_bigendian=0, step=w * 3)
    rgb.data = np.ascontiguousarray(scene.rgb).tobytes()
    depth = Image(header=header, height=h, width=w, encoding='32FC1', is_bigendian=0, step=w * 4)
    depth.data = np.ascontiguousarray(scene.depth, dtype='<f4').tobytes()
    k = scene.intrinsics
    info = CameraInfo(header=header, height=h, width=w, distortion_model='plumb_bob')
    info.d = [0.0] * 5
    info.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return rgb, depth, info


class SyntheticCamera(Node):
    """The camera node (rclpy must be initialised; ``context=`` etc. go to ``rclpy.node.Node``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__('synthetic_camera', **kwargs)
        self.declare_parameter('rate', 5.0)
        self.declare_parameter('width', 640)
        self.declare_parameter('height', 480)
        self.declare_parameter('seed', 0)
        self.declare_parameter('cycle_period', 0.0)
        self.declare_parameter('frame_id', 'camera_color_optical_frame')
        self.declare_parameter('qos', 'sensor_data')
        qos = qos_profile_sensor_data if self.get_parameter('qos').value == 'sensor_data' else \
            QoSProfile(depth=2, reliability=QoSReliabilityPolicy.RELIABLE)
        self._pub_rgb = self.create_publisher(Image, 'image', qos)
        self._pub_depth = self.create_publisher(Image, 'depth', qos)
        self._pub_info = self.create_publisher(CameraInfo, 'camera_info', qos)
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_scene = self.create_publisher(String, '~/scene', latched)
        self._next_seed: int | None = None
        self._render(int(self.get_parameter('seed').value))
        rate = float(self.get_parameter('rate').value)
        if rate <= 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        self._period = 1.0 / rate
        self._timer = self.create_timer(self._period, self._tick)
        self.add_on_set_parameters_callback(self._on_params)
        k = self._scene.intrinsics
        self.get_logger().info(f'synthetic camera: {k.width}x{k.height} at {rate:g} Hz, scene seed {self._seed}')

    def _render(self, seed: int) -> None:
        # Rendered once per scene (a 640x480 frame takes ~0.3 s); frames re-publish it with new stamps.
        cfg = SceneConfig(width=int(self.get_parameter('width').value),
                          height=int(self.get_parameter('height').value))
        self._scene = generate_scene(seed, cfg)
        self._seed = seed
        self._since_switch = 0.0
        self._pub_scene.publish(String(data=scene_json(self._scene)))

    def _on_params(self, params) -> SetParametersResult:
        for p in params:
            if p.name in ('rate', 'width', 'height', 'qos', 'frame_id'):
                return SetParametersResult(successful=False, reason=f'{p.name} is read-only')
        for p in params:
            if p.name == 'seed':
                self._next_seed = int(p.value)   # rendered in the timer, not in the service callback
        return SetParametersResult(successful=True)

    def _tick(self) -> None:
        if self._next_seed is not None:
            seed, self._next_seed = self._next_seed, None
            self._render(seed)
        cycle = float(self.get_parameter('cycle_period').value)
        self._since_switch += self._period
        if cycle > 0 and self._since_switch >= cycle:
            self._render(self._seed + 1)
        stamp = self.get_clock().now().to_msg()
        rgb, depth, info = scene_messages(self._scene, stamp, str(self.get_parameter('frame_id').value))
        self._pub_rgb.publish(rgb)
        self._pub_depth.publish(depth)
        self._pub_info.publish(info)


def main(args=None) -> int:
    from evf_sam_ros.ros.entry_points import run_node

    return run_node(SyntheticCamera, args)


if __name__ == '__main__':
    sys.exit(main())
