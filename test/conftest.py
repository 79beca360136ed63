"""Shared test infrastructure.

* Skips count as failures when EVF_SAM_FAIL_ON_SKIP=1 (set by scripts/run_tests.sh, hence by
  `make test` and CI): on this machine kind every test, ROS tests included, must run.
* `ros_domain_id` / `ros_context`: one rclpy context and one ROS domain id per test.
* `conformance_dir`: ../shared/fixtures/evf_conformance (or $EVF_SAM_CONFORMANCE_DIR).
* `tiny_checkpoint_sam1` / `tiny_checkpoint_sam2`: random-init tiny checkpoints in the official layout.
* Outside CI, tests that need what only ../shared provides here (the conformance fixtures; the
  `ros2` CLI, launch, vision_msgs and rosidl_runtime_py, from ../shared/ros2-tools or a ROS install)
  are deselected with a one-line notice, so that `make test` passes on a fresh clone. CI (CI=true) has
  ../shared and runs them all.
"""
import importlib.util
import itertools
import os
import pathlib
import shutil

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _skipped and os.environ.get('EVF_SAM_FAIL_ON_SKIP') == '1':
        print(f'\nERROR: {len(_skipped)} test(s) were skipped; on this machine every test must run '
              '(unset EVF_SAM_FAIL_ON_SKIP to allow skips):')
        for nodeid in _skipped:
            print(f'  skipped: {nodeid}')
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---- what a fresh clone without ../shared cannot run -----------------------------------------
_FIXTURE_ARGS = {'conformance_dir', 'fullsize_dir'}
_deselect_notice = []


def _shared_base():
    env = os.environ.get('EVF_SAM_SHARED_DIR')
    return pathlib.Path(env) if env else REPO_ROOT.parent / 'shared'


def pytest_collection_modifyitems(config, items):
    if os.environ.get('CI', '').lower() in ('true', '1'):
        return   # CI has ../shared: everything runs, and a skip fails the run
    no_fixtures = not (_shared_base() / 'fixtures').is_dir()
    no_cli = shutil.which('ros2') is None
    no_tools = any(importlib.util.find_spec(m) is None for m in ('vision_msgs', 'rosidl_runtime_py'))
    no_netns = os.geteuid() != 0 or shutil.which('ip') is None
    no_voice = shutil.which('espeak-ng') is None
    drop = [item for item in items
            if (no_fixtures and _FIXTURE_ARGS & set(getattr(item, 'fixturenames', ())))
            or (no_cli and item.get_closest_marker('ros2cli'))
            or (no_tools and item.get_closest_marker('ros_tools'))
            or (no_netns and item.get_closest_marker('netns'))
            or (no_voice and item.get_closest_marker('voice'))]
    if not drop:
        return
    config.hook.pytest_deselected(items=drop)
    kept = set(map(id, items)) - set(map(id, drop))
    items[:] = [item for item in items if id(item) in kept]
    what = ' and '.join(w for w, missing in (('the shared fixtures', no_fixtures),
                                             ('the ros2 CLI/launch', no_cli),
                                             ('vision_msgs/rosidl_runtime_py', no_tools and not no_cli),
                                             ('root for ip netns', no_netns),
                                             ('espeak-ng (apt-get install espeak-ng)', no_voice)) if missing)
    _deselect_notice.append(
        f'NOTE: {len(drop)} test(s) deselected: they need {what}; run them with ../shared beside '
        'the checkout (then `make setup` installs ../shared/ros2-tools) or EVF_SAM_SHARED_DIR=DIR, '
        'or on a ROS 2 install (CI runs them all).')


def pytest_report_collectionfinish(config, start_path, items):
    return _deselect_notice[:1]


def pytest_terminal_summary(terminalreporter):
    for line in _deselect_notice[:1]:
        terminalreporter.write_line(line, yellow=True)


# ---- ROS isolation ------------------------------------------------------------------------
# Domain ids 1..200 spread by process so that two suites on one machine rarely collide.
_domain_ids = itertools.count()


@pytest.fixture
def ros_domain_id():
    return 1 + (os.getpid() * 37 + next(_domain_ids)) % 200


@pytest.fixture
def ros_context(ros_domain_id):
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    if context.ok():
        rclpy.shutdown(context=context)


# ---- CPU threads ---------------------------------------------------------------------------
@pytest.fixture(scope='module')
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests: they gain nothing from more, and on a
    shared 2-core machine OpenMP spin-waiting makes them many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- shared fixtures from ../shared ------------------------------------------------------
def _shared_fixture(name):
    path = _shared_base() / 'fixtures' / name
    if not path.is_dir():
        pytest.skip(f'{path} is missing: these tests need the shared fixtures beside the checkout '
                    '(../shared, as CI provides) or EVF_SAM_SHARED_DIR pointing at a copy')
    return path


@pytest.fixture(scope='session')
def conformance_dir():
    return _shared_fixture('evf_conformance')


@pytest.fixture(scope='session')
def fullsize_dir():
    return _shared_fixture('evf_fullsize')


# ---- tiny checkpoints (official file layout, random weights) ------------------------------
@pytest.fixture(scope='session')
def tiny_checkpoint_sam1(tmp_path_factory):
    from evf_sam_ros.model.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('tiny_sam1'), sam='sam1', seed=0)


@pytest.fixture(scope='session')
def tiny_checkpoint_sam2(tmp_path_factory):
    from evf_sam_ros.model.testing import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('tiny_sam2'), sam='sam2', seed=0, multitask=True)
