"""Overlay drawing for people (RViz, CLI, demo): ROS-free, numpy + OpenCV.

Label k (1-based, the k-th prompt) always gets the same colour, so the overlay, the
label map and the markers agree.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

__all__ = ['PALETTE', 'label_color', 'draw_overlay']

# Distinct, colour-blind-friendly-ish RGB colours (Okabe-Ito first, then Tableau).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (148, 103, 189), (140, 86, 75), (188, 189, 34),
)


def label_color(label: int) -> tuple[int, int, int]:
    """RGB colour of label ``label`` (1-based); label 0 (background) is black."""
    if label <= 0:
        return (0, 0, 0)
    return PALETTE[(label - 1) % len(PALETTE)]


def draw_overlay(rgb: np.ndarray, masks: Sequence[np.ndarray | None], texts: Sequence[str] = (),
                 alpha: float = 0.5) -> np.ndarray:
    """Blend each mask onto ``rgb`` in its label colour, outline it and write its text.

    rgb: (H, W, 3) uint8 RGB. masks[k]: (H, W) bool for label k+1, or None (not detected).
    texts[k]: caption drawn at the mask's top-left corner (e.g. "1: the red cup 0.93").
    Returns a new (H, W, 3) uint8 RGB image.
    """
    out = rgb.astype(np.float32, copy=True)
    outlines = []
    for k, mask in enumerate(masks):
        if mask is None or not mask.any():
            continue
        color = np.array(label_color(k + 1), np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * color
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines.append((k, contours))
    out = out.round().astype(np.uint8)
    # Line and text sizes follow the image size so they stay readable at 320 px and at 1080p.
    thickness = max(1, round(min(rgb.shape[:2]) / 300))
    font_scale = max(0.35, min(rgb.shape[:2]) / 900)
    for k, contours in outlines:
        cv2.drawContours(out, contours, -1, label_color(k + 1), thickness)
        if k < len(texts) and texts[k]:
            x, y, _, _ = cv2.boundingRect(np.concatenate(contours))
            org = (x, max(y - 4, int(14 * font_scale / 0.5)))
            cv2.putText(out, texts[k], org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                        thickness + 2, cv2.LINE_AA)
            cv2.putText(out, texts[k], org, cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                        label_color(k + 1), thickness, cv2.LINE_AA)
    return out
