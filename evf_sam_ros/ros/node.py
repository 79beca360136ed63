"""The ``evf_sam`` lifecycle node: lifecycle, parameters and wiring. The work is done elsewhere:

    image ─► FrameScheduler (latest-frame slot) ─► worker thread ─► SegmentationPipeline.run
    depth ─► DepthBuffer ─────────── looked up after inference ─┘   (model, gating, 3D)
    camera_info ─► intrinsics                                       └► Outputs (mask, segmentations,
    prompt ─► check by the model's tokenizer ─► active prompts          detections, centroid, markers,
    segment (service) ─► the same pipeline (one model lock)            overlay) + /diagnostics

``evf_sam_ros.pipeline`` and ``evf_sam_ros.scheduling`` are ROS-free; ``ros/messages.py`` converts,
``ros/outputs.py`` publishes, ``ros/diagnostics.py`` reports, ``ros/worker.py`` runs frames.
Services live as long as the node (a call in flight during cleanup or shutdown is answered, never
cut off); subscriptions and publishers exist between configure and cleanup.

Run: ``segment_node --ros-args --params-file config/segment.yaml``.
"""
from __future__ import annotations

import functools
import sys
import threading
import time
import traceback

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from evf_sam_ros.geometry import GeometryError
from evf_sam_ros.pipeline import PipelineSettings, SegmentationPipeline
from evf_sam_ros.ros import params as P
from evf_sam_ros.ros.diagnostics import NodeStats, diagnostic_array, seconds_since
from evf_sam_ros.ros.log import NodeLog
from evf_sam_ros.ros.messages import intrinsics_from_camera_info
from evf_sam_ros.ros.model_factory import make_predictor, release_predictor
from evf_sam_ros.ros.outputs import Outputs
from evf_sam_ros.ros.prompt_input import PromptInput
from evf_sam_ros.ros.worker import InferenceWorker, stamp_ns
from evf_sam_ros.scheduling import DepthBuffer, FrameScheduler
from evf_sam_ros.srv import Segment

__all__ = ['SegmentNode', 'main']

_PIPELINE_FIELDS = [f for f in PipelineSettings.__dataclass_fields__]
_SCHEDULER_PARAMS = {'mode': 'mode', 'max_rate_hz': 'max_rate_hz', 'max_image_age': 'max_age_s'}


def _qos(name: str, depth: int = 1) -> QoSProfile:
    if name == 'sensor_data':
        return QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    reliability = {'best_effort': QoSReliabilityPolicy.BEST_EFFORT,
                   'reliable': QoSReliabilityPolicy.RELIABLE}.get(name, QoSReliabilityPolicy.SYSTEM_DEFAULT)
    return QoSProfile(depth=depth, reliability=reliability)


def _gpu_memory_mb(device: str) -> str:
    if not device.startswith('cuda') or 'torch' not in sys.modules:
        return 'n/a'
    import torch
    return f'{torch.cuda.memory_allocated(torch.device(device)) / 2**20:.1f}'


def _logs_exceptions(transition):
    """rclpy turns an exception in a transition callback into ERROR without logging it (on_error then only
    says that something failed): log what was raised and where, then return ERROR (on_error tears down)."""
    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as exc:  # noqa: BLE001
            if transition.__name__ == 'on_configure':
                self._load_error = f'{type(exc).__name__}: {exc}'
            self.log.error(f'{transition.__name__} raised {type(exc).__name__}: {exc}\n'
                           f'{traceback.format_exc().rstrip()}', 'lifecycle', 0.0)
            return TransitionCallbackReturn.ERROR
    return wrapper


class SegmentNode(LifecycleNode):
    """Lifecycle node ``evf_sam``. ``predictor_factory(model_path, device, dtype) -> predictor`` can
    be injected (tests, benchmarks); by default ``evf_sam_ros.model.load_model`` is used."""

    def __init__(self, node_name: str = 'evf_sam', *, predictor_factory=None, **kwargs):
        super().__init__(node_name, **kwargs)
        self._factory = predictor_factory
        self.log = NodeLog(self)
        P.declare_all(self)
        self._p = {spec.name: self.get_parameter(spec.name).value for spec in P.PARAMS}
        for name, value in list(self._p.items()):
            why = P.validate(name, value, self._p)
            if why:
                default = P.PARAM_BY_NAME[name].default
                self.log.warn(f'invalid parameter: {why}; using {name}={default!r}', 'param', 0.0)
                self._p[name] = default
                self.set_parameters([Parameter(name, value=default)])   # what `ros2 param get` shows
        # pre/post-set callbacks exist from Iron on; on Humble the update is applied in the on-set callback
        self._has_post_set = hasattr(self, 'add_post_set_parameters_callback')
        if hasattr(self, 'add_pre_set_parameters_callback'):
            self.add_pre_set_parameters_callback(P.coerce)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self._has_post_set:
            self.add_post_set_parameters_callback(self._after_set_parameters)
        self.finished = threading.Event()      # set after the shutdown transition: the process may end
        self.publish_lock = threading.RLock()  # orders results after their commands; guards self.outputs

        self.stats = NodeStats()
        self.scheduler = FrameScheduler(mode=self._p['mode'], max_rate_hz=self._p['max_rate_hz'],
                                        max_age_s=self._p['max_image_age'])
        self.depth = DepthBuffer()
        self.intrinsics = (None, 'no camera_info received')   # (Intrinsics | None, why not)
        self.pipeline: SegmentationPipeline | None = None
        self.outputs: Outputs | None = None
        self.worker = InferenceWorker(self)
        self._load_error = ''
        self._subs = []
        self._last_image = None
        self.last_frame_id = ''
        self.last_frame_shape = None   # (h, w) of the last raw image, for the empty mask of a clear
        self.prompt_input: PromptInput | None = None
        self._input_group = MutuallyExclusiveCallbackGroup()
        control = MutuallyExclusiveCallbackGroup()
        self.create_service(Segment, 'segment', self._srv_segment,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(SetBool, 'enable', self._srv_enable, callback_group=control)
        from diagnostic_msgs.msg import DiagnosticArray
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(self._p['diagnostics_period'], self._publish_diagnostics, callback_group=control)
        if self._p['autostart']:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()
            else:
                self.log.error('autostart: configure failed, the node stays unconfigured; fix the cause '
                               'above, then: ros2 lifecycle set <node> configure, then activate', 'load', 0.0)

    # ---------------------------------------------------------------- parameters
    @property
    def params(self) -> dict:
        return self._p

    @property
    def predictor(self):
        """The loaded model (None when unconfigured)."""
        return self.pipeline.predictor if self.pipeline is not None else None

    def _on_set_parameters(self, params) -> SetParametersResult:
        current = dict(self._p, **{p.name: p.value for p in params})
        for prm in params:
            why = P.validate(prm.name, prm.value, current) if prm.name in P.PARAM_BY_NAME else None
            if why:
                return SetParametersResult(successful=False, reason=why)
        if not self._has_post_set:
            self._after_set_parameters(params)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        self._p = dict(self._p, **{p.name: p.value for p in params if p.name in self._p})
        self._apply_settings()

    def _apply_settings(self) -> None:
        p = self._p
        if self.pipeline is not None:   # one whole snapshot: a frame never sees half an update
            self.pipeline.update_settings(**{k: p[k] for k in _PIPELINE_FIELDS})
        self.scheduler.configure(**{v: p[k] for k, v in _SCHEDULER_PARAMS.items()})

    # ---------------------------------------------------------------- lifecycle
    @_logs_exceptions
    def on_configure(self, state) -> TransitionCallbackReturn:
        p = self._p
        self.log.debug('configuring with ' + ', '.join(f'{k}={v!r}' for k, v in sorted(p.items())))
        try:
            self.prompt_input = PromptInput(self)   # before the (slow) model: a bad type fails at once
        except ValueError as exc:
            self._load_error = str(exc)
            self.log.error(f'{exc}. The node stays unconfigured', 'load', 0.0)
            return TransitionCallbackReturn.FAILURE
        self.log.info(f"loading the model (model_path='{p['model_path']}', device={p['device']}, dtype={p['dtype']})")
        try:
            predictor = make_predictor(self._factory, p)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves us unconfigured
            self._load_error = f'{type(exc).__name__}: {exc}'
            self.log.error(f"could not load the model (model_path='{p['model_path']}', device="
                           f"'{p['device']}', dtype='{p['dtype']}'): {str(exc).rstrip('.')}. The node "
                           'stays unconfigured', 'load', 0.0)
            return TransitionCallbackReturn.FAILURE
        self._load_error = ''
        self.pipeline = SegmentationPipeline(predictor, PipelineSettings(**{k: p[k] for k in _PIPELINE_FIELDS}))
        self.log.info(f"model {getattr(predictor, 'name', '?')} loaded on {getattr(predictor, 'device', '?')} "
                      f"({getattr(predictor, 'dtype', '?')})")
        real_model = self._factory is None and not p['model_path'].startswith('fake')
        if real_model and p['device'] == 'auto' and str(getattr(predictor, 'device', '')) == 'cpu':
            self.log.warn('device=auto: CUDA is not available, running on the CPU (slow: seconds per frame '
                          'for full-size models)', 'device', 0.0)
        if getattr(predictor, 'is_default_model', False):
            self.log.warn('model_path is empty: using the embedded SYNTHETIC TABLETOP DEMO model (coloured '
                          'shapes on a table). It does not segment real scenes: set model_path to a real '
                          'checkpoint, e.g. YxZhang/evf-sam2 (cached) or a local directory', 'default', 0.0)
        if p['initial_prompts']:
            self.prompt_input.apply(p['initial_prompts'], raw=True)
        self.outputs = Outputs(self)
        self._create_subscriptions()
        return TransitionCallbackReturn.SUCCESS

    @_logs_exceptions
    def on_activate(self, state) -> TransitionCallbackReturn:
        ret = super().on_activate(state)   # activates the lifecycle publishers
        if ret == TransitionCallbackReturn.SUCCESS:
            self.scheduler.configure(active=True)
            self.worker.start()
            self.prompt_input.republish()   # latched command + label_info of prompts set while inactive
            prompts = self.scheduler.prompts
            p = self._p
            self.log.info(f"active: mode={p['mode']}, {len(prompts)} active prompt(s); publish a "
                          f"{p['transcript_type']} ({p['prompt_mode']}) on '{self.resolve_topic_name('prompt')}' "
                          'to set targets')
        return ret

    @_logs_exceptions
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.scheduler.configure(active=False)
        self.worker.stop()
        self.log.info('deactivated: inference stopped, the model stays loaded (activate to resume)')
        return super().on_deactivate(state)

    @_logs_exceptions
    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._teardown()
        self.log.info('cleaned up: model released')
        return TransitionCallbackReturn.SUCCESS

    @_logs_exceptions
    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._teardown()
        # run_node leaves its loop once the transition's response is out (ros2 lifecycle set ... shutdown);
        # other nodes sharing this process and context (composition) keep running
        threading.Timer(0.3, self.finished.set).start()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.log.error('lifecycle error: releasing the model; the node is unconfigured', 'lifecycle', 0.0)
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self.scheduler.configure(active=False)
        self.worker.stop()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        with self.publish_lock:   # a prompt callback may be publishing right now (other callback group)
            outputs, self.outputs = self.outputs, None
        if outputs is not None:
            outputs.destroy()
        self.scheduler.reset()
        self.depth.clear()
        self.intrinsics = (None, 'no camera_info received')
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            release_predictor(pipeline)

    def close(self) -> None:
        """Stop the worker and drop the model at process exit (before destroy_node); logs nothing and
        waits at most a few seconds for a frame in the model (the process is ending anyway)."""
        self.scheduler.configure(active=False)
        self.worker.stop(timeout=3.0)
        # a frame still in a slow model must not publish after destroy_node; bounded (the process is ending)
        locked = self.publish_lock.acquire(timeout=2.0)
        self.outputs = None
        if locked:
            self.publish_lock.release()
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            release_predictor(pipeline, timeout=2.0)

    # ---------------------------------------------------------------- inputs
    def _create_subscriptions(self) -> None:
        p, g = self._p, self._input_group
        iq = _qos(p['image_qos'])
        if p['image_transport'] == 'compressed':
            img = self.create_subscription(CompressedImage, self.resolve_topic_name('image') + '/compressed',
                                           self._on_image, iq, callback_group=g)
        else:
            img = self.create_subscription(Image, 'image', self._on_image, iq, callback_group=g)
        self._subs = [
            img,
            self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, _qos(p['image_qos']),
                                     callback_group=g),
            self.create_subscription(Image, 'depth', self._on_depth, _qos(p['image_qos'], 2), callback_group=g),
            self.prompt_input.subscribe(g),
        ]

    def _on_image(self, msg) -> None:
        now = time.monotonic()
        self._last_image = now
        self.last_frame_id = msg.header.frame_id
        if hasattr(msg, 'height'):
            self.last_frame_shape = (int(msg.height), int(msg.width))
        self.stats.in_rate.tick(now)
        self.stats.image_loss.add(stamp_ns(msg.header))
        self.scheduler.put(msg, now)

    def _on_depth(self, msg: Image) -> None:
        self.stats.depth_loss.add(stamp_ns(msg.header))
        self.depth.add(stamp_ns(msg.header), msg)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.intrinsics = (intrinsics_from_camera_info(msg), '')
        except GeometryError as exc:
            self.intrinsics = (None, f'camera_info rejected: {exc}')
            self.log.warn(f'camera_info rejected: {exc}; no 3D positions until a valid one arrives',
                          'camera_info', 10.0)

    # ---------------------------------------------------------------- services
    def _state_label(self) -> str:
        try:
            return self._state_machine.current_state[1]
        except Exception:  # noqa: BLE001
            return 'unknown'

    def _srv_enable(self, req, resp):
        self.scheduler.configure(enabled=bool(req.data))
        resp.success = True
        state = self._state_label()
        if req.data:
            resp.message = ('inference enabled' if state == 'active' else
                            f'inference enabled; it starts once the node is active (now {state})')
        else:
            resp.message = 'inference paused (model stays loaded)'
        self.log.info(resp.message)
        return resp

    def _srv_segment(self, req, resp):
        return self.worker.serve(req, resp)

    # ---------------------------------------------------------------- diagnostics
    def diagnostics_values(self) -> dict:
        pipeline = self.pipeline
        pr = pipeline.predictor if pipeline is not None else None
        vals = {'state': self._state_label(), 'enabled': self.scheduler.enabled, 'mode': self._p['mode'],
                'active_prompts': len(self.scheduler.prompts),
                'seconds_since_image': seconds_since(self._last_image)}
        vals.update(self.stats.values())
        vals['failures_since_output'] = self.worker.failures_since_output
        c = self.scheduler.counts
        vals.update(received=c.received, dropped=c.dropped, stale=c.stale)
        vals['model'] = getattr(pr, 'name', '') if pr is not None else ''
        vals['device'] = str(getattr(pr, 'device', '')) if pr is not None else ''
        vals['dtype'] = str(getattr(pr, 'dtype', '')) if pr is not None else ''
        vals['is_default_model'] = bool(getattr(pr, 'is_default_model', False))
        vals['gpu_memory_mb'] = _gpu_memory_mb(vals['device'])
        if self._load_error:
            vals['load_error'] = self._load_error
        last = self.log.last_message
        for key in ('inference', 'image', 'depth'):
            if key in last:
                vals[f'last_{key}_problem'] = last[key]
        return vals

    def _publish_diagnostics(self) -> None:
        dead = self.worker.check_alive()
        v = self.diagnostics_values()
        loss = v['image_loss']
        if loss == loss and loss > self._p['frame_loss_warn'] and self.scheduler.active:
            self.log.warn(
                f"only {100 * (1 - loss):.0f} % of the camera's frames reach the node (~{v['input_rate_hz']:.1f} "
                f"of ~{v['camera_rate_hz']:.1f} Hz). With the camera in another process this is usually DDS losing "
                'large images: give the camera driver and this node a large-image transport (config/README.md, '
                '"Large images"), use image_transport compressed or a lower resolution; otherwise this process '
                'is too busy to take them', 'frame_loss', 30.0)
        self._diag_pub.publish(diagnostic_array(
            f'{self.get_fully_qualified_name()}: segmentation', v['device'], v, self.get_clock().now().to_msg(),
            worker_dead=dead, loss_warn=self._p['frame_loss_warn']))


def main(args=None) -> int:
    from evf_sam_ros.ros.entry_points import run_node

    return run_node(SegmentNode, args, lambda: MultiThreadedExecutor(num_threads=4))


if __name__ == '__main__':
    sys.exit(main())
