"""Parameters of the ``evf_sam`` node: one table, declared with descriptors (ranges, read_only) and
validated in one place. ``read_only`` parameters are fixed for the life of the process (set them in
the params file or on the command line); the others can be changed at run time with
``ros2 param set`` and take effect on the next frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

__all__ = ['PARAMS', 'PARAM_BY_NAME', 'ParamSpec', 'coerce', 'declare_all', 'validate']

CHOICES = {
    'device': None,  # free form: auto | cpu | cuda | cuda:N
    'backend': ('torch', 'onnxruntime', 'openvino'),
    'dtype': ('auto', 'fp32', 'fp16', 'bf16', 'float32', 'float16', 'bfloat16'),
    'mode': ('continuous', 'once'),
    'prompt_mode': ('spoken', 'raw'),
    'image_qos': ('sensor_data', 'reliable', 'best_effort', 'system_default'),
    'image_transport': ('raw', 'compressed'),
}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: object
    description: str
    read_only: bool = False
    range: tuple | None = None   # (lo, hi) inclusive, ints or floats

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description,
                                read_only=self.read_only)
        choices = CHOICES.get(self.name)
        if choices:
            d.additional_constraints = 'one of: ' + ', '.join(choices)
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                             to_value=float(hi), step=0.0)]
        return d


P = ParamSpec
PARAMS = [
    # --- model (needs a cleanup/configure cycle: read-only) ---
    P('model_path', '', 'checkpoint directory or cached Hugging Face id; "" = the embedded default '
      'model; "fake:" = deterministic stand-in for tests/benchmarks', read_only=True),
    P('device', 'auto', 'auto (CUDA when available, else CPU with a warning) | cpu | cuda | cuda:N',
      read_only=True),
    P('backend', 'torch', 'torch | onnxruntime | openvino (the latter two run graphs written by '
      '`evf-sam export MODEL`, found in MODEL/onnx or at model_path itself)', read_only=True),
    P('dtype', 'auto', 'auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16', read_only=True),
    P('warmup', True, 'run one dummy inference at configure so the first frame is not slow',
      read_only=True),
    P('torch_threads', 0, 'CPU threads of the model (torch, or the onnxruntime/openvino backend); 0 = '
      'min(4, cores) for torch, the runtime default otherwise', read_only=True, range=(0, 256)),
    P('autostart', True, 'configure and activate right after start (else use the lifecycle services)',
      read_only=True),
    # --- inputs ---
    P('image_qos', 'sensor_data', 'QoS of image/depth/camera_info subscriptions: sensor_data '
      '(best effort) | reliable | best_effort | system_default', read_only=True),
    P('image_transport', 'raw', 'raw: subscribe <image> (sensor_msgs/Image); compressed: subscribe '
      '<image>/compressed (sensor_msgs/CompressedImage)', read_only=True),
    P('max_image_pixels', 40_000_000, 'largest accepted input image [pixels] (colour, depth and the '
      'decoded size of compressed images, checked before anything is allocated); larger frames are '
      'rejected with a warning', range=(1, 150_000_000)),
    P('frame_loss_warn', 0.2, 'warn (and report WARN in /diagnostics) when more than this share of '
      "the camera's frames never arrive (estimated from their stamps); 1 = never warn",
      range=(0.0, 1.0)),
    P('max_image_age', 0.5, 'frames older than this [s] since reception are never segmented; '
      '0 = no limit', range=(0.0, 3600.0)),
    P('depth_sync_tolerance', 0.05, 'max |stamp(depth) - stamp(image)| [s] for depth to be used; '
      '0 = use the latest depth regardless of stamp', range=(0.0, 10.0)),
    # --- prompts ---
    P('prompt_mode', 'spoken', 'spoken: the prompt topic carries speech-to-text transcripts, interpreted '
      '("pick up the red cube and the blue ball" -> 2 targets, "stop" clears, fillers and politeness '
      'dropped); raw: the text is the referring expressions themselves (";"-separated, "" clears)'),
    P('transcript_type', 'std_msgs/msg/String', 'message type of the prompt topic (any type with a string '
      'field, e.g. whisper_msgs/msg/Transcription)', read_only=True),
    P('transcript_field', 'data', 'string field of transcript_type holding the text (e.g. text for '
      'whisper_msgs/Transcription, final for hri_msgs/LiveSpeech)', read_only=True),
    P('min_confidence', 0.0, 'spoken mode: transcripts with a confidence field below this are ignored',
      range=(0.0, 1.0)),
    P('initial_prompts', '', 'active prompt set at start (same syntax as the prompt topic)',
      read_only=True),
    P('prompt_delimiter', ';', 'separator of several targets in one prompt string'),
    P('max_prompts', 8, 'maximum number of simultaneous targets', range=(1, 255)),
    P('max_prompt_chars', 1000, 'maximum characters of one prompt', range=(1, 100000)),
    # --- scheduling ---
    P('mode', 'continuous', 'continuous: segment the active prompts on each new frame (at most '
      'max_rate_hz); once: one result per prompt command'),
    P('max_rate_hz', 0.0, 'upper bound of the inference rate in continuous mode; 0 = as fast as '
      'frames and the model allow', range=(0.0, 1000.0)),
    # --- detection gating ---
    P('score_threshold', 0.5, 'minimum predicted IoU for a target to count as detected (SAM-2 scores '
      'are in [0, 1]; the SAM-1 IoU head is raw and can leave it slightly, hence -1 = any mask)',
      range=(-1.0, 1.0)),
    P('object_score_threshold', 0.0, 'SAM-2 checkpoints: minimum object-presence logit',
      range=(-100.0, 100.0)),
    P('min_mask_area', 50, 'minimum mask area [px] for a target to count as detected',
      range=(0, 100000000)),
    # --- 3D ---
    P('use_depth', True, 'compute 3D centroids when depth and camera_info arrive (depth only adds the '
      '3D part: a target without usable depth is still reported, with position_reason)'),
    P('depth_min', 0.1, 'valid depth lower bound [m]', range=(0.0, 1000.0)),
    P('depth_max', 10.0, 'valid depth upper bound [m]', range=(0.0, 1000.0)),
    P('mask_erosion_px', 3, 'erode masks by this many pixels before sampling depth',
      range=(0, 100)),
    P('min_depth_pixels', 10, 'minimum valid depth pixels in the eroded mask for a 3D centroid',
      range=(1, 100000000)),
    # --- outputs ---
    P('publish_mask', True, 'publish mask (mono8 label map)'),
    P('publish_centroid', True, 'publish centroid (first detected target with a 3D position)'),
    P('publish_markers', True, 'publish markers (sphere + text per located target)'),
    P('publish_overlay', True, 'publish overlay (bgr8) when someone subscribes'),
    P('overlay_max_rate_hz', 10.0, 'rate limit of overlay', range=(0.1, 1000.0)),
    P('marker_lifetime', 1.0, 'lifetime of markers [s]; 0 = forever', range=(0.0, 3600.0)),
    P('diagnostics_period', 1.0, 'period of /diagnostics [s]', read_only=True, range=(0.05, 60.0)),
]
PARAM_BY_NAME = {p.name: p for p in PARAMS}


def declare_all(node) -> None:
    """Declare every parameter. A bad override (wrong type, out of range) is not fatal: an int
    given for a float parameter is converted, anything else falls back to the default, with one
    clear warning each."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    for spec in PARAMS:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
            continue
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            override = getattr(node, '_parameter_overrides', {}).get(spec.name)
            given = getattr(override, 'value', None)
            problem = str(exc)
        value = spec.default
        if isinstance(spec.default, float) and isinstance(given, int) and \
                not isinstance(given, bool):
            value = float(given)
            lo, hi = spec.range or (-math.inf, math.inf)
            if not lo <= value <= hi:
                value = spec.default
        if value == spec.default:
            node.get_logger().warning(
                f'parameter {spec.name}={given!r} rejected ({problem}); using the default '
                f'{spec.default!r}. {spec.description}')
        node.declare_parameter(spec.name, value, spec.descriptor(), ignore_override=True)


def coerce(params) -> list:
    """rclpy pre-set hook: an integer given for a float parameter becomes that float (as at
    start-up), so ``ros2 param set /evf_sam max_rate_hz 5`` works like ``5.0``."""
    from rclpy.parameter import Parameter
    out = []
    for prm in params:
        spec = PARAM_BY_NAME.get(prm.name)
        if spec is not None and isinstance(spec.default, float) and prm.type_ == Parameter.Type.INTEGER:
            prm = Parameter(prm.name, Parameter.Type.DOUBLE, float(prm.value))
        out.append(prm)
    return out


def validate(name: str, value, current: dict) -> str | None:
    """Why ``name := value`` is rejected (given the other current values), or None if it is fine.

    Types and ranges are also enforced by rclpy from the descriptors; this adds choices and
    cross-parameter rules.
    """
    choices = CHOICES.get(name)
    if choices and value not in choices:
        return f"{name} must be one of {', '.join(choices)} (got '{value}')"
    if name == 'device':
        v = str(value)
        if not (v in ('auto', 'cpu', 'cuda') or (v.startswith('cuda:') and v[5:].isdigit())):
            return f"device must be auto, cpu, cuda or cuda:N (got '{v}')"
    if name == 'prompt_delimiter' and not value:
        return 'prompt_delimiter must not be empty'
    if isinstance(value, float) and not math.isfinite(value):
        return f'{name} must be finite'
    if name == 'depth_min' and value >= current.get('depth_max', math.inf):
        return f"depth_min ({value}) must be below depth_max ({current.get('depth_max')})"
    if name == 'depth_max' and value <= current.get('depth_min', 0.0):
        return f"depth_max ({value}) must be above depth_min ({current.get('depth_min')})"
    return None
