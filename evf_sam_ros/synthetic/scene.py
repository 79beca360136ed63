"""Synthetic tabletop scenes seen by a pinhole camera: RGB, aligned metric depth, masks, 3D centres.

The renderer is a small vectorised ray caster (numpy only). Every pixel casts one ray through the
camera model, so RGB, depth, the per-object visible masks and the intrinsics are exactly consistent:
back-projecting a ground-truth mask with the depth and the intrinsics gives the object's surface.

Frames:
* world: table plane ``z = 0``, ``x`` right, ``y`` away from the camera, ``z`` up (metres);
* camera: ROS optical frame (``x`` right, ``y`` down, ``z`` forward). ``depth`` is the optical ``z``
  (as a depth camera reports it), float32 metres, 0 where nothing is hit (never happens with the wall).

Each scene is a pure function of its seed and :class:`SceneConfig`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from evf_sam_ros.geometry import Intrinsics, project

__all__ = ['SHAPES', 'COLOURS', 'SIZES', 'SceneConfig', 'SceneObject', 'Scene',
           'generate_scene', 'surface_centroid']

SHAPES = ('cube', 'cylinder', 'ball', 'ring', 'pyramid')
# Saturated, well separated base colours (linear-ish RGB in [0, 1]); the table/wall palettes avoid them.
COLOURS: dict[str, tuple[float, float, float]] = {
    'red': (0.85, 0.08, 0.07),
    'green': (0.10, 0.65, 0.15),
    'blue': (0.08, 0.22, 0.85),
    'yellow': (0.95, 0.85, 0.08),
    'purple': (0.50, 0.12, 0.70),
    'orange': (0.98, 0.45, 0.05),
    'white': (0.93, 0.93, 0.93),
}
# Characteristic half-size (metres) per size class; the classes are far apart so "small"/"big" is clear.
SIZES: dict[str, tuple[float, float]] = {'small': (0.022, 0.030), 'big': (0.042, 0.052)}


@dataclass
class SceneConfig:
    width: int = 256
    height: int = 192
    hfov_deg: tuple[float, float] = (52.0, 62.0)
    min_objects: int = 3
    max_objects: int = 6
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    # Camera looks at a point near the table centre from this distance (m) and elevation (deg).
    distance: tuple[float, float] = (0.50, 0.66)
    elevation_deg: tuple[float, float] = (35.0, 58.0)
    yaw_deg: tuple[float, float] = (-12.0, 12.0)
    # Objects are placed in this world rectangle (m) around the look-at point.
    area_x: tuple[float, float] = (-0.20, 0.20)
    area_y: tuple[float, float] = (-0.11, 0.14)
    min_visible_fraction: float = 0.35   # reject layouts where an object is mostly hidden
    min_visible_pixels: int = 40
    noise_std: tuple[float, float] = (1.0, 5.0)   # uint8 Gaussian pixel noise
    depth_noise_std: float = 0.0          # metres, optional
    duplicate_prob: float = 0.35          # chance that a new object copies colour or shape of another


@dataclass
class SceneObject:
    index: int
    shape: str
    colour: str
    size: str                  # 'small' | 'big'
    half_size: float           # metres
    height: float              # metres
    base_world: np.ndarray     # (3,) base centre on the table
    yaw: float
    center_world: np.ndarray   # (3,) middle of the object (base + height/2)
    center_cam: np.ndarray     # (3,) same point in the camera optical frame
    pixel: tuple[float, float] = (0.0, 0.0)   # projection of the centre (u, v)
    visible_pixels: int = 0
    visible_fraction: float = 0.0


@dataclass
class Scene:
    seed: int
    rgb: np.ndarray            # (H,W,3) uint8
    depth: np.ndarray          # (H,W) float32 metres
    labels: np.ndarray         # (H,W) int16: object index, -1 = table/background
    intrinsics: Intrinsics
    objects: list[SceneObject]
    cam_to_world: np.ndarray   # (4,4)

    def mask(self, index: int | None) -> np.ndarray:
        """Ground-truth visible mask of one object; all False for ``None`` (expression with no match)."""
        if index is None:
            return np.zeros(self.labels.shape, bool)
        return self.labels == index


# ---- ray / primitive intersection (object-local frame: base centre at origin, z up) -----------

def _convex(o: np.ndarray, d: np.ndarray, normals: np.ndarray, offsets: np.ndarray):
    """Ray vs convex polyhedron {x : n_i.x <= h_i}. Returns entry t (inf = miss) and entry normal."""
    denom = d @ normals.T                      # (N,P)
    num = offsets[None, :] - o @ normals.T     # (N,P)
    with np.errstate(divide='ignore', invalid='ignore'):
        t = num / denom
    entering = denom < 0
    t_in = np.where(entering, t, -np.inf)
    t_out = np.where(denom > 0, t, np.inf)
    parallel_out = (denom == 0) & (num < 0)
    t_enter = t_in.max(1)
    t_exit = t_out.min(1)
    hit = (t_enter <= t_exit) & (t_enter > 0) & ~parallel_out.any(1)
    normal = normals[t_in.argmax(1)]
    return np.where(hit, t_enter, np.inf), normal


def _infinite_cylinder(o, d, radius):
    """Ray vs the infinite vertical cylinder x^2 + y^2 = r^2: (hit, t_in, t_out) per ray."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
    c = o[:, 0] ** 2 + o[:, 1] ** 2 - radius ** 2
    disc = b * b - 4 * a * c
    ok = (disc > 0) & (a > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0))
    a_safe = np.where(a > 1e-12, a, 1)
    return ok, np.where(ok, (-b - sq) / (2 * a_safe), np.inf), np.where(ok, (-b + sq) / (2 * a_safe), -np.inf)


def _cylinder(o, d, radius, z0, z1):
    """Ray vs vertical solid cylinder. Returns (t_enter, t_exit, normal at entry)."""
    ok, s0, s1 = _infinite_cylinder(o, d, radius)
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    za, zb = (z0 - o[:, 2]) / dz, (z1 - o[:, 2]) / dz
    zlo, zhi = np.minimum(za, zb), np.maximum(za, zb)
    t0, t1 = np.maximum(s0, zlo), np.minimum(s1, zhi)
    valid = ok & (t0 <= t1) & (t0 > 0)
    t0 = np.where(valid, t0, np.inf)
    p = o + d * np.where(valid, t0, 0)[:, None]
    side = s0 >= zlo
    n = np.zeros_like(o)
    n[:, 0] = np.where(side, p[:, 0] / radius, 0)
    n[:, 1] = np.where(side, p[:, 1] / radius, 0)
    n[:, 2] = np.where(side, 0, np.where(d[:, 2] < 0, 1.0, -1.0))
    return t0, np.where(valid, t1, -np.inf), n


def _sphere(o, d, radius, zc):
    oc = o - np.array([0, 0, zc])
    a = (d * d).sum(1)
    b = 2 * (oc * d).sum(1)
    c = (oc * oc).sum(1) - radius ** 2
    disc = b * b - 4 * a * c
    ok = disc > 0
    t = np.where(ok, (-b - np.sqrt(np.where(ok, disc, 0))) / (2 * a), np.inf)
    t = np.where(t > 0, t, np.inf)
    p = oc + d * np.where(np.isfinite(t), t, 0)[:, None]
    return t, p / radius


def _ring(o, d, outer, inner, height):
    """A flat washer lying on the table: outer cylinder minus the inner hole."""
    t0, t1, n = _cylinder(o, d, outer, 0.0, height)
    _, u0, u1 = _infinite_cylinder(o, d, inner)
    in_hole = (t0 > u0) & (t0 < u1)
    t_hit = np.where(in_hole, np.where(u1 < t1, u1, np.inf), t0)
    p = o + d * np.where(np.isfinite(t_hit), t_hit, 0)[:, None]
    n_in = np.stack([-p[:, 0] / inner, -p[:, 1] / inner, np.zeros(len(p))], 1)
    return t_hit, np.where(in_hole[:, None], n_in, n)


def _box_planes(hx, hy, hz):
    normals = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    offsets = np.array([hx, hx, hy, hy, 2 * hz, 0.0])
    return normals, offsets


def _pyramid_planes(a, h):
    # Square base [-a,a]^2 at z=0, apex at (0,0,h): side plane normal ~ (h, 0, a), offset h*a.
    s = math.hypot(h, a)
    normals = np.array([[h / s, 0, a / s], [-h / s, 0, a / s], [0, h / s, a / s], [0, -h / s, a / s], [0, 0, -1]])
    offsets = np.array([h * a / s] * 4 + [0.0])
    return normals, offsets


def _object_height(shape: str, a: float, rng: np.random.Generator) -> float:
    if shape == 'cube':
        return 2 * a * rng.uniform(0.9, 1.1)
    if shape == 'cylinder':
        return 2 * a * rng.uniform(1.1, 1.7)
    if shape == 'ball':
        return 2 * a
    if shape == 'ring':
        return a * rng.uniform(0.35, 0.5)
    return 2 * a * rng.uniform(0.9, 1.2)  # pyramid


def _intersect(obj: SceneObject, o: np.ndarray, d: np.ndarray, shape_params: dict):
    """Intersect world rays with one object; returns t (camera z depth) and world normals."""
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # local -> world
    ol = (o - obj.base_world) @ rot
    dl = d @ rot
    a, h = obj.half_size, obj.height
    if obj.shape == 'cube':
        t, n = _convex(ol, dl, *_box_planes(a * shape_params['ax'], a * shape_params['ay'], h / 2))
    elif obj.shape == 'pyramid':
        t, n = _convex(ol, dl, *_pyramid_planes(a, h))
    elif obj.shape == 'cylinder':
        t, _, n = _cylinder(ol, dl, a, 0.0, h)
    elif obj.shape == 'ball':
        t, n = _sphere(ol, dl, a, a)
    else:
        t, n = _ring(ol, dl, a * 1.25, a * 0.7, h)
    return t, n @ rot.T


# ---- textures --------------------------------------------------------------------------------

def _value_noise(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    """Smooth random field sampled at world coordinates (bilinear value noise on a coarse grid)."""
    n = 32
    grid = rng.random((n + 1, n + 1))
    grid[n, :], grid[:, n] = grid[0, :], grid[:, 0]   # periodic: no seam where the grid wraps
    gx = (x / scale) % n
    gy = (y / scale) % n
    i, j = np.minimum(gx.astype(int), n - 1), np.minimum(gy.astype(int), n - 1)
    fx, fy = gx - i, gy - j
    i1, j1 = i + 1, j + 1
    return ((1 - fx) * (1 - fy) * grid[j, i] + fx * (1 - fy) * grid[j, i1]
            + (1 - fx) * fy * grid[j1, i] + fx * fy * grid[j1, i1])


def _table_colour(rng, x, y):
    kind = rng.integers(3)
    base = np.array(rng.choice([[0.55, 0.38, 0.22], [0.42, 0.30, 0.20], [0.62, 0.55, 0.45],
                                [0.45, 0.45, 0.45], [0.70, 0.62, 0.50]])) * rng.uniform(0.85, 1.1)
    if kind == 0:      # wood grain: stripes along a random direction, warped by noise
        ang = rng.uniform(0, math.pi)
        u = x * math.cos(ang) + y * math.sin(ang)
        warp = _value_noise(rng, x, y, 0.05) * 0.03
        pattern = 0.5 + 0.5 * np.sin((u + warp) * rng.uniform(60, 140))
        shade = 0.8 + 0.25 * pattern
    elif kind == 1:    # tiles / checker
        sz = rng.uniform(0.04, 0.09)
        chk = ((np.floor(x / sz) + np.floor(y / sz)) % 2)
        shade = 0.82 + 0.22 * chk
    else:              # cloth: blotchy noise
        shade = 0.75 + 0.4 * _value_noise(rng, x, y, rng.uniform(0.01, 0.03))
    return base[None, :] * shade[:, None]


def _wall_colour(rng, x, z):
    base = np.array(rng.choice([[0.80, 0.80, 0.76], [0.60, 0.66, 0.70], [0.72, 0.68, 0.60],
                                [0.35, 0.35, 0.38], [0.55, 0.60, 0.52]]))
    shade = 0.8 + 0.3 * _value_noise(rng, x, z, rng.uniform(0.05, 0.2))
    return base[None, :] * shade[:, None]


# ---- scene sampling --------------------------------------------------------------------------

def _sample_attributes(rng: np.random.Generator, cfg: SceneConfig, n: int) -> list[tuple[str, str, str]]:
    attrs: list[tuple[str, str, str]] = []
    for _ in range(n):
        shape = str(rng.choice(cfg.shapes))
        colour = str(rng.choice(cfg.colours))
        if attrs and rng.random() < cfg.duplicate_prob:
            # Share colour or shape with an earlier object so size/position/relation words are needed.
            other = attrs[rng.integers(len(attrs))]
            if rng.random() < 0.5:
                shape = other[0]
            else:
                colour = other[1]
        size = 'small' if rng.random() < 0.5 else 'big'
        attrs.append((shape, colour, size))
    return attrs


def _camera(rng: np.random.Generator, cfg: SceneConfig):
    dist = rng.uniform(*cfg.distance)
    el = math.radians(rng.uniform(*cfg.elevation_deg))
    yaw = math.radians(rng.uniform(*cfg.yaw_deg))
    target = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.03), 0.0])
    pos = target + dist * np.array([math.sin(yaw) * math.cos(el), -math.cos(yaw) * math.cos(el), math.sin(el)])
    fwd = target - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd], 1)     # columns: camera axes in world
    hfov = math.radians(rng.uniform(*cfg.hfov_deg))
    f = cfg.width / 2 / math.tan(hfov / 2)
    intr = Intrinsics(fx=f, fy=f, cx=cfg.width / 2 + rng.uniform(-2, 2),
                      cy=cfg.height / 2 + rng.uniform(-2, 2), width=cfg.width, height=cfg.height)
    cam_to_world = np.eye(4)
    cam_to_world[:3, :3] = rot
    cam_to_world[:3, 3] = pos
    return intr, cam_to_world


def _place_objects(rng, cfg, attrs, cam_to_world, intr) -> list[SceneObject] | None:
    placed: list[SceneObject] = []
    world_to_cam = np.linalg.inv(cam_to_world)
    for shape, colour, size in attrs:
        a = rng.uniform(*SIZES[size])
        foot = a * (1.3 if shape == 'ring' else 1.45 if shape == 'cube' else 1.1)
        for _ in range(30):
            base = np.array([rng.uniform(*cfg.area_x), rng.uniform(*cfg.area_y), 0.0])
            if all(np.linalg.norm(base[:2] - p.base_world[:2]) > foot + p.half_size * 1.45 + 0.012 for p in placed):
                break
        else:
            return None
        h = _object_height(shape, a, rng)
        centre = base + np.array([0, 0, h / 2])
        cc = world_to_cam[:3, :3] @ centre + world_to_cam[:3, 3]
        uv = project(cc[0], cc[1], cc[2], intr)
        if not (4 < uv[0] < intr.width - 4 and 4 < uv[1] < intr.height - 4):
            return None
        placed.append(SceneObject(len(placed), shape, colour, size, a, h, base, rng.uniform(0, math.pi / 2),
                                  centre, cc, (float(uv[0]), float(uv[1]))))
    return placed


def _render(rng, cfg: SceneConfig, intr: Intrinsics, cam_to_world, objects, shape_params):
    H, W = intr.height, intr.width
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones((H, W))], -1)
    d = d_cam.reshape(-1, 3) @ cam_to_world[:3, :3].T    # world direction with unit optical z => t == depth
    o = np.broadcast_to(cam_to_world[:3, 3], d.shape)
    n_pix = H * W
    depth = np.full(n_pix, np.inf)
    labels = np.full(n_pix, -1, np.int16)
    normals = np.zeros((n_pix, 3))
    normals[:, 2] = 1.0
    # Background: the table plane z = 0 up to its far edge, then a wall.
    table_far = rng.uniform(0.25, 0.45)
    with np.errstate(divide='ignore', invalid='ignore'):
        t_table = np.where(d[:, 2] < 0, -o[:, 2] / d[:, 2], np.inf)
    y_hit = o[:, 1] + d[:, 1] * t_table
    t_table = np.where(y_hit <= table_far, t_table, np.inf)
    wall_y = table_far + rng.uniform(0.0, 0.3)
    with np.errstate(divide='ignore', invalid='ignore'):
        t_wall = np.where(d[:, 1] > 0, (wall_y - o[:, 1]) / d[:, 1], np.inf)
    is_table = t_table <= t_wall
    depth = np.minimum(t_table, t_wall)
    normals[~is_table] = [0.0, -1.0, 0.0]
    # Objects, each cast only over the pixel box of its bounding sphere.
    for obj in objects:
        r = max(obj.half_size * 1.3, obj.height) * 1.25
        cc = obj.center_cam
        rad_px = intr.fx * r / max(cc[2] - r, 0.05) + 3
        u0, u1 = int(max(0, obj.pixel[0] - rad_px)), int(min(W, obj.pixel[0] + rad_px + 1))
        v0, v1 = int(max(0, obj.pixel[1] - rad_px)), int(min(H, obj.pixel[1] + rad_px + 1))
        if u1 <= u0 or v1 <= v0:
            continue
        idx = (np.arange(v0, v1)[:, None] * W + np.arange(u0, u1)[None, :]).ravel()
        t, n = _intersect(obj, o[idx], d[idx], shape_params[obj.index])
        closer = t < depth[idx]
        sel = idx[closer]
        depth[sel] = t[closer]
        labels[sel] = obj.index
        normals[sel] = n[closer]
    p = o + d * np.where(np.isfinite(depth), depth, 0)[:, None]
    # Albedo per pixel.
    albedo = np.empty((n_pix, 3))
    tbl = is_table & (labels < 0)
    albedo[tbl] = _table_colour(rng, p[tbl, 0], p[tbl, 1])
    wall = ~is_table & (labels < 0)
    albedo[wall] = _wall_colour(rng, p[wall, 0], p[wall, 2])
    for obj in objects:
        m = labels == obj.index
        col = np.clip(np.array(COLOURS[obj.colour]) * rng.uniform(0.85, 1.1, 3), 0, 1)
        albedo[m] = col
    # Lighting: ambient + one directional light (+ a little specular on objects).
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.2), 1.0])
    light /= np.linalg.norm(light)
    lam = np.clip(normals @ light, 0, 1)
    ambient = rng.uniform(0.35, 0.55)
    intensity = rng.uniform(0.85, 1.15)
    img = albedo * (ambient + (1 - ambient) * lam)[:, None] * intensity
    view = -d / np.linalg.norm(d, axis=1, keepdims=True)
    half = light[None, :] + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = np.clip((normals * half).sum(1), 0, 1) ** 30 * 0.35 * (labels >= 0)
    img = img + spec[:, None]
    # Soft contact shadows: darken the table near each object's footprint, offset away from the light.
    for obj in objects:
        off = -light[:2] / max(light[2], 0.3) * obj.height * 0.5
        dist = np.linalg.norm(p[tbl, :2] - (obj.base_world[:2] + off), axis=1)
        rad = obj.half_size * 1.3
        img[tbl] *= (1 - 0.45 * np.clip(1 - (dist - rad * 0.6) / rad, 0, 1))[:, None]
    img = img.reshape(H, W, 3) * 255.0
    img += rng.normal(0, rng.uniform(*cfg.noise_std), img.shape)
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    depth = np.where(np.isfinite(depth), depth, 0).astype(np.float32).reshape(H, W)
    return rgb, depth, labels.reshape(H, W)


def _projected_area(obj: SceneObject, intr, cam_to_world, shape_params) -> int:
    """Unoccluded pixel count of one object alone (for the visible fraction)."""
    H, W = intr.height, intr.width
    r = max(obj.half_size * 1.3, obj.height) * 1.25
    rad_px = intr.fx * r / max(obj.center_cam[2] - r, 0.05) + 3
    u0, u1 = int(max(0, obj.pixel[0] - rad_px)), int(min(W, obj.pixel[0] + rad_px + 1))
    v0, v1 = int(max(0, obj.pixel[1] - rad_px)), int(min(H, obj.pixel[1] + rad_px + 1))
    v, u = np.mgrid[v0:v1, u0:u1]
    d_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], -1)
    d = d_cam.reshape(-1, 3) @ cam_to_world[:3, :3].T
    o = np.broadcast_to(cam_to_world[:3, 3], d.shape)
    t, _ = _intersect(obj, o, d, shape_params[obj.index])
    return int(np.isfinite(t).sum())


def generate_scene(seed: int, config: SceneConfig | None = None, **overrides) -> Scene:
    """Render one scene; deterministic in ``seed`` (and the config)."""
    cfg = dataclasses.replace(config or SceneConfig(), **overrides) if overrides else (config or SceneConfig())
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5CE7E]))
    for _attempt in range(50):
        intr, cam_to_world = _camera(rng, cfg)
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        attrs = _sample_attributes(rng, cfg, n)
        objects = _place_objects(rng, cfg, attrs, cam_to_world, intr)
        if objects is None:
            continue
        shape_params = {o.index: {'ax': rng.uniform(0.9, 1.1), 'ay': rng.uniform(0.9, 1.1)} for o in objects}
        render_rng = np.random.default_rng(rng.integers(1 << 62))
        rgb, depth, labels = _render(render_rng, cfg, intr, cam_to_world, objects, shape_params)
        ok = True
        for obj in objects:
            obj.visible_pixels = int((labels == obj.index).sum())
            full = _projected_area(obj, intr, cam_to_world, shape_params)
            obj.visible_fraction = obj.visible_pixels / max(full, 1)
            if obj.visible_pixels < cfg.min_visible_pixels * (cfg.width / 256) ** 2 or \
                    obj.visible_fraction < cfg.min_visible_fraction:
                ok = False
        if not ok:
            continue
        if cfg.depth_noise_std > 0:
            depth = depth + render_rng.normal(0, cfg.depth_noise_std, depth.shape).astype(np.float32) * (depth > 0)
        return Scene(int(seed), rgb, depth, labels, intr, objects, cam_to_world)
    raise RuntimeError(f'could not lay out a valid scene for seed {seed}')


def surface_centroid(scene: Scene, mask: np.ndarray) -> np.ndarray | None:
    """Mean camera-frame 3D point of the masked pixels (what a depth-based centroid can see)."""
    vs, us = np.nonzero(mask & (scene.depth > 0))
    if len(vs) == 0:
        return None
    z = scene.depth[vs, us].astype(np.float64)
    intr = scene.intrinsics
    x = (us - intr.cx) / intr.fx * z
    y = (vs - intr.cy) / intr.fy * z
    return np.array([x.mean(), y.mean(), z.mean()])

