"""ROS-free rolling statistics for diagnostics: percentiles, event rates and input frame loss."""
from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np

__all__ = ['FrameLossMeter', 'RateMeter', 'RollingStats']


class RollingStats:
    """Thread-safe rolling window of samples with percentiles."""

    def __init__(self, maxlen: int = 200):
        self._d = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._d.append(float(value))

    def __len__(self):
        return len(self._d)

    def percentile(self, q: float) -> float:
        with self._lock:
            if not self._d:
                return math.nan
            return float(np.percentile(np.fromiter(self._d, float), q))

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


class RateMeter:
    """Event rate [Hz] over a sliding time window (monotonic clock)."""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._t = collections.deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, t: float | None = None) -> None:
        t = self._clock() if t is None else t
        with self._lock:
            self._t.append(t)
            self.total += 1
            self._trim(t)

    def _trim(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        with self._lock:
            self._trim(now)
            n = len(self._t)
            if n < 2:
                return 0.0
            span = max(now - self._t[0], self._t[-1] - self._t[0])
            return (n - 1) / span if span > 0 else 0.0

    def last(self) -> float | None:
        with self._lock:
            return self._t[-1] if self._t else None


class FrameLossMeter:
    """Share of a stream's frames that never arrived, estimated from the stamps that did.

    The camera's period is the 10th percentile of the gaps between consecutive received stamps
    (some consecutive frames arrive even at high loss); frames expected over the window are
    ``span / period + 1``. Robust to a camera that changes rate slowly; needs >= 10 stamps.
    """

    def __init__(self, size: int = 120) -> None:
        self._stamps: collections.deque = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int) -> None:
        if stamp_ns <= 0:
            return
        with self._lock:
            if self._stamps and stamp_ns <= self._stamps[-1]:
                if stamp_ns < self._stamps[-1] - 10**9:   # clock jumped back (bag loop, sim reset)
                    self._stamps.clear()
                else:
                    return
            self._stamps.append(int(stamp_ns))

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()

    def estimate(self) -> tuple[float, float]:
        """(loss fraction in [0, 1], camera rate [Hz]); (nan, nan) with too few stamps."""
        with self._lock:
            st = np.fromiter(self._stamps, np.int64)
        if st.size < 10:
            return math.nan, math.nan
        gaps = np.diff(st).astype(np.float64)
        period = float(np.percentile(gaps, 10))
        if period <= 0:
            return math.nan, math.nan
        expected = (st[-1] - st[0]) / period + 1.0
        return max(0.0, 1.0 - st.size / expected), 1e9 / period
