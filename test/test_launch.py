"""launch/segment.launch.py with the real `ros2 launch` and `ros2` CLI, as a user runs them.

Each test gets its own ROS domain (loopback discovery) and a token in the environment of every
process it starts; after the launch is interrupted, no process carrying the token may remain.
The README's ROS commands are taken from its code blocks and run as written (the released
checkpoint is replaced by a tiny one where the README names it).
"""
import pathlib
import re
import subprocess

import pytest
import yaml

from launch_helpers import Ros2Session, readme_commands

pytestmark = [pytest.mark.ros, pytest.mark.ros2cli, pytest.mark.slow]
ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
STARTED = r'active: mode='          # the node's log line once it is active


@pytest.fixture
def ros2(ros_domain_id, tmp_path):
    session = Ros2Session(ros_domain_id, tmp_path)
    yield session
    session.close()


def _readme(prefix):
    found = [c for c in readme_commands(README) if c.startswith(prefix)]
    assert found, f'README.md has no command starting with {prefix!r}'
    return found


def _topics(text):
    """`ros2 topic list -t` -> {topic: type}."""
    return dict(re.findall(r'^(\S+) \[(\S+)\]$', text, flags=re.M))


def _rviz_topics(text):
    return set(re.findall(r'^\s+Value: (/\S+)$', text, flags=re.M))


def test_readme_ros_commands_with_the_default_model(ros2):
    """The README's run commands, verbatim: synthetic camera, launch with the embedded model,
    prompt, echo, lifecycle, param, service; then Ctrl-C leaves nothing behind."""
    camera = ros2.start(_readme('ros2 run evf_sam_ros synthetic_camera')[0], 'camera')
    launch_cmd = [c for c in _readme('ros2 launch evf_sam_ros segment.launch.py')
                  if 'model_path' not in c][0]
    launch = ros2.start(launch_cmd, 'launch')
    ros2.wait_output(launch, STARTED, timeout=120)
    # the CLI discovers the graph anew each time: retry as a user would until it sees the node
    state = ros2.until(_readme('ros2 lifecycle get /evf_sam/evf_sam')[0],
                       lambda t: t.startswith(('active', 'inactive')))
    assert state.startswith('active'), state
    topics = _topics(ros2.until('ros2 topic list -t', lambda t: '/evf_sam/segmentations' in t))
    assert topics['/evf_sam/prompt'] == 'std_msgs/msg/String'
    assert topics['/evf_sam/mask'] == 'sensor_msgs/msg/Image'
    assert topics['/camera/camera/color/image_raw'] == 'sensor_msgs/msg/Image'
    for attempt in range(3):   # a prompt published before the CLI matched the node is lost: publish again
        out = ros2.run(_readme('ros2 topic pub --once /evf_sam/prompt')[0])
        assert 'publishing #1' in out
        try:
            echo = ros2.run(_readme('ros2 topic echo --once /evf_sam/segmentations')[0], timeout=30)
            break
        except subprocess.TimeoutExpired:
            assert attempt < 2, 'no segmentations after three prompts:\n' + ros2.output(launch)[-3000:]
    assert "prompt: the red mug on the left" in echo and 'prompt: the bottle' in echo, echo
    assert 'frame_id: camera_color_optical_frame' in echo
    assert 'Set parameter successful' in ros2.run(_readme('ros2 param set /evf_sam/evf_sam')[0])
    assert ros2.until('ros2 param get /evf_sam/evf_sam score_threshold',
                      lambda t: 'not found' not in t.lower()).strip().endswith('0.3')
    out = ros2.run(_readme('ros2 service call /evf_sam/enable')[0])
    assert 'success=True' in out, out
    assert 'Transitioning successful' in ros2.run('ros2 lifecycle set /evf_sam/evf_sam deactivate')
    assert ros2.until('ros2 lifecycle get /evf_sam/evf_sam', lambda t: 'not found' not in t).startswith('inactive')
    assert ros2.interrupt(launch) == 0, ros2.output(launch)[-3000:]
    ros2.interrupt(camera)
    log = ros2.output(launch)
    assert 'Traceback' not in log, log[-3000:]
    ros2.assert_nothing_left()


def _fake_rviz2(tmp_path):
    """An ament prefix with a package 'rviz2' whose executable copies its -d config and waits."""
    prefix = tmp_path / 'fake_rviz2'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'rviz2').write_text('')
    (prefix / 'share' / 'rviz2').mkdir()
    exe = prefix / 'lib' / 'rviz2' / 'rviz2'
    exe.parent.mkdir(parents=True)
    exe.write_text('#!/bin/sh\n# stand-in for RViz: keep the config it was given, then wait\n'
                   'while [ $# -gt 0 ]; do [ "$1" = -d ] && cp "$2" "$RVIZ_CAPTURE"; shift; done\n'
                   'exec sleep 600\n')
    exe.chmod(0o755)
    return prefix


def test_namespace_rviz_config_log_level_and_large_images(ros2, tiny_checkpoint_sam1, tmp_path):
    """namespace:=cam1: the RViz config RViz is given names the node's topics; log_level only
    for the node's logger; large_images:=true sets the profile for the node process only."""
    fake = _fake_rviz2(tmp_path)
    ros2.env['AMENT_PREFIX_PATH'] = f"{ros2.env['AMENT_PREFIX_PATH']}:{fake}"
    capture = tmp_path / 'rviz_given.rviz'
    cmd = _readme('ros2 launch evf_sam_ros segment.launch.py model_path:=')[0]
    cmd = re.sub(r'model_path:=\S+', f'model_path:={tiny_checkpoint_sam1}', cmd)
    launch = ros2.start(cmd + ' device:=cpu namespace:=cam1 rviz:=true log_level:=debug '
                        'large_images:=true', 'launch', RVIZ_CAPTURE=capture)
    ros2.wait_output(launch, STARTED, timeout=120)
    topics = _topics(ros2.until('ros2 topic list -t', lambda t: '/cam1/markers' in t
                                and '/cam1/overlay' in t))
    rviz = _rviz_topics(capture.read_text())
    assert rviz == {'/cam1/overlay', '/cam1/markers'}, rviz
    assert rviz <= set(topics), (rviz, topics)
    assert topics['/cam1/overlay'] == 'sensor_msgs/msg/Image'
    assert topics['/cam1/markers'] == 'visualization_msgs/msg/MarkerArray'
    for _ in range(2):   # a repeated prompt is logged at DEBUG by the node
        ros2.run('ros2 topic pub --once /cam1/prompt std_msgs/msg/String "data: a"')
    log = ros2.wait_output(launch, r'\[DEBUG\] \[[0-9.]+\] \[cam1\.evf_sam\]', timeout=30)
    assert not re.search(r'\[DEBUG\] \[[0-9.]+\] \[(rcl|rmw)', log), 'rcl/rmw DEBUG output'
    # the profile is in the node's environment only, not in the launch process (nor RViz's)
    pids = dict(re.findall(r'\[INFO\] \[(\w+)-\d+\]: process started with pid \[(\d+)\]', log))
    envs = {name: _environ(int(pid)) for name, pid in pids.items()}
    assert envs['segment_node'].get('FASTDDS_DEFAULT_PROFILES_FILE', '').endswith(
        'config/fastdds_large_images.xml')
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in envs['rviz2']
    assert 'FASTDDS_DEFAULT_PROFILES_FILE' not in _environ(launch.pid)
    assert ros2.interrupt(launch) == 0, ros2.output(launch)[-3000:]
    ros2.assert_nothing_left()


def _environ(pid):
    with open(f'/proc/{pid}/environ', 'rb') as f:
        items = [e.decode(errors='replace').split('=', 1) for e in f.read().split(b'\0') if b'=' in e]
    return dict(items)


def test_root_namespace_params_file_values_and_users_profile(ros2, tiny_checkpoint_sam1, tmp_path):
    """namespace:=/ (root); empty autostart/use_sim_time keep the params file's values; a user's
    FASTDDS_DEFAULT_PROFILES_FILE is kept under large_images:=true."""
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'/**': {'ros__parameters': {
        'autostart': False, 'use_sim_time': True, 'model_path': str(tiny_checkpoint_sam1),
        'device': 'cpu'}}}))
    mine = tmp_path / 'my_profile.xml'
    mine.write_text((ROOT / 'config' / 'fastdds_large_images.xml').read_text())
    launch = ros2.start(f'ros2 launch evf_sam_ros segment.launch.py namespace:=/ params_file:={params} '
                        'large_images:=true', 'launch', FASTDDS_DEFAULT_PROFILES_FILE=mine)
    ros2.wait_output(launch, r'keeping your FASTDDS_DEFAULT_PROFILES_FILE')
    state = ros2.until('ros2 lifecycle get /evf_sam', lambda t: '[' in t and 'not found' not in t)
    assert state.startswith('unconfigured'), state
    assert 'True' in ros2.until('ros2 param get /evf_sam use_sim_time', lambda t: 'not found' not in t.lower())
    assert 'Transitioning successful' in ros2.run('ros2 lifecycle set /evf_sam configure',
                                                  timeout=120)
    assert 'Transitioning successful' in ros2.run('ros2 lifecycle set /evf_sam activate')
    topics = _topics(ros2.until('ros2 topic list -t', lambda t: '/segmentations' in t))
    assert {'/prompt', '/mask', '/segmentations'} <= set(topics)
    pid = int(re.search(r'process started with pid \[(\d+)\]', ros2.output(launch)).group(1))
    assert _environ(pid)['FASTDDS_DEFAULT_PROFILES_FILE'] == str(mine)
    assert ros2.interrupt(launch) == 0
    ros2.assert_nothing_left()


def test_rviz_missing_fails_before_starting_anything(ros2):
    launch = ros2.start('ros2 launch evf_sam_ros segment.launch.py rviz:=true', 'launch')
    launch.wait(timeout=60)
    out = ros2.output(launch)
    assert launch.returncode != 0
    assert "RViz 2 (package 'rviz2') is not installed; nothing was started" in out, out
    assert 'rviz:=false' in out
    assert 'process started' not in out
    ros2.assert_nothing_left()


def test_bad_flag_is_reported(ros2):
    launch = ros2.start('ros2 launch evf_sam_ros segment.launch.py autostart:=maybe', 'launch')
    launch.wait(timeout=60)
    out = ros2.output(launch)
    assert launch.returncode != 0 and "autostart:='maybe': expected true or false" in out, out
    ros2.assert_nothing_left()
