"""ROS-free post-processing used by the node: prompt commands, detection gating, label maps,
overlays and rate/latency statistics. Plain numpy (OpenCV for drawing only).
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from evf_sam_ros.geometry import Centroid3D, Intrinsics, centroid_3d

__all__ = [
    'PromptError',
    'RateMeter',
    'RollingStats',
    'Target',
    'build_label_map',
    'evaluate_targets',
    'overlay_bgr',
    'parse_prompt_command',
    'validate_prompts',
]

SEMANTIC_PREFIX = '[semantic]'


class PromptError(ValueError):
    """A prompt command that is rejected (the active prompt set is left unchanged)."""


def validate_prompts(prompts, *, max_prompts: int, max_chars: int) -> list[str]:
    """Strip and check a list of prompts; raises PromptError with a message saying what to do."""
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise PromptError(f'prompt {i + 1} is not a string')
        p = p.strip()
        if not p:
            raise PromptError(f'prompt {i + 1} is empty or whitespace; remove it')
        body = p[len(SEMANTIC_PREFIX):].strip() if p.lower().startswith(SEMANTIC_PREFIX) else p
        if not body:
            raise PromptError(f"prompt {i + 1} is only the '{SEMANTIC_PREFIX}' prefix; add the "
                              "class after it, e.g. '[semantic] table'")
        if len(p) > max_chars:
            raise PromptError(f'prompt {i + 1} has {len(p)} characters, more than max_prompt_chars='
                              f'{max_chars}; shorten it (the text encoder accepts at most 1022 tokens)')
        out.append(p)
    if len(out) > max_prompts:
        raise PromptError(f'{len(out)} prompts, more than max_prompts={max_prompts}; send fewer '
                          'targets or raise max_prompts (at most 255: labels are mono8)')
    return out


def parse_prompt_command(text: str, *, delimiter: str = ';', max_prompts: int = 8,
                         max_chars: int = 1000) -> list[str]:
    """Parse a ``prompt`` topic string into the new active prompt set.

    * ``""`` clears the set (returns ``[]``);
    * targets are separated by ``delimiter``; empty pieces (``"a;;b"``, a trailing ``;``) are ignored;
    * a ``[semantic] `` prefix is kept (multitask checkpoints interpret it);
    * a string of only whitespace/delimiters, a too long prompt or too many prompts raise
      ``PromptError`` (the caller keeps the previous set).
    """
    if text is None or text == '':
        return []
    if not delimiter:
        raise PromptError('prompt_delimiter is empty')
    pieces = [p.strip() for p in text.split(delimiter)]
    pieces = [p for p in pieces if p]
    if not pieces:
        raise PromptError(f'the prompt {text!r} contains only whitespace/delimiters; publish an '
                          'empty string to clear the prompts')
    return validate_prompts(pieces, max_prompts=max_prompts, max_chars=max_chars)


@dataclass
class Target:
    """Result for one active prompt on one frame (what ``Segmentation.msg`` carries)."""

    prompt: str
    label: int
    detected: bool
    score: float
    object_score: float | None = None
    bbox: tuple[int, int, int, int] | None = None   # x, y, w, h
    centroid: tuple[float, float] | None = None     # pixels
    area: int = 0
    centroid3d: Centroid3D | None = None
    reason: str = ''                                # why not detected / no position
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_position(self) -> bool:
        return self.centroid3d is not None and self.centroid3d.ok


def evaluate_targets(results, *, score_threshold: float, min_mask_area: int,
                     object_score_threshold: float | None = 0.0, depth: np.ndarray | None = None,
                     depth_scale: float = 1.0, intrinsics: Intrinsics | None = None,
                     use_depth: bool = True, erosion_px: int = 0, depth_min: float = 0.0,
                     depth_max: float = math.inf, min_depth_px: int = 1) -> list[Target]:
    """Gate the model results (one per prompt, in label order) and compute 2D/3D geometry.

    ``detected`` = score >= score_threshold, object score (when the model has one and
    ``object_score_threshold`` is not None) > threshold, area >= min_mask_area, and, when depth and
    intrinsics are given and ``use_depth``, a valid 3D centroid.
    """
    from evf_sam_ros.model.masks import mask_area, mask_bbox, mask_centroid

    targets = []
    with_depth = use_depth and depth is not None and intrinsics is not None
    for k, r in enumerate(results, start=1):
        mask = np.asarray(r.mask)
        if mask.dtype != np.bool_:
            mask = mask != 0
        score = float(r.score)
        obj = getattr(r, 'object_score', None)
        obj = None if obj is None else float(obj)
        t = Target(prompt=r.prompt, label=k, detected=False, score=score, object_score=obj,
                   mask=mask)
        bbox = mask_bbox(mask)
        if bbox is not None:
            # area and centroid on the box crop only (the full-frame scan is done once, by bbox)
            x, y, w, h = bbox
            crop = mask[y:y + h, x:x + w]
            t.bbox = bbox
            t.area = mask_area(crop)
            cx, cy = mask_centroid(crop)
            t.centroid = (cx + x, cy + y)
        if not math.isfinite(score) or score < score_threshold:
            t.reason = f'score {score:.3f} < score_threshold {score_threshold:.3f}'
        elif obj is not None and object_score_threshold is not None and obj <= object_score_threshold:
            t.reason = f'object score {obj:.3f} <= object_score_threshold {object_score_threshold:.3f}'
        elif t.area < max(1, min_mask_area):
            t.reason = f'mask area {t.area} px < min_mask_area {min_mask_area}'
        else:
            t.detected = True
        if t.detected and with_depth:
            c3 = centroid_3d(mask, depth, intrinsics, depth_scale=depth_scale, erosion_px=erosion_px,
                             depth_min=depth_min, depth_max=depth_max, min_valid_px=min_depth_px,
                             bbox=bbox)
            t.centroid3d = c3
            if not c3.ok:
                t.detected = False
                t.reason = f'no valid depth: {c3.reason}'
        targets.append(t)
    return targets


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
