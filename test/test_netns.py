"""Visible to other machines with the launch file's DEFAULTS (and with ``large_images:=true``): two
network namespaces joined by a veth pair stand for two computers. The camera and a subscriber run in
one ("the laptop", Fast DDS restricted to UDP as on another host: no shared memory), the node, started
with `ros2 launch` and nothing but a model, in the other ("the robot"). Normal DDS discovery
(multicast) inside the namespaces: ROS_AUTOMATIC_DISCOVERY_RANGE is unset there. The namespaces have
no route out (addresses from 192.0.2.0/24, TEST-NET-1, on the veth pair only) and are deleted
afterwards.
"""
import os
import shutil
import subprocess
import uuid

import pytest

from launch_helpers import Ros2Session

pytestmark = [pytest.mark.ros, pytest.mark.ros2cli, pytest.mark.netns, pytest.mark.slow]


def _ip(*args):
    subprocess.run(['ip', *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    hosts = {'laptop': (f'evf-laptop-{tag}', f'evfL{tag}', '192.0.2.1/24'),
             'robot': (f'evf-robot-{tag}', f'evfR{tag}', '192.0.2.2/24')}
    try:
        for ns, _, _ in hosts.values():
            _ip('netns', 'add', ns)
        _ip('link', 'add', hosts['laptop'][1], 'type', 'veth', 'peer', 'name', hosts['robot'][1])
        for ns, dev, addr in hosts.values():
            _ip('link', 'set', dev, 'netns', ns)
            _ip('-n', ns, 'link', 'set', 'lo', 'up')
            _ip('-n', ns, 'addr', 'add', addr, 'dev', dev)
            _ip('-n', ns, 'link', 'set', dev, 'up', 'multicast', 'on')
            _ip('-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', dev)   # DDS discovery multicast
        yield {name: ns for name, (ns, _, _) in hosts.items()}
    finally:
        for ns, _, _ in hosts.values():
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=20)


@pytest.mark.parametrize('launch_args', [[], ['large_images:=true']], ids=['defaults', 'large_images'])
def test_node_started_with_defaults_is_visible_from_another_host(two_hosts, ros_domain_id, tmp_path,
                                                                  tiny_checkpoint_sam1, launch_args):
    """With the defaults, and with the documented large-image set-up (its profile keeps UDP)."""
    if os.geteuid() != 0 or not shutil.which('ip'):
        pytest.skip('needs root and iproute2 (ip netns)')
    ros2 = Ros2Session(ros_domain_id, tmp_path)
    ros2.env.pop('ROS_AUTOMATIC_DISCOVERY_RANGE')   # default discovery inside the namespaces
    laptop = ['ip', 'netns', 'exec', two_hosts['laptop'], 'env', 'FASTDDS_BUILTIN_TRANSPORTS=UDPv4']
    robot = ['ip', 'netns', 'exec', two_hosts['robot']]
    try:
        launch = ros2.start(robot + ['ros2', 'launch', 'evf_sam_ros', 'segment.launch.py',
                                     f'model_path:={tiny_checkpoint_sam1}', 'device:=cpu', *launch_args],
                            'launch')
        ros2.start(laptop + ['ros2', 'run', 'evf_sam_ros', 'synthetic_camera', '--ros-args',
                             '-r', '__ns:=/camera/camera', '-r', 'image:=color/image_raw',
                             '-r', 'camera_info:=color/camera_info',
                             '-r', 'depth:=aligned_depth_to_color/image_raw',
                             '-p', 'width:=320', '-p', 'height:=240', '-p', 'rate:=5.0'], 'camera')
        ros2.wait_output(launch, r'active: mode=', timeout=120)
        if launch_args:   # the large-image profile was really given to the node
            ros2.wait_output(launch, r'large_images:=true: Fast DDS profile', timeout=5)
        ros2.until(laptop + ['ros2', 'node', 'list', '--no-daemon'],
                           lambda t: '/evf_sam/evf_sam' in t, timeout=60)
        ros2.run(laptop + ['ros2', 'topic', 'pub', '--once', '-w', '1', '/evf_sam/prompt',
                           'std_msgs/msg/String', "data: 'the red cube'"], timeout=60)
        echo = ros2.run(laptop + ['ros2', 'topic', 'echo', '--once', '/evf_sam/segmentations',
                                  'evf_sam_ros/msg/SegmentationArray'], timeout=90)
        assert 'prompt: the red cube' in echo, echo
        assert 'frame_id: camera_color_optical_frame' in echo   # the laptop's camera frames
        assert ros2.interrupt(launch) == 0
    finally:
        ros2.close()
