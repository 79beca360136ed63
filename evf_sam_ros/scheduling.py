"""ROS-free scheduling for a live camera: which frame to segment next, and which depth image goes
with it.

* ``FrameScheduler``: a single latest-frame slot (a new frame replaces an untaken one, never a
  queue), the active prompt set, continuous or once mode, a maximum rate and a maximum frame age.
  The node's image callback calls ``put``; its worker thread calls ``wait_job``.
* ``DepthBuffer``: the last few depth images by stamp; ``closest`` picks the one that goes with a
  colour frame, or says why none does.

Times are ``time.monotonic()`` seconds; stamps are integer nanoseconds.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

__all__ = ['DepthBuffer', 'FrameScheduler', 'Job']


@dataclass
class Job:
    """A frame to segment now with the prompts active when it was taken."""

    frame: object          # whatever the caller put (e.g. the image message)
    prompts: list[str]
    received: float        # monotonic time of reception
    taken: float           # monotonic time the worker took it
    seq: int = 0
    command: object = None  # what the active prompts came from (opaque to the scheduler)


@dataclass
class _Slot:
    frame: object
    received: float
    seq: int
    taken: bool = False


@dataclass
class SchedulerCounts:
    received: int = 0
    dropped: int = 0       # replaced before the worker could take it
    stale: int = 0         # older than max_age when it would have been taken
    superseded: int = 0    # once mode: a command replaced before its frame was segmented


class FrameScheduler:
    def __init__(self, *, mode: str = 'continuous', max_rate_hz: float = 0.0,
                 max_age_s: float = 0.0) -> None:
        self._cv = threading.Condition()
        self._slot: _Slot | None = None
        self._seq = 0
        self._done_seq = 0
        self._prompts: list[str] = []
        self._command = None
        self._once_pending = False
        self._last_start = -float('inf')
        self.active = False
        self.enabled = True
        self.mode = mode
        self.max_rate_hz = max_rate_hz
        self.max_age_s = max_age_s
        self.counts = SchedulerCounts()
        self.stale_age = 0.0   # age of the last frame dropped as stale

    # ---- inputs ------------------------------------------------------------------------------
    def put(self, frame, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._cv:
            self.counts.received += 1
            old = self._slot
            if old is not None and not old.taken and self._wants_frames():
                self.counts.dropped += 1
            self._seq += 1
            self._slot = _Slot(frame, now, self._seq)
            self._cv.notify_all()

    def set_prompts(self, prompts: list[str], command=None) -> bool:
        """Replace the active prompts; returns whether they changed."""
        with self._cv:
            if self._once_pending:
                self.counts.superseded += 1
            changed = list(prompts) != self._prompts
            self._prompts = list(prompts)
            if changed or self.mode == 'once':   # a repeat of the same targets keeps what is in flight
                self._command = command
            self._once_pending = bool(prompts) and self.mode == 'once'
            self._cv.notify_all()
            return changed

    @property
    def prompts(self) -> list[str]:
        with self._cv:
            return list(self._prompts)

    @property
    def command(self):
        with self._cv:
            return self._command

    def latest(self):
        """(frame, received) of the newest frame, or None."""
        with self._cv:
            return None if self._slot is None else (self._slot.frame, self._slot.received)

    def configure(self, **settings) -> None:
        """Change mode / max_rate_hz / max_age_s / active / enabled and wake the worker."""
        with self._cv:
            if settings.get('mode', self.mode) != self.mode:
                self._once_pending = False
            for name, value in settings.items():
                if name not in ('mode', 'max_rate_hz', 'max_age_s', 'active', 'enabled'):
                    raise TypeError(f'unknown scheduler setting {name!r}')
                setattr(self, name, value)
            if settings.get('active'):
                self._done_seq = self._seq   # frames received before activation are old
                self._once_pending = bool(self._prompts) and self.mode == 'once'
            self._cv.notify_all()

    def reset(self) -> None:
        with self._cv:
            self._slot = None
            self._prompts = []
            self._command = None
            self._once_pending = False
            self._cv.notify_all()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    # ---- the worker side ---------------------------------------------------------------------
    def _wants_frames(self) -> bool:
        return self.active and self.enabled and bool(self._prompts) and self.mode == 'continuous'

    def _next(self, now: float) -> tuple[Job | None, float | None, str]:
        """(job, seconds to wait, note); under the lock."""
        slot = self._slot
        if not (self.active and self.enabled and self._prompts and slot is not None):
            return None, None, ''
        once = self.mode == 'once'
        if once and not self._once_pending:
            return None, None, ''
        if not once and slot.seq <= self._done_seq:
            return None, None, ''
        age = now - slot.received
        if self.max_age_s > 0 and age > self.max_age_s:
            note = ''
            if slot.seq > self._done_seq:
                self._done_seq = slot.seq
                slot.taken = True
                self.counts.stale += 1
                self.stale_age = age
                note = 'stale'
            return None, None, note
        if not once and self.max_rate_hz > 0:
            wait = self._last_start + 1.0 / self.max_rate_hz - now
            if wait > 0:
                return None, wait, ''
        self._done_seq = slot.seq
        slot.taken = True
        self._once_pending = False
        self._last_start = now
        return Job(slot.frame, list(self._prompts), slot.received, now, slot.seq, self._command), None, ''

    def wait_job(self, timeout: float = 0.5) -> tuple[Job | None, str]:
        """The next job, or (None, note) after at most ``timeout`` s; note 'stale' when a frame was
        dropped for being older than max_age_s."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                now = time.monotonic()
                job, wait, note = self._next(now)
                if job is not None or note or now >= deadline:
                    return job, note
                self._cv.wait(min(wait, deadline - now) if wait else deadline - now)


class DepthBuffer:
    """The last ``size`` depth images by stamp (ns)."""

    def __init__(self, size: int = 8) -> None:
        self._items: collections.deque = collections.deque(maxlen=size)
        self._cv = threading.Condition()

    def add(self, stamp_ns: int, item) -> None:
        with self._cv:
            self._items.append((int(stamp_ns), item))
            self._cv.notify_all()

    def clear(self) -> None:
        with self._cv:
            self._items.clear()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    def closest(self, stamp_ns: int, tolerance_s: float, wait_s: float = 0.05
                ) -> tuple[object | None, str]:
        """The depth image for a colour frame stamped ``stamp_ns``: the closest within
        ``tolerance_s`` (0 = the newest, whatever its stamp), else (None, why). Waits up to
        ``wait_s`` for one still in flight (no depth at or after the frame's stamp yet)."""
        deadline = time.monotonic() + wait_s
        with self._cv:
            while True:
                items = list(self._items)
                late = bool(items) and stamp_ns > 0 and items[-1][0] < stamp_ns   # none at all: no wait
                remaining = deadline - time.monotonic()
                if not late or remaining <= 0:
                    break
                self._cv.wait(remaining)
        if not items:
            return None, 'no depth image received'
        if tolerance_s <= 0 or stamp_ns <= 0:
            return items[-1][1], ''
        stamp, item = min(items, key=lambda it: abs(it[0] - stamp_ns))
        gap = (stamp - stamp_ns) / 1e9
        if abs(gap) > tolerance_s:
            side = 'after' if gap > 0 else 'before'
            return None, (f'the closest depth image is stamped {abs(gap):.3f} s {side} the colour image '
                          f'(depth_sync_tolerance {tolerance_s} s); check that depth and colour come from '
                          'the same camera and clock')
        return item, ''
