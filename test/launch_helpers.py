"""Driving the real `ros2 launch` and `ros2` CLI from tests, as a user does in a shell.

Every process started here carries ``EVF_SAM_TEST_TOKEN=<uuid>`` in its environment; the ROS 2
daemon and anything `ros2 launch` starts inherit it. `leftovers(token)` finds them in /proc, so a
test can assert that nothing of it survived, whatever process group or session it moved to;
`Ros2Session.close()` stops the daemon and kills what is left (process groups first).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import uuid

ANSI = re.compile(r'\x1b\[[0-9;]*m')


def leftovers(token):
    """PIDs of live processes whose environment holds EVF_SAM_TEST_TOKEN=token."""
    needle = f'EVF_SAM_TEST_TOKEN={token}'.encode()
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = f.read().split(b'\0')
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != 'Z':
            found.append(int(pid))
    return found


def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        return '?'


class Ros2Session:
    """One ROS domain, one token; runs `ros2 ...` commands and launches in it."""

    def __init__(self, domain_id, tmp_path, **env):
        self.token = uuid.uuid4().hex
        self.tmp_path = tmp_path
        self.env = dict(os.environ)
        self.env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST',
                        PYTHONUNBUFFERED='1', EVF_SAM_TEST_TOKEN=self.token)
        self.env.update({k: str(v) for k, v in env.items()})
        self.procs = []

    # ---- one-shot commands ---------------------------------------------------------------
    def run(self, command, timeout=60, check=True):
        """Run a shell command line (a string, as typed) or an argv list; -> stdout+stderr."""
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout,
                             start_new_session=True)
        text = ANSI.sub('', out.stdout + out.stderr)
        if check:
            assert out.returncode == 0, f'{command!r} exited {out.returncode}:\n{text[-3000:]}'
        return text

    def until(self, command, predicate, timeout=60, what=''):
        """Re-run `command` until predicate(output) holds (the graph is discovered bit by bit)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.run(command, timeout=max(5, deadline - time.monotonic()), check=False)
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f'{what or command}: not reached in {timeout}s; last output:\n'
                                     f'{text[-3000:]}')
            time.sleep(0.5)

    # ---- long-running processes ----------------------------------------------------------
    def start(self, command, name, **env):
        """Start a long-running command (e.g. `ros2 launch ...`) in its own session."""
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        log = self.tmp_path / f'{name}.log'
        penv = dict(self.env)
        penv.update({k: str(v) for k, v in env.items()})
        proc = subprocess.Popen(argv, env=penv, stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = log
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc):
        with open(proc.log_path, errors='replace') as f:
            return ANSI.sub('', f.read())

    def wait_output(self, proc, pattern, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output(proc)
            if re.search(pattern, text):
                return text
            assert proc.poll() is None, f'exited {proc.returncode} before {pattern!r}:\n{text[-3000:]}'
            time.sleep(0.3)
        raise AssertionError(f'{pattern!r} not seen in {timeout}s:\n{self.output(proc)[-3000:]}')

    @staticmethod
    def interrupt(proc, timeout=30):
        """Ctrl-C as in a terminal (SIGINT to the process group); -> exit code."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                left = subprocess.run(['ps', '-o', 'pid,stat,args', '-g', str(proc.pid)], capture_output=True,
                                      text=True).stdout
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f'{proc.args} did not stop on SIGINT within {timeout}s; still running:\n'
                                     f'{left}') from None
        return proc.returncode

    def close(self):
        """Stop the daemon of this domain and everything left (never raises)."""
        try:
            self.run(['ros2', 'daemon', 'stop'], timeout=20, check=False)
        except Exception:   # noqa: BLE001 - best effort
            pass
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        for _ in range(20):
            pids = leftovers(self.token)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def assert_nothing_left(self, grace=10.0):
        """After a launch ended: no process of it remains (the daemon is stopped first)."""
        self.run(['ros2', 'daemon', 'stop'], timeout=20, check=False)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = [p for p in leftovers(self.token) if 'ros2-daemon' not in cmdline(p)]
            if not pids:
                return
            time.sleep(0.3)
        raise AssertionError('processes left behind: ' + '; '.join(f'{p}: {cmdline(p)}' for p in pids))


def readme_commands(path):
    """Shell commands of the ```bash blocks of a Markdown file (continuations joined,
    comments and blank lines dropped)."""
    with open(path) as f:
        text = f.read()
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
        joined = re.sub(r'\\\n\s*', ' ', block)
        for line in joined.splitlines():
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            line = re.sub(r'\s+#(?![^"\']*["\']).*$', '', line).strip()
            commands.append(line)
    return commands
