"""A ROS node run as a subprocess (demo, benchmarks, tests): own ROS domain, loopback-only discovery,
stopped with SIGINT, wait, SIGINT again, then kill (a first SIGINT is occasionally lost while
rcl_wait blocks under load)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

__all__ = ['NodeProcess', 'ros_env']


def ros_env(domain_id: int, **extra) -> dict:
    """Environment for a ROS subprocess: own domain id, discovery kept on this machine."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    env.update({k: str(v) for k, v in extra.items()})
    return env


class NodeProcess:
    """``NodeProcess(args, domain_id, log_path=None, **env)``; output goes to ``log_path`` (or nowhere)."""

    def __init__(self, args, domain_id: int, log_path=None, **env) -> None:
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, 'w') if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, env=ros_env(domain_id, **env), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @classmethod
    def python_module(cls, module: str, ros_args, domain_id: int, log_path=None, **env) -> NodeProcess:
        return cls([sys.executable, '-m', module, '--ros-args', *ros_args], domain_id, log_path, **env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self.log_path:
            return ''
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ''

    def stop(self, timeout: float = 10.0) -> int:
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
        if self._log is not subprocess.DEVNULL and not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
