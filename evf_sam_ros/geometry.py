"""ROS-free 3D helpers: depth images, pinhole intrinsics and robust 3D centroids of masks.

Conventions (REP-103 optical frame, REP-118 depth):

* pixels: ``u`` to the right, ``v`` down; the 3D frame is the camera optical frame
  (x right, y down, z forward), in metres;
* depth ``16UC1`` is millimetres with 0 = invalid, ``32FC1`` is metres with NaN/inf/0 = invalid;
  the scale is chosen from the encoding, never from a user divisor;
* back-projection of pixel (u, v) with depth z: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.

Everything here is plain numpy (OpenCV only for the erosion), so it is testable without ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    'DEPTH_ENCODINGS',
    'Centroid3D',
    'GeometryError',
    'Intrinsics',
    'backproject',
    'centroid_3d',
    'depth_scale_for_encoding',
    'erode_mask',
    'project',
]

#: depth encoding -> (numpy dtype of the raw values, metres per raw unit); the only such table
DEPTH_ENCODINGS: dict[str, tuple[type, float]] = {
    '16UC1': (np.uint16, 0.001),
    'mono16': (np.uint16, 0.001),
    '32FC1': (np.float32, 1.0),
}

#: focal lengths outside this range [px] are not a calibrated camera (e.g. 1e-12 gives 3D
#: positions of 1e13 m); no real lens/sensor pair comes near either bound
FOCAL_RANGE_PX = (1.0, 1.0e6)


class GeometryError(ValueError):
    """Unusable geometric input (intrinsics, depth encoding); the message says what to do."""


def depth_scale_for_encoding(encoding: str) -> float:
    """Metres per raw depth unit for a ``sensor_msgs/Image`` depth encoding."""
    try:
        return DEPTH_ENCODINGS[encoding][1]
    except KeyError:
        raise GeometryError(
            f"depth encoding '{encoding}' is not supported: publish 16UC1 (millimetres) or "
            '32FC1 (metres), as REP-118 prescribes') from None


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (colour) image the masks live in (the numbers of a
    ``sensor_msgs/CameraInfo`` K matrix). Construction rejects values no calibrated camera has."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int = 0   # 0 = unknown
    height: int = 0

    def __post_init__(self):
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in vals):
            raise GeometryError(f'camera intrinsics are not finite (fx={self.fx}, fy={self.fy}, '
                                f'cx={self.cx}, cy={self.cy})')
        if self.fx <= 0.0 or self.fy <= 0.0:
            raise GeometryError(
                f'camera_info has zero or negative focal length (fx={self.fx}, fy={self.fy}): '
                'the camera is not calibrated; publish a calibrated camera_info (K matrix)')
        lo, hi = FOCAL_RANGE_PX
        if not (lo <= self.fx <= hi and lo <= self.fy <= hi):
            raise GeometryError(
                f'camera_info focal length fx={self.fx:g}, fy={self.fy:g} px is implausible (a '
                f'calibrated camera has {lo:g}..{hi:g} px): check the K matrix of the camera_info '
                '(units are pixels, row-major [fx 0 cx; 0 fy cy; 0 0 1])')

    @classmethod
    def from_k(cls, k, width: int = 0, height: int = 0) -> 'Intrinsics':
        """From the row-major 3x3 ``K`` of ``sensor_msgs/CameraInfo``."""
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise GeometryError(f'K must have 9 elements, got {k.size}')
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    @property
    def K(self) -> np.ndarray:
        """The 3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> 'Intrinsics':
        """The same camera at another resolution (e.g. a resized image)."""
        if not self.width or not self.height:
            return self
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, int(width), int(height))


def backproject(u, v, z, k: Intrinsics):
    """Pixel coordinates + depth [m] -> (x, y, z) in the optical frame (arrays broadcast)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return (u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z


def project(x, y, z, k: Intrinsics):
    """Optical-frame point(s) -> pixel coordinates (u, v)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return k.fx * x / z + k.cx, k.fy * y / z + k.cy


def erode_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Erode a boolean mask by ``radius_px`` pixels (square structuring element).

    Pixels outside the array count as background, so masks touching the border are eroded from
    it too (border depth is the least reliable). Returns a new boolean array.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    import cv2  # local: keep `import evf_sam_ros.geometry` cheap
    size = 2 * int(radius_px) + 1
    kernel = np.ones((size, size), np.uint8)
    out = cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


@dataclass
class Centroid3D:
    """Robust 3D centroid of a mask (optical frame, metres) and how much to trust it."""

    ok: bool
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: row-major 3x3 covariance [m^2] of the inlier 3D points (their spread); zeros = unknown
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    #: fraction of the (eroded) mask pixels that had a valid depth in [depth_min, depth_max]
    valid_ratio: float = 0.0
    n_valid: int = 0
    n_mask: int = 0
    #: why ``ok`` is False (empty when ok)
    reason: str = ''


def centroid_3d(mask: np.ndarray, depth: np.ndarray, intrinsics: Intrinsics, *,
                depth_scale: float = 1.0, erosion_px: int = 0, depth_min: float = 0.0,
                depth_max: float = math.inf, min_valid_px: int = 1,
                outlier_band_m: float = 0.02, bbox=None,
                max_samples: int = 20000) -> Centroid3D:
    """Robust 3D centroid of the pixels of ``mask`` using an aligned depth image.

    1. The mask is eroded by ``erosion_px`` (removes the edge pixels whose depth often belongs to
       the background); if erosion removes everything, the un-eroded mask is used.
    2. Valid depth: finite, non-zero, within ``depth_min``..``depth_max`` metres (raw values are
       multiplied by ``depth_scale``: 0.001 for 16UC1, 1 for 32FC1).
    3. ``z`` = median depth; inliers are the points within ``max(3 * 1.4826 * MAD, outlier_band_m)``
       of it (drops flying pixels and background leaking through the mask).
    4. The inlier pixels are back-projected; ``x``, ``y`` are their means, ``z`` the median.
       ``covariance`` is the covariance of the inlier points.

    ``depth`` must have the mask's shape (registered to the colour image).
    ``bbox`` (x, y, w, h) of the mask may be passed to avoid recomputing it. Masks whose box has
    more than ``2 * max_samples`` pixels are sampled on a regular pixel grid (0 = never) to bound
    the cost; ``n_mask``/``n_valid`` then count samples.
    """
    mask = np.asarray(mask)
    depth = np.asarray(depth)
    if mask.shape != depth.shape[:2]:
        raise GeometryError(f'depth is {depth.shape[1]}x{depth.shape[0]} but the mask is '
                            f'{mask.shape[1]}x{mask.shape[0]}: depth must be aligned to the colour '
                            'image (e.g. the camera\'s aligned_depth_to_color topic)')
    if bbox is None:
        from evf_sam_ros.masks import mask_bbox
        bbox = mask_bbox(mask)
    if bbox is None:
        return Centroid3D(False, reason='empty mask')
    x, y, w, h = bbox
    pad = int(max(erosion_px, 0)) + 1
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(mask.shape[1], x + w + pad), min(mask.shape[0], y + h + pad)
    m = mask[y0:y1, x0:x1]
    m = m if m.dtype == np.bool_ else m != 0
    if erosion_px > 0:
        eroded = erode_mask(m, erosion_px)
        if eroded.any():
            m = eroded
    dcrop = depth[y0:y1, x0:x1]
    stride = 1
    if max_samples and m.size > 2 * max_samples:
        # large masks: a regular pixel grid gives the same statistics at a bounded cost
        stride = int(math.ceil(math.sqrt(m.size / (2.0 * max_samples))))
        m, dcrop = m[::stride, ::stride], dcrop[::stride, ::stride]
    vs, us = np.nonzero(m)
    n_mask = int(us.size)
    if n_mask == 0:
        return Centroid3D(False, reason='empty mask')
    raw = dcrop[vs, us]
    if stride > 1:
        vs, us = vs * stride, us * stride
    z = raw.astype(np.float64) * float(depth_scale)
    valid = np.isfinite(z) & (z > 0.0) & (z >= depth_min) & (z <= depth_max)
    n_valid = int(np.count_nonzero(valid))
    ratio = n_valid / n_mask
    if n_valid < max(1, int(min_valid_px)):
        return Centroid3D(False, valid_ratio=ratio, n_valid=n_valid, n_mask=n_mask,
                          reason=f'{n_valid} of {n_mask} mask pixels have a valid depth in '
                                 f'[{depth_min:g}, {depth_max:g}] m (need {int(min_valid_px)})')
    z = z[valid]
    us = us[valid] + x0
    vs = vs[valid] + y0
    z_med = float(np.median(z))
    mad = float(np.median(np.abs(z - z_med)))
    band = max(3.0 * 1.4826 * mad, float(outlier_band_m))
    inl = np.abs(z - z_med) <= band
    z, us, vs = z[inl], us[inl], vs[inl]
    px, py, pz = backproject(us, vs, z, intrinsics)
    pos = (float(px.mean()), float(py.mean()), z_med)
    if pz.size >= 2:
        cov = np.cov(np.stack([px, py, pz]), bias=True)
    else:
        cov = np.zeros((3, 3))
    return Centroid3D(True, pos, cov, ratio, n_valid, n_mask)
