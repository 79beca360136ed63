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
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._warned_depth_scale = False

    # ---- thread ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name='evf_sam_worker', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.node.scheduler.wake()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    def check_alive(self) -> bool:
        """True if the worker should run but had died (it is restarted, loudly)."""
        if self._thread is None or self._thread.is_alive() or self._stop.is_set():
            return False
        self.node.stats.count('worker_restarts')
        self.node.log.error('the inference worker thread died unexpectedly (see the traceback above); '
                            'restarting it', 'worker', 0.0)
        self.start()
        return True

    def _loop(self) -> None:
        node = self.node
        while not self._stop.is_set():
            job, note = node.scheduler.wait_job(0.5)
            if note == 'stale':
                node.log.warn(f'latest frame is {node.scheduler.stale_age:.2f} s old (max_image_age '
                              f"{node.params['max_image_age']} s); not segmenting it. Is the camera still "
                              'publishing?', 'stale')
            if job is None:
                continue
            try:
                self._process(job)
            except Exception as exc:  # noqa: BLE001 - e.g. publishing during shutdown
                if not node.context.ok() or self._stop.is_set():
                    return
                node.stats.count('inference_errors')
                node.log.error(f'frame failed: {type(exc).__name__}: {exc}', 'inference')

    # ---- one frame ---------------------------------------------------------------------------
    def _decode(self, msg):
        max_px = self.node.params['max_image_pixels']
        if isinstance(msg, CompressedImage):
            return decode_compressed(msg, max_px)
        return image_to_rgb(msg, max_px)

    def _run(self, msg, prompts, *, live_depth: bool):
        """(rgb, FrameResult) or None after reporting why; ``live_depth``: use the camera's depth."""
        node = self.node
        pipeline = node.pipeline
        if pipeline is None:
            return None
        try:
            rgb = self._decode(msg)
            depth = (lambda: self.depth_for(msg.header, rgb.shape)) if live_depth else None
            result = pipeline.run(rgb, prompts, depth=depth)
        except (InvalidImageError, InvalidPromptError) as exc:
            node.stats.count('bad_frames')
            node.log.warn(f'image rejected: {exc}', 'image')
            raise
        except Exception as exc:  # noqa: BLE001 - one failed frame must not stop the stream
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
        if out is None or node.outputs is None or not node.scheduler.active:
            return
        rgb, result = out
        header = job.frame.header
        node.outputs.frame(header, rgb, result, job.command, node.params)
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

    def depth_for(self, header, shape):
        """(DepthFrame | None, Intrinsics | None, why not) for a camera frame."""
        node = self.node
        intrinsics, why = node.intrinsics
        if intrinsics is None:
            return None, None, why
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
        if node.pipeline is None or not node.scheduler.active:
            resp.message = (f'node is not active (state: {node._state_label()}); activate it with '
                            'ros2 lifecycle set <node> activate')
            return resp
        try:
            prompts = validate_prompts(list(req.prompts), max_prompts=p['max_prompts'],
                                       max_chars=p['max_prompt_chars']) if req.prompts else node.scheduler.prompts
            if not prompts:
                resp.message = 'no prompts in the request and no active prompt set'
                return resp
            node.pipeline.check_prompts(prompts)
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
            out = self._run(msg, prompts, live_depth=live)
        except (InvalidImageError, InvalidPromptError) as exc:
            resp.message = f'image rejected: {exc}'
            return resp
        except Exception as exc:  # noqa: BLE001
            resp.message = f'inference failed: {type(exc).__name__}: {exc}'
            return resp
        if out is None:
            resp.message = 'the node was cleaned up during the call'
            return resp
        _, result = out
        resp.result = M.segmentation_array_msg(msg.header, result.targets)
        resp.label_mask = M.label_mask_msg(msg.header, result.label_map())
        resp.success = True
        resp.message = f'{len(result.detected)} of {len(result.targets)} target(s) detected'
        if not live:
            resp.message += ' (no 3D: the request brings no depth)'
        return resp
