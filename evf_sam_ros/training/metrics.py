"""Referring-segmentation metrics as the EVF-SAM paper (and its eval.py) defines them.

* gIoU: mean over expressions of the per-expression IoU; an empty union (nothing predicted for an
  expression whose ground truth is empty, e.g. "no match") counts as IoU 1.
* cIoU: sum of intersections / sum of unions over all expressions (0 if every union is empty... then 1).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

__all__ = ['mask_iou', 'IoUAccumulator']


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    pred = np.asarray(pred, bool)
    gt = np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in shape')
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty."""
    inter, union = intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


@dataclass
class IoUAccumulator:
    """Collects per-expression intersection/union, optionally grouped by a kind label."""

    inter: list[int] = field(default_factory=list)
    union: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, pred: np.ndarray, gt: np.ndarray, kind: str = 'all') -> float:
        i, u = intersection_union(pred, gt)
        self.inter.append(i)
        self.union.append(u)
        self.kinds.append(kind)
        return 1.0 if u == 0 else i / u

    def __len__(self) -> int:
        return len(self.inter)

    @staticmethod
    def _scores(inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
        if len(inter) == 0:
            return {'gIoU': float('nan'), 'cIoU': float('nan'), 'n': 0}
        ious = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        ciou = float(inter.sum() / union.sum()) if union.sum() > 0 else 1.0
        return {'gIoU': float(ious.mean()), 'cIoU': ciou, 'n': int(len(inter))}

    def summary(self) -> dict[str, dict[str, float]]:
        """{'all': {...}, kind: {...}} with gIoU, cIoU and the number of expressions."""
        inter = np.asarray(self.inter, np.float64)
        union = np.asarray(self.union, np.float64)
        kinds = np.asarray(self.kinds)
        out = {'all': self._scores(inter, union)}
        groups: dict[str, list[int]] = defaultdict(list)
        for i, k in enumerate(self.kinds):
            groups[k].append(i)
        if set(groups) != {'all'}:
            for k in sorted(groups):
                sel = kinds == k
                out[k] = self._scores(inter[sel], union[sel])
        return out
