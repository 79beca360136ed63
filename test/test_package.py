"""The package as built: interfaces, installed executables, share files, set-up script."""
import os
import pathlib
import subprocess
import sys

import pytest
from ament_index_python.packages import get_package_prefix, get_package_share_directory

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_interfaces_have_the_public_fields():
    from evf_sam_ros.msg import Segmentation, SegmentationArray
    from evf_sam_ros.srv import Segment

    fields = Segmentation.get_fields_and_field_types()
    for name in ('prompt', 'label', 'detected', 'score', 'bbox', 'centroid', 'area', 'has_position',
                 'position', 'position_covariance', 'depth_valid_ratio', 'object_score'):
        assert name in fields, name
    assert fields['bbox'] == 'sensor_msgs/RegionOfInterest'
    assert fields['position'] == 'geometry_msgs/Point'
    assert set(SegmentationArray.get_fields_and_field_types()) == {'header', 'segmentations', 'command'}
    assert 'image' in Segment.Request.get_fields_and_field_types()
    assert 'label_mask' in Segment.Response.get_fields_and_field_types()


def test_executables_and_share_files_are_installed():
    prefix = pathlib.Path(get_package_prefix('evf_sam_ros'))
    for exe in ('segment_node', 'synthetic_camera'):
        path = prefix / 'lib' / 'evf_sam_ros' / exe
        assert path.exists(), path
        assert os.access(path, os.X_OK), f'{path} is not executable'
    cli = prefix / 'bin' / 'evf-sam'
    assert os.access(cli, os.X_OK), f'{cli} is missing or not executable'
    share = pathlib.Path(get_package_share_directory('evf_sam_ros'))
    assert (share / 'launch' / 'segment.launch.py').is_file()
    assert (share / 'package.xml').is_file()


def test_ros_free_core_imports_without_rclpy():
    code = ('import sys; sys.modules["rclpy"] = None; '
            'import evf_sam_ros.model; print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_pipeline_geometry_and_commands_import_without_torch_or_rclpy():
    """The numpy-only core (gating, geometry, scheduling, command parsing) must not pull in torch."""
    modules = ['geometry', 'pipeline', 'scheduling', 'commands', 'prompts', 'masks', 'stats', 'errors']
    code = ('import sys; sys.modules["rclpy"] = None; sys.modules["torch"] = None; '
            + '; '.join(f'import evf_sam_ros.{m}' for m in modules) + '; print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'


def test_setup_rerun_is_a_quick_no_op():
    out = subprocess.run(['bash', str(REPO_ROOT / 'scripts' / 'setup.sh')], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'requirements up to date' in out.stdout
    assert 'building' not in out.stdout


@pytest.mark.parametrize('bad_python', ['python2.7-does-not-exist'])
def test_setup_explains_a_missing_python(bad_python):
    env = dict(os.environ, PYTHON=bad_python)
    out = subprocess.run(['bash', str(REPO_ROOT / 'scripts' / 'setup.sh')], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode != 0
    assert 'Install Python 3.10-3.12' in out.stderr
    assert 'Traceback' not in out.stderr
