"""Helpers for ROS tests: spinning until a condition holds, and node subprocesses."""
import time

from evf_sam_ros.ros.process import NodeProcess, ros_env  # noqa: F401 - re-exported for the tests


def spin_until(executor, predicate, timeout=10.0, step=0.05):
    """Spin `executor` until `predicate()` is true; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step)
    return predicate()
