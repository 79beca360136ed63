"""Helpers for ROS tests: spinning until a condition holds, and node subprocesses."""
import os
import signal
import subprocess
import sys
import time


def spin_until(executor, predicate, timeout=10.0, step=0.05):
    """Spin `executor` until `predicate()` is true; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step)
    return predicate()


def ros_env(domain_id, **extra):
    """Environment for a ROS subprocess: own domain id, loopback-only discovery."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
               PYTHONUNBUFFERED='1')
    env.update({k: str(v) for k, v in extra.items()})
    return env


class NodeProcess:
    """A node run as a subprocess; stopped with SIGINT, wait, SIGINT again, then kill.

    (A first SIGINT is occasionally lost while rcl_wait blocks under load.)
    """

    def __init__(self, args, domain_id, log_path=None, **env):
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, 'w') if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=ros_env(domain_id, **env), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @classmethod
    def python_module(cls, module, ros_args, domain_id, log_path=None, **env):
        return cls([sys.executable, '-m', module, '--ros-args', *ros_args], domain_id, log_path, **env)

    def alive(self):
        return self.proc.poll() is None

    def output(self):
        if not self.log_path:
            return ''
        with open(self.log_path) as f:
            return f.read()

    def stop(self, timeout=10.0):
        """Returns the exit code (after kill if it had to)."""
        for _ in range(2):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout / 2)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
