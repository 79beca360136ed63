"""The ROS-free segmentation pipeline: one frame + prompts (+ optional depth and intrinsics) in, one
``FrameResult`` out. The node's worker, its ``segment`` service, the ``evf-sam`` CLI and the
evaluation tools all go through it, so gating and geometry exist once.

    pipeline = SegmentationPipeline(load_model(None))
    pipeline.check_prompts(['the red cube'])                 # the model's own tokenizer and limit
    result = pipeline.run(rgb, ['the red cube'], depth=lambda: (DepthFrame(d, 1.0), K, ''))
    result.targets[0].detected, result.targets[0].centroid3d, result.label_map()

Order of work for one frame: model (encode once, all prompts batched) -> 2D gating -> depth lookup
-> 3D centroids. Depth is fetched *after* the model ran (it is only needed for 3D, and by then the
camera's depth image for this frame has arrived), and depth never decides whether a target was
detected: a target without usable depth is reported with ``position_reason``.

Thread safety: ``run`` holds one lock around the model, so callers in several threads (the stream
worker and a service) never run the model concurrently. ``settings`` is an immutable snapshot that
``update_settings`` replaces whole, and ``run`` reads it once, so a frame never sees half an update.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from evf_sam_ros.errors import InvalidPromptError
from evf_sam_ros.geometry import Centroid3D, Intrinsics, centroid_3d
from evf_sam_ros.masks import mask_area, mask_bbox, mask_centroid

__all__ = ['DepthFrame', 'FrameResult', 'PipelineSettings', 'SegmentationPipeline', 'Target',
           'build_label_map', 'gate', 'mask_centroid_3d', 'overlay_bgr']

#: 32FC1 depth is metres: a median over this many "metres" inside masks is millimetres mislabelled
METRIC_DEPTH_SUSPICIOUS_M = 100.0


@dataclass(frozen=True)
class PipelineSettings:
    """Detection gating and 3D settings (the node's parameters of the same names)."""

    score_threshold: float = 0.5            # min predicted IoU of the chosen mask
    object_score_threshold: float = 0.0     # SAM-2 only: min object-presence logit
    min_mask_area: int = 50                 # px
    use_depth: bool = True
    mask_erosion_px: int = 3
    depth_min: float = 0.1                  # m
    depth_max: float = 10.0                 # m
    min_depth_pixels: int = 10


@dataclass(frozen=True)
class DepthFrame:
    """A depth image registered to the colour image: raw values and metres per raw unit."""

    image: np.ndarray   # (H, W) uint16 or float32
    scale: float        # 0.001 for 16UC1 (mm), 1.0 for 32FC1 (m)


#: called after inference: (depth or None, intrinsics or None, why there is none: '' if both given)
DepthSource = Callable[[], 'tuple[DepthFrame | None, Intrinsics | None, str]']


@dataclass
class Target:
    """Result for one prompt on one frame (what ``Segmentation.msg`` carries)."""

    prompt: str
    label: int                                      # 1-based, its value in the label map
    detected: bool
    score: float
    object_score: float | None = None
    bbox: tuple[int, int, int, int] | None = None   # x, y, w, h [px]
    centroid: tuple[float, float] | None = None     # [px]
    area: int = 0
    reason: str = ''                                # why not detected ('' when detected)
    centroid3d: Centroid3D | None = None
    position_reason: str = ''                       # why there is no 3D position ('' when there is)
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_position(self) -> bool:
        return self.centroid3d is not None and self.centroid3d.ok


@dataclass
class FrameResult:
    """All targets of one frame, with timings [s] and notes about the depth input."""

    image_shape: tuple[int, int]
    targets: list[Target]
    model_s: float = 0.0           # encode_s + segment_s
    encode_s: float = 0.0          # image encoder (on CUDA partly counted in segment_s: it is asynchronous)
    segment_s: float = 0.0         # all prompts, one batched pass
    geometry_s: float = 0.0
    depth_warning: str = ''        # e.g. a depth scale that looks wrong ('' = none)

    def label_map(self) -> np.ndarray:
        return build_label_map(self.image_shape, self.targets)

    @property
    def detected(self) -> list[Target]:
        return [t for t in self.targets if t.detected]


def gate(score: float, object_score: float | None, area: int, s: PipelineSettings,
         has_object_score: bool) -> str:
    """Why a model result does not count as detected, or '' if it does (2D evidence only)."""
    if not math.isfinite(score) or score < s.score_threshold:
        return f'score {score:.3f} < score_threshold {s.score_threshold:.3f}'
    if has_object_score and object_score is not None and object_score <= s.object_score_threshold:
        return f'object score {object_score:.3f} <= object_score_threshold {s.object_score_threshold:.3f}'
    if area < max(1, s.min_mask_area):
        return f'mask area {area} px < min_mask_area {s.min_mask_area}'
    return ''


class SegmentationPipeline:
    """A loaded predictor (``encode_image``/``segment``/``tokenize``) plus gating and geometry."""

    def __init__(self, predictor, settings: PipelineSettings | None = None, *,
                 prompt_cache_size: int = 64) -> None:
        self.predictor = predictor
        self._settings = settings or PipelineSettings()
        self.model_lock = threading.Lock()   # one model user at a time
        self._checked: collections.OrderedDict[tuple[str, ...], str] = collections.OrderedDict()
        self._cache_size = prompt_cache_size
        self._cache_lock = threading.Lock()

    # ---- settings and prompts ---------------------------------------------------------------
    @property
    def settings(self) -> PipelineSettings:
        return self._settings

    def update_settings(self, **changes) -> PipelineSettings:
        """Replace the settings snapshot (unknown names raise TypeError)."""
        self._settings = dataclasses.replace(self._settings, **changes)
        return self._settings

    @property
    def has_object_score(self) -> bool:
        return bool(getattr(self.predictor, 'has_object_score', False))

    def check_prompts(self, prompts: Sequence[str]) -> None:
        """Raise InvalidPromptError if the loaded model cannot take these prompts (its own tokenizer
        and text-token limit decide); the verdict per prompt set is cached."""
        key = tuple(prompts)
        predictor = self.predictor
        if not key or predictor is None:
            return
        with self._cache_lock:
            verdict = self._checked.get(key)
            if verdict is not None:
                self._checked.move_to_end(key)
        if verdict is None:
            try:
                predictor.tokenize(list(key))
                verdict = ''
            except InvalidPromptError as exc:
                verdict = str(exc)
            with self._cache_lock:
                self._checked[key] = verdict
                while len(self._checked) > self._cache_size:
                    self._checked.popitem(last=False)
        if verdict:
            raise InvalidPromptError(verdict)

    # ---- one frame ----------------------------------------------------------------------------
    def run(self, rgb: np.ndarray, prompts: Sequence[str], *, depth: DepthSource | None = None
            ) -> FrameResult:
        """Segment ``prompts`` on an HxWx3 uint8 RGB frame. ``depth`` is called after inference and
        returns (DepthFrame | None, Intrinsics | None, reason-if-missing)."""
        s = self._settings
        prompts = list(prompts)
        t0 = time.monotonic()
        with self.model_lock:
            predictor = self.predictor
            if predictor is None:
                raise RuntimeError('the model has been released (the node was cleaned up)')
            features = predictor.encode_image(rgb)
            t_enc = time.monotonic()
            results = predictor.segment(features, prompts)
        model_s = time.monotonic() - t0
        if len(results) != len(prompts):
            raise RuntimeError(f'the model returned {len(results)} results for {len(prompts)} prompts')
        targets = [self._target_2d(k, r, s) for k, r in enumerate(results, start=1)]
        out = FrameResult(tuple(rgb.shape[:2]), targets, model_s=model_s, encode_s=t_enc - t0,
                          segment_s=model_s - (t_enc - t0))
        t1 = time.monotonic()
        try:
            self._add_3d(out, s, depth)
        except Exception as exc:  # noqa: BLE001 - e.g. intrinsics that cannot be scaled: 2D stands
            for t in out.detected:
                t.centroid3d, t.position_reason = None, f'3D failed: {type(exc).__name__}: {exc}'
        out.geometry_s = time.monotonic() - t1
        return out

    def _target_2d(self, label: int, r, s: PipelineSettings) -> Target:
        mask = np.asarray(r.mask)
        if mask.dtype != np.bool_:
            mask = mask != 0
        obj = getattr(r, 'object_score', None)
        t = Target(prompt=r.prompt, label=label, detected=False, score=float(r.score),
                   object_score=None if obj is None else float(obj), mask=mask)
        t.bbox = mask_bbox(mask)
        if t.bbox is not None:
            x, y, w, h = t.bbox   # area and centroid on the box crop only
            crop = mask[y:y + h, x:x + w]
            t.area = mask_area(crop)
            cx, cy = mask_centroid(crop)
            t.centroid = (cx + x, cy + y)
        t.reason = gate(t.score, t.object_score, t.area, s, self.has_object_score)
        t.detected = not t.reason
        return t

    def _add_3d(self, out: FrameResult, s: PipelineSettings, depth: DepthSource | None) -> None:
        detected = out.detected
        if not detected:
            return
        if not s.use_depth:
            why = 'use_depth is false'
        elif depth is None:
            why = 'no depth for this image'
        else:
            frame, intrinsics, why = depth()
            if frame is not None and intrinsics is not None:
                self._centroids(out, detected, frame, intrinsics, s)
                return
            why = why or 'no depth image or camera_info'
        for t in detected:
            t.position_reason = why

    @staticmethod
    def _centroids(out: FrameResult, detected, frame: DepthFrame, k: Intrinsics,
                   s: PipelineSettings) -> None:
        h, w = out.image_shape
        if frame.image.shape != (h, w):
            why = (f'depth is {frame.image.shape[1]}x{frame.image.shape[0]} but the image is {w}x{h}: '
                   "depth must be registered to the colour image (the camera's aligned_depth_to_color "
                   'topic or depth_image_proc/register)')
            for t in detected:
                t.position_reason = why
            return
        if k.width and k.height and (k.width, k.height) != (w, h):
            k = k.scaled(w, h)
        for t in detected:
            c3 = mask_centroid_3d(t.mask, frame, k, s, bbox=t.bbox)
            t.centroid3d = c3
            t.position_reason = '' if c3.ok else f'no valid depth: {c3.reason}'
            if not c3.ok and frame.scale == 1.0 and not out.depth_warning:
                out.depth_warning = _metric_depth_warning(t.mask, frame.image)


def mask_centroid_3d(mask: np.ndarray, frame: DepthFrame, k: Intrinsics, s: PipelineSettings,
                     bbox=None) -> Centroid3D:
    """The robust 3D centroid of a mask with these settings (the node's, and the evaluation's)."""
    return centroid_3d(mask, frame.image, k, depth_scale=frame.scale, erosion_px=s.mask_erosion_px,
                       depth_min=s.depth_min, depth_max=s.depth_max, min_valid_px=s.min_depth_pixels, bbox=bbox)


def _metric_depth_warning(mask: np.ndarray, depth: np.ndarray) -> str:
    """A warning when 32FC1 'metres' inside a mask look like millimetres."""
    vals = depth[mask]
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return ''
    med = float(np.median(vals))
    if med < METRIC_DEPTH_SUSPICIOUS_M:
        return ''
    return (f'32FC1 depth inside the mask has a median of {med:.0f}, i.e. {med:.0f} m: 32FC1 depth '
            'must be metres (REP-118); this looks like millimetres. Publish 16UC1 millimetres or '
            'divide by 1000 in the driver')


def build_label_map(shape, targets) -> np.ndarray:
    """mono8 label map: 0 = background, ``t.label`` where the mask of a *detected* target is set.

    Where masks overlap, the lower label (the earlier prompt) wins.
    """
    out = np.zeros(shape[:2], dtype=np.uint8)
    for t in reversed(list(targets)):
        if not t.detected or t.mask is None or t.bbox is None:
            continue
        x, y, w, h = t.bbox
        roi = out[y:y + h, x:x + w]
        roi[t.mask[y:y + h, x:x + w]] = min(int(t.label), 255)
    return out


def overlay_bgr(rgb: np.ndarray, targets) -> np.ndarray:
    """bgr8 overlay for RViz: detected masks in their label colour with "k: prompt score" captions
    (drawing by ``evf_sam_ros.visualization``, shared with the CLI and the demo)."""
    from evf_sam_ros.visualization import draw_overlay
    masks, texts = [], []
    for t in targets:
        masks.append(t.mask if t.detected else None)
        text = f'{t.label}: {t.prompt[:40]} {t.score:.2f}'
        if t.has_position:
            text += f' z={t.centroid3d.position[2]:.2f}m'
        texts.append(text)
    return np.ascontiguousarray(draw_overlay(rgb, masks, texts)[..., ::-1])
