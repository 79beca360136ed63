"""The node's inference worker thread and its one-shot ``segment`` service: message -> numpy ->
``SegmentationPipeline.run`` -> outputs. One bad frame, prompt or model error never stops the
stream; a worker that dies anyway is found by ``check_alive`` (diagnostics timer) and restarted.
"""
from __future__ import annotations

import threading
import time

from sensor_msgs.msg import CompressedImage

from evf_sam_ros.errors import EvfSamOutOfMemoryError, InvalidImageError, InvalidPromptError
from evf_sam_ros.pipeline import DepthFrame
from evf_sam_ros.prompts import validate_prompts
from evf_sam_ros.ros import messages as M
from evf_sam_ros.ros.image_codec import decode_compressed, depth_from_msg, image_to_rgb

__all__ = ['InferenceWorker', 'stamp_ns']


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, EvfSamOutOfMemoryError)) or \
        type(exc).__name__ == 'OutOfMemoryError' or 'out of memory' in str(exc).lower()


class InferenceWorker:
    def __init__(self, node) -> None:
        self.node = node
        self._lock = threading.Lock()                # start / stop / check_alive
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()               # one per thread: a late old thread never resumes
        self._warned_depth_scale = False
        self.failures_since_output = 0               # frames that failed since the last published result

    # ---- thread ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def start(self) -> None:
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(stop,), name='evf_sam_worker', daemon=True)
        thread.start()
        self._thread, self._stop = thread, stop

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            t, self._thread = self._thread, None
            self._stop.set()
        self.node.scheduler.wake()
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def check_alive(self) -> bool:
        """True if the worker should run but had died (it is restarted, loudly)."""
        with self._lock:
            t = self._thread
            if t is None or t.is_alive() or self._stop.is_set():
                return False
            self.node.stats.count('worker_restarts')
            self.node.log.error('the inference worker thread died unexpectedly (see the traceback above); '
                                'restarting it', 'worker', 0.0)
            self._start_locked()
            return True

    def _loop(self, stop: threading.Event) -> None:
        node = self.node
        while not stop.is_set():
            job, note = node.scheduler.wait_job(0.5)
            if note == 'stale':
                node.log.warn(f'latest frame is {node.scheduler.stale_age:.2f} s old (max_image_age '
                              f"{node.params['max_image_age']} s); not segmenting it. Is the camera still "
                              'publishing?', 'stale')
            if job is None or stop.is_set():
                continue
            try:
                self._process(job)
            except Exception as exc:  # noqa: BLE001 - e.g. publishing during shutdown
                if not node.context.ok() or stop.is_set():
                    return
                self._failed()
                node.stats.count('inference_errors')
                node.log.error(f'frame failed: {type(exc).__name__}: {exc}', 'inference')

    def _failed(self) -> None:
        self.failures_since_output += 1

    # ---- one frame ---------------------------------------------------------------------------
    def _decode(self, msg):
        max_px = self.node.params['max_image_pixels']
        if isinstance(msg, CompressedImage):
            return decode_compressed(msg, max_px)
        return image_to_rgb(msg, max_px)

    def _run(self, msg, prompts, *, live_depth: bool, stream: bool = True):
        """(rgb, FrameResult) or None after reporting why; ``live_depth``: use the camera's depth;
        ``stream``: a camera frame (counted and logged as the stream's), else a service request."""
        node = self.node
        pipeline = node.pipeline
        if pipeline is None:
            return None
        # the depth image of this frame, taken now (the buffer moves on during inference); if it is
        # not there yet, it is looked for again after inference
        early = node.depth.closest(stamp_ns(msg.header), node.params['depth_sync_tolerance'],
                                   wait_s=0.0)[0] if live_depth else None
        try:
            rgb = self._decode(msg)
            depth = (lambda: self.depth_for(msg.header, early)) if live_depth else None
            result = pipeline.run(rgb, prompts, depth=depth)
        except InvalidImageError as exc:
            if stream:
                self._failed()
                node.stats.count('bad_frames')
                node.log.warn(f'image rejected: {exc}', 'image')
            raise
        except Exception as exc:  # noqa: BLE001 - one failed frame must not stop the stream
            if not stream or node.pipeline is None:   # a request, or the model was released meanwhile
                raise
            self._failed()
            node.stats.count('inference_errors')
            if _is_oom(exc):
                node.log.error(f'out of memory on this frame, skipped it ({exc}); lower the resolution or '
                               'the number of prompts, or use dtype fp16', 'inference')
            else:
                node.log.error(f'inference failed on this frame, skipped it: {type(exc).__name__}: {exc}',
                               'inference')
            raise
        n_missing = sum(1 for t in result.targets if t.detected and not t.has_position)
        if n_missing and live_depth:
            node.stats.count('no_position', n_missing)
            why = next(t.position_reason for t in result.targets if t.position_reason)
            node.log.warn(f'no 3D position for {n_missing} detected target(s): {why}', 'depth', 10.0)
        if result.depth_warning and not self._warned_depth_scale:
            self._warned_depth_scale = True
            node.log.warn(result.depth_warning, 'depth_scale', 0.0)
        return rgb, result

    def _process(self, job) -> None:
        node = self.node
        try:
            out = self._run(job.frame, job.prompts, live_depth=True)
        except Exception:  # noqa: BLE001 - reported in _run
            return
        if out is None:
            return
        rgb, result = out
        header = job.frame.header
        with node.publish_lock:   # ordered with prompt commands: nothing of an old command after a new one
            outputs = node.outputs
            if outputs is None or not node.scheduler.active:
                return
            if node.scheduler.command is not job.command:
                node.stats.count('results_superseded')   # e.g. "stop" arrived during inference
                return
            outputs.frame(header, rgb, result, job.command, node.params)
        self.failures_since_output = 0
        done = time.monotonic()
        s = node.stats
        s.out_rate.tick(done)
        s.count('processed')
        s.timings['model_ms'].add(1000.0 * result.model_s)
        s.timings['latency_ms'].add(1000.0 * (done - job.received))
        # node overhead: the worker's time that is not model time (conversion, gating, geometry,
        # messages, publishing); the slot wait is reported separately
        s.timings['overhead_ms'].add(1000.0 * (done - job.taken - result.model_s))
        s.timings['wait_ms'].add(1000.0 * (job.taken - job.received))
        st = stamp_ns(header)
        if st > 0:
            s.timings['age_ms'].add((node.get_clock().now().nanoseconds - st) / 1e6)

    def depth_for(self, header, early=None):
        """(DepthFrame | None, Intrinsics | None, why not) for a camera frame; ``early``: its depth
        image if it was already there when the frame was taken."""
        node = self.node
        intrinsics, why = node.intrinsics
        if intrinsics is None:
            return None, None, why
        msg = early
        if msg is None:
            msg, why = node.depth.closest(stamp_ns(header), node.params['depth_sync_tolerance'])
            if msg is None:
                return None, None, why
        try:
            raw, scale = depth_from_msg(msg, node.params['max_image_pixels'])
        except InvalidImageError as exc:
            return None, None, f'depth rejected: {exc}'
        return DepthFrame(raw, scale), intrinsics, ''

    # ---- the segment service -------------------------------------------------------------------
    def serve(self, req, resp):
        """One-shot segmentation of ``req.image`` (or the latest camera frame, with its depth) with
        ``req.prompts`` (or the active prompts). Runs beside the stream; the model lock orders them."""
        node = self.node
        resp.success = False
        p = node.params
        pipeline = node.pipeline
        if pipeline is None or not node.scheduler.active:
            resp.message = (f'node is not active (state: {node._state_label()}); activate it with '
                            'ros2 lifecycle set <node> activate')
            return resp
        try:
            prompts = validate_prompts(list(req.prompts), max_prompts=p['max_prompts'],
                                       max_chars=p['max_prompt_chars']) if req.prompts else node.scheduler.prompts
            if not prompts:
                resp.message = 'no prompts in the request and no active prompt set'
                return resp
            pipeline.check_prompts(prompts)
        except InvalidPromptError as exc:
            resp.message = f'prompts rejected: {exc}'
            return resp
        live = req.image.height == 0 and req.image.width == 0
        if live:
            latest = node.scheduler.latest()
            if latest is None:
                resp.message = 'no image in the request and no camera frame received yet'
                return resp
            msg, received = latest
            age = time.monotonic() - received
            if p['max_image_age'] > 0 and age > p['max_image_age']:
                resp.message = (f"the latest camera frame is {age:.2f} s old (max_image_age {p['max_image_age']} "
                                's): is the camera still publishing?')
                return resp
        else:
            msg = req.image
        try:
            out = self._run(msg, prompts, live_depth=live, stream=False)
        except InvalidImageError as exc:
            resp.message = f'image rejected: {exc}'
            return resp
        except Exception as exc:  # noqa: BLE001
            resp.message = f'inference failed: {type(exc).__name__}: {exc}'
            return resp
        if out is None or node.pipeline is None:
            resp.message = 'the node was cleaned up during the call; configure and activate it again'
            return resp
        _, result = out
        resp.result = M.segmentation_array_msg(msg.header, result.targets)
        resp.label_mask = M.label_mask_msg(msg.header, result.label_map())
        resp.success = True
        resp.message = f'{len(result.detected)} of {len(result.targets)} target(s) detected'
        if not live:
            resp.message += ' (no 3D: the request brings no depth)'
        return resp
