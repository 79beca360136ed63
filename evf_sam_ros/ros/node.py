"""The ``evf_sam`` lifecycle node: camera + text prompts in; label masks, per-prompt results,
3D centroids, overlays, markers and diagnostics out, always on the latest frame.

Data flows one way::

    image ──► [single slot] ──► worker thread: encode once, segment all prompts (batched),
    depth ──► [ring by stamp]       gate, 2D/3D geometry ──► ~/mask ~/segmentations ~/centroid
    camera_info ──► [latest]                               ~/overlay (lazy) ~/markers
    prompt ──► [active prompt set, under a lock]           /diagnostics (timer)

The image callback only replaces the slot; frames are never queued behind inference. The
``~/segment`` service runs in its own callback group (its own executor thread), so a one-shot
request never blocks the stream. All ROS-free logic lives in ``evf_sam_ros.postprocess`` and
``evf_sam_ros.geometry``; this module converts messages, schedules work and publishes.

Run: ``segment_node --ros-args --params-file config/segment.yaml`` or
``python -m evf_sam_ros.ros.node --ros-args ...``.
"""
from __future__ import annotations

import collections
import gc
import math
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from std_srvs.srv import SetBool
from visualization_msgs.msg import Marker, MarkerArray

from evf_sam_ros.geometry import GeometryError, Intrinsics
from evf_sam_ros.msg import Segmentation, SegmentationArray
from evf_sam_ros.postprocess import (PromptError, RateMeter, RollingStats, build_label_map,
                                     evaluate_targets, overlay_bgr, parse_prompt_command,
                                     validate_prompts)
from evf_sam_ros.ros import params as P
from evf_sam_ros.ros.image_codec import (ImageError, decode_compressed, depth_from_msg,
                                         fill_image_msg, image_to_rgb)
from evf_sam_ros.srv import Segment
from evf_sam_ros.visualization import label_color

__all__ = ['SegmentNode', 'main']

MAX_TEXT_TOKENS = 1022  # BEiT-3 text positions, bos/eos included


@dataclass
class _Frame:
    msg: object          # sensor_msgs/Image or CompressedImage
    recv: float          # time.monotonic() at reception
    seq: int
    taken: bool = False
    t_take: float = 0.0  # when the worker took it


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == 'OutOfMemoryError' or \
        'out of memory' in str(exc).lower()


def _qos_for(name: str, depth: int = 1) -> QoSProfile:
    if name == 'sensor_data':
        q = QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                       durability=qos_profile_sensor_data.durability,
                       history=QoSHistoryPolicy.KEEP_LAST)
    elif name == 'best_effort':
        q = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.BEST_EFFORT)
    elif name == 'reliable':
        q = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
    else:  # system_default
        q = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.SYSTEM_DEFAULT,
                       durability=QoSDurabilityPolicy.SYSTEM_DEFAULT)
    return q


class SegmentNode(LifecycleNode):
    """Lifecycle node ``evf_sam``. ``predictor_factory(model_path, device, dtype) -> predictor``
    can be injected (tests, benchmarks); by default ``evf_sam_ros.model.load_model`` is used, or
    the fake predictor for ``model_path`` starting with ``fake:``.
    """

    def __init__(self, node_name: str = 'evf_sam', *, predictor_factory=None, **kwargs):
        super().__init__(node_name, **kwargs)
        self._factory = predictor_factory
        P.declare_all(self)
        self._p = {spec.name: self.get_parameter(spec.name).value for spec in P.PARAMS}
        for name, value in list(self._p.items()):
            why = P.validate(name, value, self._p)
            if why:
                default = P.PARAM_BY_NAME[name].default
                self.get_logger().error(f'invalid parameter: {why}; using {name}={default!r}')
                self._p[name] = default
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._cv = threading.Condition()          # guards all the state below
        self._latest: _Frame | None = None
        self._seq = 0
        self._processed_seq = 0
        self._prompts: list[str] = []
        self._prompt_version = 0
        self._once_pending = False
        self._enabled = True
        self._active = False
        self._depth = collections.deque(maxlen=8)  # (stamp_ns, recv, msg)
        self._info = None                          # (Intrinsics | None, reason, recv)
        self._last_start = 0.0
        self._last_overlay = 0.0
        self._markers_shown = False
        self.last_errors: dict[str, str] = {}
        self._last_error = ''
        self._log_times: dict[str, float] = {}

        self._predictor = None
        self._load_error = ''
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._subs, self._pubs, self._srvs = [], {}, []
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._reset_stats()

        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(self._p['diagnostics_period'], self._publish_diagnostics,
                                             callback_group=self._control_group)
        if self._p['autostart']:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
            else:
                self.get_logger().error(
                    'autostart: configure failed, the node stays unconfigured; fix the cause above '
                    'and call the lifecycle service ~/change_state (configure, then activate)')

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params) -> SetParametersResult:
        current = dict(self._p)
        for prm in params:
            current[prm.name] = prm.value
        for prm in params:
            if prm.name not in P.PARAM_BY_NAME:
                continue
            why = P.validate(prm.name, prm.value, current)
            if why:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        with self._cv:
            for prm in params:
                if prm.name in self._p:
                    self._p[prm.name] = prm.value
                    if prm.name == 'mode':
                        self._once_pending = False
            self._cv.notify_all()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self._p
        log = self.get_logger()
        import evf_sam_ros.model.masks  # noqa: F401 - import (torch) now, not on the first frame
        try:
            predictor = self._make_predictor(p['model_path'], p['device'], p['dtype'])
        except Exception as exc:  # noqa: BLE001 - any load failure leaves us unconfigured
            self._load_error = f'{type(exc).__name__}: {exc}'
            log.error(f"could not load the model (model_path='{p['model_path']}', device="
                      f"'{p['device']}', dtype='{p['dtype']}'): {exc}. Check model_path (a "
                      'checkpoint directory or a cached Hugging Face id); the node stays '
                      'unconfigured')
            return TransitionCallbackReturn.FAILURE
        self._load_error = ''
        self._predictor = predictor
        log.info(f'model {getattr(predictor, "name", "?")} loaded on {getattr(predictor, "device", "?")} '
                 f'({getattr(predictor, "dtype", "?")})')
        if getattr(predictor, 'is_default_model', False):
            log.warning('model_path is empty: using the embedded SYNTHETIC TABLETOP DEMO model (coloured '
                        'shapes on a table). It does not segment real scenes: set model_path to a real '
                        'checkpoint, e.g. YxZhang/evf-sam2 (cached) or a local directory.')
        if p['warmup']:
            try:
                t0 = time.monotonic()
                feats = predictor.encode_image(np.zeros((64, 64, 3), np.uint8))
                predictor.segment(feats, ['object'])
                log.info(f'warm-up inference took {1000 * (time.monotonic() - t0):.0f} ms')
            except Exception as exc:  # noqa: BLE001
                log.warning(f'warm-up inference failed ({exc}); continuing')
        if p['initial_prompts']:
            try:
                self._prompts = self._parse(p['initial_prompts'])
                self._prompt_version += 1
            except PromptError as exc:
                log.error(f'initial_prompts rejected: {exc}')
        self._create_interfaces()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # activates the lifecycle publishers
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        with self._cv:
            self._active = True
            self._processed_seq = self._seq   # frames received before activation are old
            if self._prompts and self._p['mode'] == 'once':
                self._once_pending = True
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, name='evf_sam_worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"active: mode={self._p['mode']}, {len(self._prompts)} active prompt(s); publish a "
            f"std_msgs/String on '{self.resolve_topic_name('prompt')}' to set targets")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_interfaces()
        self._release_predictor()
        with self._cv:
            self._latest = None
            self._depth.clear()
            self._info = None
            self._prompts = []
            self._once_pending = False
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_interfaces()
        self._release_predictor()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error('lifecycle error: releasing the model; the node is unconfigured')
        self._stop_worker()
        self._destroy_interfaces()
        self._release_predictor()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker and release the model (call before destroy_node)."""
        self._stop_worker()
        self._release_predictor()

    # ------------------------------------------------------------------ model
    def _make_predictor(self, model_path: str, device: str, dtype: str):
        if self._factory is not None:
            return self._factory(model_path, device, dtype)
        if model_path.startswith('fake'):
            from evf_sam_ros.ros.fake_predictor import FakePredictor, parse_fake_spec
            return FakePredictor(**parse_fake_spec(model_path))
        import torch
        from evf_sam_ros.model import load_model
        threads = self._p['torch_threads'] or max(1, min(4, os.cpu_count() or 1))
        torch.set_num_threads(threads)
        cuda = torch.cuda.is_available()
        if device == 'auto' and not cuda:
            self.get_logger().warning('device=auto: CUDA is not available, running on the CPU '
                                      '(slow: seconds per frame for full-size models)')
        if dtype == 'auto':
            dtype = 'fp16' if (device.startswith('cuda') or (device == 'auto' and cuda)) else 'fp32'
        return load_model(model_path or None, device=device, dtype=dtype)

    def _release_predictor(self) -> None:
        predictor, self._predictor = self._predictor, None
        if predictor is None:
            return
        device = str(getattr(predictor, 'device', ''))
        del predictor
        gc.collect()
        if device.startswith('cuda') and 'torch' in sys.modules:
            import torch
            torch.cuda.empty_cache()
        self.get_logger().info('model released')

    # ------------------------------------------------------------------ interfaces
    def _create_interfaces(self) -> None:
        p = self._p
        iq = _qos_for(p['image_qos'], 1)
        g = self._input_group
        if p['image_transport'] == 'compressed':
            topic = self.resolve_topic_name('image') + '/compressed'
            self._subs.append(self.create_subscription(CompressedImage, topic, self._on_image, iq,
                                                       callback_group=g))
        else:
            self._subs.append(self.create_subscription(Image, 'image', self._on_image, iq,
                                                       callback_group=g))
        self._subs.append(self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info,
                                                   _qos_for(p['image_qos'], 1), callback_group=g))
        self._subs.append(self.create_subscription(Image, 'depth', self._on_depth,
                                                   _qos_for(p['image_qos'], 2), callback_group=g))
        self._subs.append(self.create_subscription(String, 'prompt', self._on_prompt,
                                                   QoSProfile(depth=10), callback_group=g))
        out = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE)
        self._pubs = {
            'mask': self.create_lifecycle_publisher(Image, 'mask', out),
            'segmentations': self.create_lifecycle_publisher(SegmentationArray, 'segmentations', out),
            'centroid': self.create_lifecycle_publisher(PointStamped, 'centroid', out),
            'overlay': self.create_lifecycle_publisher(Image, 'overlay', QoSProfile(depth=1)),
            'markers': self.create_lifecycle_publisher(MarkerArray, 'markers', out),
        }
        self._srvs = [
            self.create_service(Segment, 'segment', self._srv_segment,
                                callback_group=self._service_group),
            self.create_service(SetBool, 'enable', self._srv_enable,
                                callback_group=self._control_group),
        ]

    def _destroy_interfaces(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        for s in self._srvs:
            self.destroy_service(s)
        self._subs, self._pubs, self._srvs = [], {}, []

    # ------------------------------------------------------------------ input callbacks
    def _on_image(self, msg) -> None:
        now = time.monotonic()
        self._in_rate.tick(now)
        with self._cv:
            self._counts['received'] += 1
            old = self._latest
            if old is not None and not old.taken and self._active and self._enabled and \
                    self._prompts and self._p['mode'] == 'continuous':
                self._counts['dropped'] += 1   # replaced before the worker could take it
            self._seq += 1
            self._latest = _Frame(msg, now, self._seq)
            self._cv.notify_all()

    def _on_depth(self, msg: Image) -> None:
        with self._cv:
            self._depth.append((_stamp_ns(msg.header), time.monotonic(), msg))
            self._cv.notify_all()  # the worker may be waiting for this frame's depth

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            k = Intrinsics.from_k(msg.k, msg.width, msg.height)
            reason = ''
        except GeometryError as exc:
            k, reason = None, str(exc)
            self._report('camera_info', f'camera_info rejected: {exc}; 3D centroids are disabled '
                         'until a valid camera_info arrives')
        with self._cv:
            self._info = (k, reason, time.monotonic())

    def _parse(self, text: str) -> list[str]:
        p = self._p
        prompts = parse_prompt_command(text, delimiter=p['prompt_delimiter'],
                                       max_prompts=p['max_prompts'], max_chars=p['max_prompt_chars'])
        self._check_tokens(prompts)
        return prompts

    def _check_tokens(self, prompts) -> None:
        predictor = self._predictor
        if not prompts or predictor is None or not hasattr(predictor, 'tokenize'):
            return
        try:
            _, attention = predictor.tokenize(list(prompts))
            lengths = np.asarray(attention).sum(axis=1)
        except Exception as exc:  # noqa: BLE001 - the model will complain itself later
            self.get_logger().debug(f'tokenize failed: {exc}')
            return
        limit = getattr(predictor, 'max_text_tokens', MAX_TEXT_TOKENS)
        for i, n in enumerate(lengths):
            if int(n) > limit:
                raise PromptError(f'prompt {i + 1} is {int(n)} tokens long, more than the text '
                                  f'encoder accepts ({limit}); shorten it')

    def _on_prompt(self, msg: String) -> None:
        try:
            prompts = self._parse(msg.data)
        except PromptError as exc:
            with self._cv:
                self._counts['prompts_rejected'] += 1
            self._report('prompt', f'prompt rejected, keeping the previous {len(self._prompts)} '
                         f'prompt(s): {exc}', throttle=1.0)
            return
        with self._cv:
            if self._once_pending:
                self._counts['commands_superseded'] += 1
            changed = prompts != self._prompts
            self._prompts = prompts
            self._prompt_version += 1
            self._once_pending = bool(prompts) and self._p['mode'] == 'once'
            self._cv.notify_all()
        if not changed:
            self.get_logger().debug(f'prompt command repeated: {prompts}')
        elif prompts:
            self.get_logger().info(f'active prompts: {prompts}')
        else:
            self.get_logger().info('prompts cleared')
            self._clear_markers(None)

    # ------------------------------------------------------------------ services
    def _srv_enable(self, req, resp):
        with self._cv:
            self._enabled = bool(req.data)
            self._cv.notify_all()
        resp.success = True
        resp.message = 'inference resumed' if req.data else 'inference paused (model stays loaded)'
        self.get_logger().info(resp.message)
        return resp

    def _srv_segment(self, req, resp):
        predictor = self._predictor
        resp.success = False
        if predictor is None or not self._active:
            resp.message = (f'node is not active (state: {self._state_label()}); activate it '
                            'through the lifecycle services')
            return resp
        p = self._p
        try:
            if req.prompts:
                prompts = validate_prompts(list(req.prompts), max_prompts=p['max_prompts'],
                                           max_chars=p['max_prompt_chars'])
                self._check_tokens(prompts)
            else:
                with self._cv:
                    prompts = list(self._prompts)
                if not prompts:
                    resp.message = 'no prompts in the request and no active prompt set'
                    return resp
        except PromptError as exc:
            resp.message = f'prompts rejected: {exc}'
            return resp
        if req.image.height == 0 and req.image.width == 0:
            with self._cv:
                frame = self._latest
            if frame is None:
                resp.message = 'no image in the request and no camera frame received yet'
                return resp
            age = time.monotonic() - frame.recv
            if p['max_image_age'] > 0 and age > p['max_image_age']:
                resp.message = (f'the latest camera frame is {age:.2f} s old (max_image_age '
                                f"{p['max_image_age']} s): is the camera still publishing?")
                return resp
            msg = frame.msg
        else:
            msg = req.image
        try:
            out = self._run(predictor, msg, prompts)
        except ImageError as exc:
            resp.message = f'image rejected: {exc}'
            return resp
        except Exception as exc:  # noqa: BLE001
            resp.message = f'inference failed: {type(exc).__name__}: {exc}'
            return resp
        header, rgb, targets, label_map, _ = out
        resp.result = self._array_msg(header, targets)
        fill_image_msg(resp.label_mask, label_map, 'mono8')
        resp.label_mask.header = header
        resp.success = True
        n = sum(t.detected for t in targets)
        resp.message = f'{n} of {len(targets)} target(s) detected'
        return resp

    # ------------------------------------------------------------------ worker
    def _stop_worker(self) -> None:
        with self._cv:
            self._active = False
            self._stop.set()
            self._cv.notify_all()
        w, self._worker = self._worker, None
        if w is not None and w is not threading.current_thread():
            w.join(timeout=30.0)

    def _next_job(self):
        """Under self._cv: the frame + prompts to process now, a time to wait, or None."""
        p = self._p
        if not (self._active and self._enabled and self._prompts and self._latest is not None):
            return None, None
        frame = self._latest
        once = p['mode'] == 'once'
        if once:
            if not self._once_pending:
                return None, None
        elif frame.seq <= self._processed_seq:
            return None, None
        now = time.monotonic()
        age = now - frame.recv
        if p['max_image_age'] > 0 and age > p['max_image_age']:
            if frame.seq > self._processed_seq:
                self._processed_seq = frame.seq
                frame.taken = True
                self._counts['stale'] += 1
            self._report(
                'stale', f"latest frame is {age:.2f} s old (max_image_age {p['max_image_age']} s); "
                'not segmenting it. Waiting for a fresh frame: is the camera publishing?',
                level='warning')
            return None, None
        if not once and p['max_rate_hz'] > 0:
            wait = self._last_start + 1.0 / p['max_rate_hz'] - now
            if wait > 0:
                return None, wait
        self._processed_seq = frame.seq
        frame.taken = True
        frame.t_take = now
        self._once_pending = False
        self._last_start = now
        return (frame, list(self._prompts)), None

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                job, wait = self._next_job()
                if job is None:
                    self._cv.wait(timeout=min(wait, 0.5) if wait else 0.5)
                    continue
            predictor = self._predictor
            if predictor is None:
                continue
            self._process(predictor, *job)

    def _run(self, predictor, msg, prompts):
        """Decode, infer, evaluate: (header, rgb, targets, label_map, model_seconds)."""
        if isinstance(msg, CompressedImage):
            rgb = decode_compressed(msg)
        else:
            rgb = image_to_rgb(msg)
        depth, scale, intr = self._depth_for(msg.header, rgb.shape)
        t0 = time.monotonic()
        feats = predictor.encode_image(rgb)
        results = predictor.segment(feats, prompts)
        model_s = time.monotonic() - t0
        if len(results) != len(prompts):
            raise RuntimeError(f'model returned {len(results)} results for {len(prompts)} prompts')
        p = self._p
        targets = evaluate_targets(
            results, score_threshold=p['score_threshold'], min_mask_area=p['min_mask_area'],
            object_score_threshold=(p['object_score_threshold']
                                    if getattr(predictor, 'has_object_score', False) else None),
            depth=depth, depth_scale=scale, intrinsics=intr, use_depth=p['use_depth'],
            erosion_px=p['mask_erosion_px'], depth_min=p['depth_min'], depth_max=p['depth_max'],
            min_depth_px=p['min_depth_pixels'])
        label_map = build_label_map(rgb.shape, targets)
        return msg.header, rgb, targets, label_map, model_s

    def _process(self, predictor, frame: _Frame, prompts) -> None:
        try:
            header, rgb, targets, label_map, model_s = self._run(predictor, frame.msg, prompts)
        except ImageError as exc:
            self._count('bad_frames')
            self._report('image', f'image rejected: {exc}')
            return
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the stream
            self._count('inference_errors')
            if _is_oom(exc):
                if 'torch' in sys.modules:
                    import torch
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                self._report('oom', f'out of memory on this frame, skipped it ({exc}); lower the '
                             'resolution, the number of prompts or use dtype fp16')
            else:
                self._report('inference', f'inference failed on this frame, skipped it: '
                             f'{type(exc).__name__}: {exc}')
            return
        if not self._active:
            return  # deactivated during inference: publishers are off
        self._publish(header, rgb, targets, label_map)
        done = time.monotonic()
        self._out_rate.tick(done)
        total = done - frame.recv
        self._stats['model_ms'].add(1000.0 * model_s)
        self._stats['latency_ms'].add(1000.0 * total)
        # node overhead: the worker's time on this frame that is not model time (conversion,
        # gating, geometry, messages, publishing); the slot wait is reported separately
        self._stats['overhead_ms'].add(1000.0 * (done - frame.t_take - model_s))
        self._stats['wait_ms'].add(1000.0 * (frame.t_take - frame.recv))
        now_ns = self.get_clock().now().nanoseconds
        st = _stamp_ns(header)
        if st > 0:
            self._stats['age_ms'].add((now_ns - st) / 1e6)
        self._count('processed')

    def _report(self, category: str, text: str, level: str = 'error',
                throttle: float = 5.0) -> None:
        """Log a problem with the input or the model once per ``throttle`` seconds per category
        (the node keeps running); the last message per category is kept for tests/diagnostics."""
        now = time.monotonic()
        with self._cv:
            self.last_errors[category] = text
            self._last_error = text
            if now - self._log_times.get(category, -math.inf) < throttle:
                return
            self._log_times[category] = now
        getattr(self.get_logger(), level)(text)

    def _count(self, key: str) -> None:
        with self._cv:
            self._counts[key] += 1

    def _depth_for(self, header, shape):
        """(depth array, metres per unit, intrinsics) for this image, or (None, 1.0, None)."""
        p = self._p
        if not p['use_depth']:
            return None, 1.0, None
        with self._cv:
            info = self._info
            depths = list(self._depth)
        if info is None or not depths:
            if depths and info is None:
                self._report('camera_info', "depth arrives but no camera_info yet: no 3D "
                             "centroids (remap 'camera_info' to the colour camera's info topic)",
                             level='warning', throttle=10.0)
            return None, 1.0, None
        k, reason, _ = info
        if k is None:
            return None, 1.0, None
        h, w = shape[:2]
        if k.width and k.height and (k.width, k.height) != (w, h):
            self._report('info_size', f'camera_info is for {k.width}x{k.height} but the image is '
                         f'{w}x{h}; scaling the intrinsics (publish the camera_info of this image '
                         'to silence this)', level='warning', throttle=10.0)
            k = k.scaled(w, h)
        st = _stamp_ns(header)
        tol = p['depth_sync_tolerance']
        if tol > 0 and st > 0:
            best = self._wait_for_depth(st, tol)
            if best is None:
                return None, 1.0, None
            if abs(best[0] - st) > tol * 1e9:
                self._report('depth_sync', f'no depth image within depth_sync_tolerance={tol} s '
                             f'of the colour image (closest is {abs(best[0] - st) / 1e9:.3f} s '
                             'away); no 3D for this frame', level='warning')
                return None, 1.0, None
        else:
            best = depths[-1]
        msg = best[2]
        try:
            depth, scale = depth_from_msg(msg)
        except ImageError as exc:
            self._report('depth', f'depth rejected: {exc}; no 3D for this frame')
            return None, 1.0, None
        if depth.shape != (h, w):
            self._report(
                'depth', f'depth image is {depth.shape[1]}x{depth.shape[0]} but the colour image '
                f'is {w}x{h}: depth must be registered/aligned to the colour image (e.g. the '
                "camera's aligned_depth_to_color topic or depth_image_proc/register); no 3D")
            return None, 1.0, None
        return depth, scale, k

    def _wait_for_depth(self, stamp_ns: int, tol: float):
        """The buffered depth closest to ``stamp_ns``; waits briefly (at most max(tol, 20 ms), capped
        at 0.2 s) for one within ``tol`` that is still in flight: cameras publish depth just after
        colour, and the worker takes the colour frame as soon as it lands."""
        deadline = time.monotonic() + min(max(tol, 0.02), 0.2)
        with self._cv:
            while True:
                if not self._depth:  # cleared by a lifecycle transition meanwhile
                    return None
                best = min(self._depth, key=lambda d: abs(d[0] - stamp_ns))
                remaining = deadline - time.monotonic()
                if abs(best[0] - stamp_ns) <= tol * 1e9 or remaining <= 0 or best[0] > stamp_ns:
                    return best
                self._cv.wait(remaining)

    # ------------------------------------------------------------------ outputs
    def _array_msg(self, header, targets) -> SegmentationArray:
        arr = SegmentationArray()
        arr.header = header
        segs = []
        for t in targets:
            s = Segmentation()
            s.prompt = t.prompt
            s.label = min(int(t.label), 255)
            s.detected = bool(t.detected)
            s.score = float(t.score) if math.isfinite(t.score) else 0.0
            s.has_object_score = t.object_score is not None
            s.object_score = float(t.object_score) if t.object_score is not None else 0.0
            if t.detected:
                x, y, w, h = t.bbox
                s.bbox = RegionOfInterest(x_offset=int(x), y_offset=int(y), width=int(w),
                                          height=int(h))
                s.centroid = Point(x=float(t.centroid[0]), y=float(t.centroid[1]), z=0.0)
                s.area = int(t.area)
                if t.has_position:
                    c = t.centroid3d
                    s.has_position = True
                    s.position = Point(x=c.position[0], y=c.position[1], z=c.position[2])
                    s.position_covariance = [float(v) for v in np.asarray(c.covariance).ravel()]
                    s.depth_valid_ratio = float(c.valid_ratio)
            segs.append(s)
        arr.segmentations = segs
        return arr

    def _publish(self, header, rgb, targets, label_map) -> None:
        p = self._p
        pubs = self._pubs
        if not pubs:
            return
        if p['publish_mask']:
            m = Image(header=header)
            fill_image_msg(m, label_map, 'mono8')
            pubs['mask'].publish(m)
        pubs['segmentations'].publish(self._array_msg(header, targets))
        located = [t for t in targets if t.detected and t.has_position]
        if p['publish_centroid'] and located:
            c = located[0].centroid3d.position
            pubs['centroid'].publish(PointStamped(header=header, point=Point(x=c[0], y=c[1], z=c[2])))
        if p['publish_markers']:
            if located:
                self._publish_markers(header, located)
            elif self._markers_shown:
                self._clear_markers(header)
        if p['publish_overlay'] and pubs['overlay'].get_subscription_count() > 0:
            now = time.monotonic()
            if now - self._last_overlay >= 1.0 / p['overlay_max_rate_hz']:
                self._last_overlay = now
                o = Image(header=header)
                fill_image_msg(o, overlay_bgr(rgb, targets), 'bgr8')
                pubs['overlay'].publish(o)

    def _publish_markers(self, header, located) -> None:
        life = float(self._p['marker_lifetime'])
        arr = MarkerArray()
        clear = Marker(header=header, action=Marker.DELETEALL)
        markers = [clear]
        for t in located:
            x, y, z = t.centroid3d.position
            r, g, b = (c / 255.0 for c in label_color(t.label))
            sphere = Marker(header=header, ns='evf_sam/centroid', id=int(t.label),
                            type=Marker.SPHERE, action=Marker.ADD)
            sphere.pose.position = Point(x=x, y=y, z=z)
            sphere.pose.orientation.w = 1.0
            sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.05
            sphere.color.r, sphere.color.g, sphere.color.b, sphere.color.a = r, g, b, 0.9
            text = Marker(header=header, ns='evf_sam/label', id=int(t.label),
                          type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
            text.pose.position = Point(x=x, y=y - 0.08, z=z)  # optical frame: -y is up
            text.pose.orientation.w = 1.0
            text.scale.z = 0.05
            text.color.r = text.color.g = text.color.b = text.color.a = 1.0
            text.text = f'{t.prompt} ({t.score:.2f})'
            for m in (sphere, text):
                m.lifetime.sec = int(life)
                m.lifetime.nanosec = int((life - int(life)) * 1e9)
            markers += [sphere, text]
        arr.markers = markers
        self._pubs['markers'].publish(arr)
        self._markers_shown = True

    def _clear_markers(self, header) -> None:
        pub = self._pubs.get('markers')
        if pub is None or not self._active:
            return
        m = Marker(action=Marker.DELETEALL)
        if header is not None:
            m.header = header
        pub.publish(MarkerArray(markers=[m]))
        self._markers_shown = False

    # ------------------------------------------------------------------ diagnostics
    def _reset_stats(self) -> None:
        self._in_rate = RateMeter(5.0)
        self._out_rate = RateMeter(5.0)
        self._stats = {k: RollingStats(200) for k in ('model_ms', 'latency_ms', 'overhead_ms',
                                                       'wait_ms', 'age_ms')}
        self._counts = collections.Counter()

    def _state_label(self) -> str:
        try:
            return self._state_machine.current_state[1]
        except Exception:  # noqa: BLE001
            return 'unknown'

    def diagnostics_values(self) -> dict:
        """Current diagnostics as a dict (also used by tests and the benchmark)."""
        pr = self._predictor
        vals = {
            'state': self._state_label(),
            'enabled': self._enabled,
            'mode': self._p['mode'],
            'active_prompts': len(self._prompts),
            'input_rate_hz': self._in_rate.rate(),
            'output_rate_hz': self._out_rate.rate(),
        }
        for key in ('model_ms', 'latency_ms', 'overhead_ms', 'wait_ms', 'age_ms'):
            st = self._stats[key]
            vals[f'{key}_p50'] = st.percentile(50)
            vals[f'{key}_p95'] = st.percentile(95)
        for key in ('received', 'processed', 'dropped', 'stale', 'bad_frames', 'inference_errors',
                    'prompts_rejected', 'commands_superseded'):
            vals[key] = self._counts[key]
        vals['model'] = getattr(pr, 'name', '') if pr is not None else ''
        vals['device'] = str(getattr(pr, 'device', '')) if pr is not None else ''
        vals['dtype'] = str(getattr(pr, 'dtype', '')) if pr is not None else ''
        vals['is_default_model'] = bool(getattr(pr, 'is_default_model', False))
        gpu = 'n/a'
        if pr is not None and vals['device'].startswith('cuda') and 'torch' in sys.modules:
            import torch
            try:
                gpu = f'{torch.cuda.memory_allocated() / 2**20:.1f}'
            except Exception:  # noqa: BLE001
                pass
        vals['gpu_memory_mb'] = gpu
        if self._load_error:
            vals['load_error'] = self._load_error
        if self._last_error:
            vals['last_error'] = self._last_error
        return vals

    def _publish_diagnostics(self) -> None:
        v = self.diagnostics_values()
        st = DiagnosticStatus()
        st.name = f'{self.get_fully_qualified_name()}: segmentation'
        st.hardware_id = v['device'] or 'none'
        last_in = self._in_rate.last()
        if self._load_error:
            st.level, st.message = DiagnosticStatus.ERROR, f"model not loaded: {v['load_error']}"
        elif v['state'] != 'active':
            st.level, st.message = DiagnosticStatus.WARN, f"node is {v['state']}"
        elif not v['enabled']:
            st.level, st.message = DiagnosticStatus.WARN, 'paused (~/enable false)'
        elif last_in is None or time.monotonic() - last_in > 2.0:
            st.level, st.message = DiagnosticStatus.WARN, 'no images received for 2 s'
        else:
            st.level, st.message = DiagnosticStatus.OK, f"segmenting {v['active_prompts']} prompt(s)"
        st.level = bytes([st.level]) if isinstance(st.level, int) else st.level
        st.values = [KeyValue(key=k, value=(f'{val:.3f}' if isinstance(val, float) else str(val)))
                     for k, val in v.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(arr)


def main(args=None) -> int:
    from evf_sam_ros.ros.entry_points import run_node

    return run_node(SegmentNode, args, lambda: MultiThreadedExecutor(num_threads=4))


if __name__ == '__main__':
    sys.exit(main())
