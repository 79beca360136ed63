"""Small helpers on boolean masks (numpy, pixel coordinates: x to the right, y down)."""
from __future__ import annotations

import numpy as np

__all__ = ['mask_area', 'mask_bbox', 'mask_centroid']


def _as_bool_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'expected a 2-D (H, W) mask, got shape {mask.shape}')
    return mask if mask.dtype == np.bool_ else mask != 0


def mask_area(mask: np.ndarray) -> int:
    """Number of foreground pixels."""
    return int(np.count_nonzero(_as_bool_mask(mask)))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight bounding box ``(x, y, w, h)`` of the foreground in pixels, or None for an empty mask.

    ``w``/``h`` count pixels, so a single foreground pixel at (x, y) gives ``(x, y, 1, 1)``.
    """
    mask = _as_bool_mask(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = int(rows[0]), int(rows[-1])
    x0, x1 = int(cols[0]), int(cols[-1])
    return x0, y0, x1 - x0 + 1, y1 - y0 + 1


def mask_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """Mean pixel position ``(cx, cy)`` of the foreground, or None for an empty mask."""
    mask = _as_bool_mask(mask)
    # Row/column marginals avoid materialising the coordinates of every foreground pixel.
    row_counts = mask.sum(axis=1, dtype=np.int64)
    total = int(row_counts.sum())
    if total == 0:
        return None
    col_counts = mask.sum(axis=0, dtype=np.int64)
    cy = float(np.dot(np.arange(mask.shape[0], dtype=np.float64), row_counts)) / total
    cx = float(np.dot(np.arange(mask.shape[1], dtype=np.float64), col_counts)) / total
    return cx, cy
