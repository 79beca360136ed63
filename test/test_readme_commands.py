"""Every shell command in README.md and config/README.md is exercised somewhere.

The ROS commands are run verbatim from the README by test_launch.py (which reads them from the
code blocks); the others are listed here with the test or CI step that runs them (scaled down
where the real run takes an hour or a GPU). A README command that matches no entry fails this test,
and so does an entry whose test no longer exists, or one the READMEs no longer contain.
"""
import pathlib
import re
import subprocess

import pytest

from launch_helpers import readme_commands

ROOT = pathlib.Path(__file__).resolve().parents[1]
READMES = [ROOT / 'README.md', ROOT / 'config' / 'README.md']

# regex matched at the start of a command -> where it is exercised ("file.py::test" or a CI step)
COVERED = {
    r'make demo$': 'test_demo.py::test_demo_quick (the demo module, shortened)',
    r'make test$': '.ci/run (make test)',
    r'ros2 (launch|topic|lifecycle|param|service|run) ': 'test_launch.py::test_readme_ros_commands_with_the_default_model',
    r'ros2 launch evf_sam_ros segment\.launch\.py model_path:=\S+$': 'test_launch.py::test_namespace_rviz_config_log_level_and_large_images',
    r'ros2 launch evf_sam_ros segment\.launch\.py .*rviz:=true': 'test_launch.py::test_namespace_rviz_config_log_level_and_large_images',
    r'ros2 launch evf_sam_ros segment\.launch\.py large_images:=true': 'test_launch.py::test_namespace_rviz_config_log_level_and_large_images',
    r'export FASTDDS_DEFAULT_PROFILES_FILE=\$\(ros2 pkg prefix evf_sam_ros\)': 'test_readme_commands.py::test_profile_export_resolves',
    # the install path of a ROS user: what can run without Ubuntu + apt ROS
    r'sudo apt install python3-venv python3-pip$': 'scripts/setup.sh checks python3-venv (test_package.py)',
    r'mkdir -p ~/ws/src && cd ~/ws/src && git clone': 'scripts/colcon_test.sh (a scratch workspace with the source in src/)',
    r'cd ~/ws && rosdep install --from-paths src': 'test_readme_commands.py::test_package_xml_keys_are_rosdep_keys',
    r'python3 -m venv --system-site-packages': '.ci/run old-stack leg (same venv kind)',
    r'pip install -r src/evf_sam_ros/requirements/ros-distro\.txt': '.ci/run old-stack leg (oldest versions of these ranges)',
    r'colcon build && source install/setup\.bash': 'make colcon-test (.ci/run)',
    r'hf download ': 'test_readme_commands.py::test_hf_download_command_exists',
    r'pip install -r requirements/core\.txt && pip install \.': 'scripts/setup.sh (make test), test_package.py',
    r'evf-sam segment ': 'test_cli.py::test_segment_writes_masks_overlay_and_summary',
    r'python -m evf_sam_ros\.training\.train --config ': 'test_training.py::test_train_resume_export_and_evaluate',
    r'python -m evf_sam_ros\.training\.train --init ': 'test_training.py::test_finetune_from_checkpoint_with_frozen_encoder_on_user_data',
    r'python -m evf_sam_ros\.training\.ship ': 'test_training.py::test_ship_two_stage_recipe_writes_card',
    r'python -m evf_sam_ros\.training\.evaluate ': 'test_training.py::test_train_resume_export_and_evaluate',
    r'python -m evf_sam_ros\.training\.tune_threshold ': 'test_training.py::test_tune_threshold_runs_on_validation_scenes',
    r'install/evf_sam_ros/lib/evf_sam_ros/segment_node ': 'test_package.py, test_node_subprocess.py',
    r'make voice-demo$': 'test_node_spoken.py::test_spoken_commands_end_in_the_right_target (the same chain: '
                         'espeak-ng, pocketsphinx, the node, the scene ground truth)',
    r'evf-sam export ': 'test_model_backends.py::test_embedded_model_export_via_cli (the embedded model; a '
                        'checkpoint id or --dtype only changes what is exported)',
    # needs a GPU with TensorRT: bench/gpu_check.sh runs it on a lent GPU; here the graphs are checked
    # against TensorRT's conventions instead
    r'trtexec --onnx=': 'test_model_backends.py::test_graphs_follow_tensorrt_conventions',
}


def _all_commands():
    return [c for readme in READMES for c in readme_commands(readme)]


def test_every_readme_command_is_exercised():
    missing = [c for c in _all_commands() if not any(re.match(p, c) for p in COVERED)]
    assert not missing, f'README commands no test exercises (add one and list it here): {missing}'


def test_every_entry_still_matches_a_readme_command_and_names_an_existing_test():
    commands = _all_commands()
    for pattern, where in COVERED.items():
        assert any(re.match(pattern, c) for c in commands), f'no README command matches {pattern!r}'
        m = re.match(r'(test_\w+\.py)::(\w+)', where)
        if m:
            source = (ROOT / 'test' / m.group(1)).read_text()
            assert f'def {m.group(2)}(' in source, where


@pytest.mark.ros2cli
def test_profile_export_resolves():
    cmd = [c for c in _all_commands() if c.startswith('export FASTDDS_DEFAULT_PROFILES_FILE=')][0]
    out = subprocess.run(['bash', '-c', f'{cmd} && cat "$FASTDDS_DEFAULT_PROFILES_FILE"'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '<segment_size>67108864</segment_size>' in out.stdout


def test_hf_download_command_exists():
    """`hf download` (huggingface-hub's CLI; `huggingface-cli download` is gone) is installed."""
    out = subprocess.run(['hf', 'download', '--help'], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'repo_id' in out.stdout.lower().replace('-', '_')


# rosdep keys of the package.xml dependencies that are not ROS packages (ROS packages resolve to
# ros-<distro>-<name>); all exist for humble, jazzy and kilted (rosdistro's base.yaml/python.yaml)
ROSDEP_SYSTEM_KEYS = {'python3-numpy', 'python3-opencv', 'python3-pil', 'python3-pytest'}
ROS_PACKAGES = {'ament_cmake', 'ament_cmake_python', 'rosidl_default_generators', 'std_msgs',
                'sensor_msgs', 'geometry_msgs', 'rosidl_default_runtime', 'rclpy', 'std_srvs',
                'lifecycle_msgs', 'visualization_msgs', 'diagnostic_msgs', 'ament_index_python',
                'rcl_interfaces', 'vision_msgs', 'launch', 'launch_ros', 'ros2launch',
                'ament_cmake_pytest', 'rosidl_runtime_py'}


def test_package_xml_keys_are_rosdep_keys():
    xml = (ROOT / 'package.xml').read_text()
    keys = set(re.findall(r'<(?:\w+_)?depend>([^<]+)</', xml))
    assert keys <= ROSDEP_SYSTEM_KEYS | ROS_PACKAGES, keys - ROSDEP_SYSTEM_KEYS - ROS_PACKAGES
    assert 'rviz2' not in keys                       # optional, documented
    for needed in ('rcl_interfaces', 'vision_msgs', 'ros2launch', 'rosidl_runtime_py'):
        assert f'<exec_depend>{needed}</exec_depend>' in xml
