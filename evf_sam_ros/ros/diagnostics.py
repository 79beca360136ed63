"""The node's counters and timing statistics, and the ``/diagnostics`` status built from them."""
from __future__ import annotations

import collections
import math
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from evf_sam_ros.stats import FrameLossMeter, RateMeter, RollingStats

__all__ = ['COUNTERS', 'NodeStats', 'diagnostic_array']

COUNTERS = ('received', 'processed', 'dropped', 'stale', 'bad_frames', 'inference_errors',
            'prompts_rejected', 'commands_superseded', 'no_position', 'worker_restarts')
TIMINGS = ('model_ms', 'latency_ms', 'overhead_ms', 'wait_ms', 'age_ms')


class NodeStats:
    """Thread-safe counters, rolling timings, input/output rates and the camera's frame loss."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.timings = {k: RollingStats(200) for k in TIMINGS}
        self.in_rate = RateMeter(5.0)
        self.out_rate = RateMeter(5.0)
        self.image_loss = FrameLossMeter()
        self.depth_loss = FrameLossMeter()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def values(self) -> dict:
        with self._lock:
            counts = dict(self.counts)
        vals = {'input_rate_hz': self.in_rate.rate(), 'output_rate_hz': self.out_rate.rate()}
        loss, cam_hz = self.image_loss.estimate()
        vals['camera_rate_hz'] = cam_hz
        vals['image_loss'] = loss
        vals['depth_loss'] = self.depth_loss.estimate()[0]
        for key in TIMINGS:
            st = self.timings[key]
            vals[f'{key}_p50'] = st.percentile(50)
            vals[f'{key}_p95'] = st.percentile(95)
        for key in COUNTERS:
            vals[key] = counts.get(key, 0)
        return vals


def _level(v: dict, worker_dead: bool, loss_warn: float) -> tuple[int, str]:
    if v.get('load_error'):
        return DiagnosticStatus.ERROR, f"model not loaded: {v['load_error']}"
    if worker_dead:
        return DiagnosticStatus.ERROR, 'the inference worker died and is being restarted (see the log)'
    if v['state'] != 'active':
        return DiagnosticStatus.WARN, f"node is {v['state']}"
    failing = v.get('failures_since_output', 0)
    if failing >= 3:   # frames arrive and every one fails: the stream is dead even though the node is up
        last = v.get('last_image_problem') or v.get('last_inference_problem') or 'see the log'
        return DiagnosticStatus.ERROR, f'the last {failing} frames all failed, no result since: {last}'
    if not v['enabled']:
        return DiagnosticStatus.WARN, 'paused (enable false)'
    last_in = v.get('seconds_since_image')
    if last_in is None or last_in > 2.0:
        return DiagnosticStatus.WARN, 'no images received for 2 s'
    loss = v['image_loss']
    if math.isfinite(loss) and loss > loss_warn:
        return DiagnosticStatus.WARN, (f"receiving {100 * (1 - loss):.0f} % of the camera's frames "
                                       '(see config/README.md, large images)')
    return DiagnosticStatus.OK, f"segmenting {v['active_prompts']} prompt(s)"


def diagnostic_array(name: str, hardware_id: str, values: dict, stamp, *, worker_dead: bool,
                     loss_warn: float) -> DiagnosticArray:
    level, message = _level(values, worker_dead, loss_warn)
    st = DiagnosticStatus(name=name, hardware_id=hardware_id or 'none', message=message)
    st.level = bytes([level]) if isinstance(level, int) else level
    st.values = [KeyValue(key=k, value=(f'{val:.3f}' if isinstance(val, float) else str(val)))
                 for k, val in values.items()]
    arr = DiagnosticArray(status=[st])
    arr.header.stamp = stamp
    return arr


def seconds_since(t: float | None) -> float | None:
    return None if t is None else time.monotonic() - t
