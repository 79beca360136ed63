"""evf_sam_ros.geometry: intrinsics, depth scale, erosion and the robust 3D centroid, checked
against analytic synthetic depth scenes (ray-traced disc and sphere in front of a tilted plane).

Stated error bounds (640x480, fx = fy = 525, object at ~1.2 m, 2 mm depth noise, 5 % holes,
2 % flying pixels, mask 3 px too large):
* flat disc (visible surface = the disc): |error| < 1 mm per axis (measured < 0.1 mm);
* sphere (r = 10 cm): within 1.5 cm of the centroid of the visible surface, z between the front
  of the sphere and its centre (measured: 4 mm in z, median vs mean of the cap).
"""
import math

import numpy as np
import pytest

from evf_sam_ros.geometry import (GeometryError, Intrinsics, backproject, centroid_3d,
                                  depth_scale_for_encoding, erode_mask, project)

K = Intrinsics(525.0, 525.0, 319.5, 239.5, 640, 480)
H, W = 480, 640


def _rays():
    v, u = np.mgrid[:H, :W].astype(np.float64)
    return (u - K.cx) / K.fx, (v - K.cy) / K.fy


def _background():
    """Tilted plane z = 2.0 + 0.3 x (ray: x = dx z)  ->  z = 2 / (1 - 0.3 dx)."""
    dx, _ = _rays()
    return 2.0 / (1.0 - 0.3 * dx)


def _disc_scene(center=(0.15, -0.05, 1.2), radius=0.08):
    dx, dy = _rays()
    cx, cy, cz = center
    x, y = dx * cz, dy * cz
    hit = (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2
    depth = np.where(hit, cz, _background())
    return depth, hit


def _sphere_scene(center=(0.15, -0.05, 1.2), radius=0.1):
    dx, dy = _rays()
    d = np.stack([dx, dy, np.ones_like(dx)], -1)
    c = np.array(center)
    a = (d * d).sum(-1)
    b = -2.0 * (d @ c)
    cc = c @ c - radius ** 2
    disc = b * b - 4 * a * cc
    hit = disc >= 0
    t = (-b - np.sqrt(np.where(hit, disc, 0.0))) / (2 * a)
    depth = np.where(hit, t, _background())   # d_z = 1, so t is z
    return depth, hit


def _corrupt(depth, mask, rng):
    """Noise, holes (NaN), flying pixels, and a segmentation 3 px too large."""
    import cv2
    d = depth + rng.normal(0.0, 0.002, depth.shape)
    holes = rng.random(depth.shape) < 0.05
    d[holes] = np.nan
    flying = rng.random(depth.shape) < 0.02
    d[flying] = rng.uniform(0.3, 4.0, flying.sum())
    big = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return d.astype(np.float32), big


def test_intrinsics_validation_and_projection():
    k = Intrinsics.from_k([500, 0, 320, 0, 510, 240, 0, 0, 1], 640, 480)
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320, 240)
    with pytest.raises(GeometryError, match='not calibrated'):
        Intrinsics.from_k([0.0] * 9)
    with pytest.raises(GeometryError, match='9 elements'):
        Intrinsics.from_k([1.0] * 4)
    with pytest.raises(GeometryError, match='finite'):
        Intrinsics(float('nan'), 1.0, 0.0, 0.0)
    x, y, z = backproject(420.0, 138.0, 2.0, k)
    assert (x, y, z) == pytest.approx((0.4, -0.4, 2.0))
    assert project(x, y, z, k) == pytest.approx((420.0, 138.0))
    half = k.scaled(320, 240)
    assert (half.fx, half.fy, half.width) == (250.0, 255.0, 320)
    assert half.cx == pytest.approx(159.75)


def test_depth_scale_by_encoding():
    assert depth_scale_for_encoding('16UC1') == 0.001
    assert depth_scale_for_encoding('32FC1') == 1.0
    with pytest.raises(GeometryError, match='16UC1'):
        depth_scale_for_encoding('mono8')


def test_erode_mask():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    e = erode_mask(m, 2)
    assert e.sum() == 36 and e[7:13, 7:13].all()
    assert erode_mask(m, 0).sum() == 100
    edge = np.ones((10, 10), bool)
    assert erode_mask(edge, 1).sum() == 64   # the image border counts as background


def test_flat_disc_exact_and_robust():
    depth, hit = _disc_scene()
    c = centroid_3d(hit, depth, K, erosion_px=0)
    assert c.ok and c.valid_ratio == 1.0
    # discrete disc: tight bound from pixel quantisation only
    assert c.position == pytest.approx((0.15, -0.05, 1.2), abs=1.5e-3)
    assert np.allclose(np.diag(c.covariance)[2], 0.0, atol=1e-12)
    rng = np.random.default_rng(0)
    noisy, big = _corrupt(depth, hit, rng)
    c = centroid_3d(big, noisy, K, erosion_px=3, depth_min=0.1, depth_max=10.0)
    assert c.ok
    err = np.abs(np.array(c.position) - (0.15, -0.05, 1.2))
    assert err.max() < 1e-3, err   # measured: < 0.1 mm
    assert 0.85 < c.valid_ratio < 0.97   # holes and out-of-range flying pixels
    # without erosion/outlier rejection the background leaking in would bias it: sanity check
    plain = np.nanmean(np.where(big, noisy, np.nan))
    assert abs(plain - 1.2) > 0.05


def test_sphere_against_visible_surface():
    center, r = (0.15, -0.05, 1.2), 0.1
    depth, hit = _sphere_scene(center, r)
    v, u = np.nonzero(hit)
    truth = np.array([a.mean() for a in backproject(u, v, depth[hit], K)])
    rng = np.random.default_rng(1)
    noisy, big = _corrupt(depth, hit, rng)
    c = centroid_3d(big, noisy, K, erosion_px=3, depth_min=0.1, depth_max=10.0)
    assert c.ok
    err = np.abs(np.array(c.position) - truth)
    assert err.max() < 0.015, (c.position, truth)
    assert center[2] - r <= c.position[2] <= center[2]
    sd = np.sqrt(np.diag(c.covariance))
    assert 0.01 < sd[0] < 0.1 and sd[2] < 0.05   # spread of the visible cap


def test_16uc1_millimetres_and_invalid_cases():
    depth, hit = _disc_scene()
    mm = np.round(depth * 1000).astype(np.uint16)
    c = centroid_3d(hit, mm, K, depth_scale=0.001, erosion_px=2)
    assert c.ok and c.position[2] == pytest.approx(1.2)
    zeros = np.zeros_like(mm)
    c = centroid_3d(hit, zeros, K, depth_scale=0.001)
    assert not c.ok and 'valid depth' in c.reason and c.valid_ratio == 0.0
    # out of [depth_min, depth_max]
    c = centroid_3d(hit, depth, K, depth_min=1.5, depth_max=3.0)
    assert not c.ok
    # too few valid pixels
    sparse = np.full_like(depth, np.nan)
    sparse[hit] = np.where(np.arange(hit.sum()) % 100 == 0, 1.2, np.nan)
    c = centroid_3d(hit, sparse, K, min_valid_px=1000)
    assert not c.ok and 'need 1000' in c.reason
    assert not centroid_3d(np.zeros_like(hit), depth, K).ok
    with pytest.raises(GeometryError, match='aligned'):
        centroid_3d(hit, depth[:10], K)
    # erosion that would remove everything falls back to the mask itself
    tiny = np.zeros_like(hit)
    tiny[240, 320] = True
    c = centroid_3d(tiny, depth, K, erosion_px=5)
    assert c.ok and c.n_mask == 1
    assert math.isfinite(c.position[0])


def test_large_mask_is_grid_sampled_without_loss_of_accuracy():
    depth, hit = _disc_scene(center=(0.02, 0.01, 0.5), radius=0.12)   # ~126 px radius
    c = centroid_3d(hit, depth, K, erosion_px=3, max_samples=5000)
    assert c.ok and c.n_mask < hit.sum() / 3    # sampled
    assert c.position == pytest.approx((0.02, 0.01, 0.5), abs=1e-3)
    full = centroid_3d(hit, depth, K, erosion_px=3, max_samples=0)
    assert full.n_mask > c.n_mask
    assert np.allclose(c.position, full.position, atol=1e-3)
