"""Datasets for training and evaluation: synthetic scenes, user folders, RefCOCO/+/g.

Every dataset yields :class:`Sample` objects: one RGB image with one or more referring expressions,
each with its ground-truth mask (all False when the expression matches nothing).

User data format (``--data user:DIR``)
--------------------------------------
A folder with ``annotations.jsonl``; one JSON object per line::

    {"image": "images/0001.jpg", "mask": "masks/0001_cup.png", "expressions": ["the red cup", "my mug"]}
    {"image": "images/0001.jpg", "mask": null, "expressions": ["the banana"]}        # no match: empty mask
    {"image": "images/0002.png", "mask": "masks/0002.png", "expressions": ["the box"], "split": "val"}

* paths are relative to DIR; images in any format Pillow reads (RGB, or converted to it);
* ``mask``: a PNG of the image's size, non-zero = object (``null`` = the expression matches nothing);
* optional ``mask_value``: take only pixels equal to this value (several objects in one label PNG);
* optional ``split`` (default ``"train"``); select with ``user:DIR:val``; several lines may share an image;
* optional ``kind``: a label for per-kind scores in the evaluation (default ``"user"``).

RefCOCO format (``--data refcoco:ROOT:refcoco|unc|val``)
--------------------------------------------------------
The layout of the EVF-SAM / LISA code: ``ROOT/refcoco/refs(unc).p`` + ``ROOT/refcoco/instances.json``
(also ``refcoco+/refs(unc).p``, ``refcocog/refs(umd).p``), and the COCO train2014 images under
``ROOT/images/mscoco/images/train2014`` (``ROOT/refer_seg`` may hold all of this). Each sentence of each
ref in the split is one expression; its mask is the ref's annotation (polygons or RLE) rasterised.
"""
from __future__ import annotations

import json
import pathlib
import pickle
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

__all__ = ['Expr', 'Sample', 'SyntheticDataset', 'UserDataset', 'RefCocoDataset', 'open_dataset',
           'rle_decode', 'polygons_to_mask', 'annotation_to_mask']


@dataclass
class Expr:
    text: str
    mask: np.ndarray        # (H,W) bool; all False = matches nothing
    kind: str = 'all'
    target: int | None = None   # synthetic: object index


@dataclass
class Sample:
    image: np.ndarray       # (H,W,3) uint8 RGB
    exprs: list[Expr]
    name: str = ''
    scene: object | None = None   # synthetic: the Scene (depth, intrinsics, 3D centres)


# ---- synthetic ---------------------------------------------------------------------------------

class SyntheticDataset:
    """Scenes ``seed_start .. seed_start+count-1``; expressions from the grammar, deterministic.

    ``per_kind``: expressions per kind per scene (evaluation); ``kinds``: which kinds to include.
    """

    def __init__(self, seed_start: int, count: int, scene_config=None, kinds: Sequence[str] | None = None,
                 per_kind: int = 1) -> None:
        from evf_sam_ros.synthetic.grammar import KINDS
        from evf_sam_ros.synthetic.scene import SceneConfig
        self.seed_start, self.count = int(seed_start), int(count)
        self.scene_config = scene_config or SceneConfig()
        self.kinds = tuple(kinds or KINDS)
        self.per_kind = per_kind

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Sample:
        from evf_sam_ros.synthetic.grammar import generate_expressions
        from evf_sam_ros.synthetic.scene import generate_scene
        if not 0 <= i < self.count:
            raise IndexError(i)
        seed = self.seed_start + i
        scene = generate_scene(seed, self.scene_config)
        exprs = [Expr(e.text, scene.mask(e.target), e.kind, e.target)
                 for e in generate_expressions(scene, kinds=self.kinds, per_kind=self.per_kind)]
        return Sample(scene.rgb, exprs, f'synthetic:{seed}', scene)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.count):
            yield self[i]


# ---- user folders ------------------------------------------------------------------------------

def _load_rgb(path: pathlib.Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


class UserDataset:
    """A folder with ``annotations.jsonl`` (format in the module docstring)."""

    def __init__(self, root: str | pathlib.Path, split: str | None = None) -> None:
        self.root = pathlib.Path(root)
        ann = self.root / 'annotations.jsonl'
        if not ann.is_file():
            raise FileNotFoundError(f'{ann} is missing (see evf_sam_ros.training.datasets for the format)')
        # Group lines by image so that one image is encoded once with all its expressions.
        groups: dict[str, list[dict]] = {}
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{ann}:{n}: not JSON: {e}') from None
            if 'image' not in rec or 'expressions' not in rec:
                raise ValueError(f'{ann}:{n}: needs "image" and "expressions"')
            if split is not None and rec.get('split', 'train') != split:
                continue
            groups.setdefault(rec['image'], []).append(rec)
        self.items = sorted(groups.items())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        from PIL import Image
        image_name, recs = self.items[i]
        image = _load_rgb(self.root / image_name)
        exprs = []
        for rec in recs:
            if rec.get('mask'):
                with Image.open(self.root / rec['mask']) as im:
                    m = np.asarray(im)
                if m.ndim == 3:
                    m = m[..., 0]
                mask = (m == rec['mask_value']) if 'mask_value' in rec else (m != 0)
                if mask.shape != image.shape[:2]:
                    raise ValueError(f'{rec["mask"]}: mask {mask.shape} does not match image {image.shape[:2]}')
            else:
                mask = np.zeros(image.shape[:2], bool)
            texts = rec['expressions']
            for t in [texts] if isinstance(texts, str) else texts:
                exprs.append(Expr(str(t), mask, rec.get('kind', 'user')))
        return Sample(image, exprs, image_name)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


# ---- COCO masks ----------------------------------------------------------------------------------

def _rle_string_to_counts(s: str | bytes) -> list[int]:
    """COCO's compressed RLE string (maskApi.c rleFrString) -> run lengths."""
    if isinstance(s, str):
        s = s.encode('ascii')
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)   # sign-extend
        if len(counts) > 2:
            x += counts[-2]          # counts after the second are stored as deltas
        counts.append(x)
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE (``{"size": [h, w], "counts": list | str}``) -> (h,w) bool mask (column-major runs)."""
    h, w = (int(v) for v in rle['size'])
    counts = rle['counts']
    if isinstance(counts, (str, bytes)):
        counts = _rle_string_to_counts(counts)
    flat = np.zeros(h * w, bool)
    pos = 0
    val = False
    for c in counts:
        if val:
            flat[pos:pos + c] = True
        pos += c
        val = not val
    return flat.reshape(w, h).T


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ([x1,y1,x2,y2,...] each) -> (h,w) bool mask (OpenCV fillPoly)."""
    import cv2
    canvas = np.zeros((height, width), np.uint8)
    pts = [np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32) for p in polygons if len(p) >= 6]
    if pts:
        cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def annotation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict):
        return rle_decode(segmentation)
    raise ValueError(f'unknown COCO segmentation type {type(segmentation).__name__}')


# ---- RefCOCO / RefCOCO+ / RefCOCOg -------------------------------------------------------------

_IMAGE_DIRS = ('images/mscoco/images/train2014', 'images/train2014', 'train2014', 'coco/train2014',
               'images/mscoco/train2014')


class RefCocoDataset:
    """``split_spec`` like ``refcoco|unc|val``, ``refcoco+|unc|testA``, ``refcocog|umd|test``."""

    def __init__(self, root: str | pathlib.Path, split_spec: str = 'refcoco|unc|val', lowercase: bool = True) -> None:
        root = pathlib.Path(root)
        if (root / 'refer_seg').is_dir():
            root = root / 'refer_seg'
        parts = split_spec.split('|')
        if len(parts) != 3:
            raise ValueError(f'split must look like "refcoco|unc|val", got {split_spec!r}')
        name, by, split = parts
        ds_dir = root / name
        refs_path = ds_dir / f'refs({by}).p'
        inst_path = ds_dir / 'instances.json'
        for p in (refs_path, inst_path):
            if not p.is_file():
                raise FileNotFoundError(f'{p} is missing (RefCOCO layout: ROOT/{name}/refs({by}).p + instances.json)')
        with open(refs_path, 'rb') as f:
            refs = pickle.load(f)
        inst = json.loads(inst_path.read_text())
        self.images = {im['id']: im for im in inst['images']}
        self.anns = {a['id']: a for a in inst['annotations']}
        self.image_dir = next((root / d for d in _IMAGE_DIRS if (root / d).is_dir()), root / _IMAGE_DIRS[0])
        self.lowercase = lowercase
        by_image: dict[int, list[dict]] = {}
        for ref in refs:
            if ref['split'] == split:
                by_image.setdefault(ref['image_id'], []).append(ref)
        self.items = sorted(by_image.items())
        self.split_spec = split_spec

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Sample:
        image_id, refs = self.items[i]
        info = self.images[image_id]
        image = _load_rgb(self.image_dir / info['file_name'])
        h, w = image.shape[:2]
        exprs = []
        for ref in refs:
            ann = self.anns[ref['ann_id']]
            mask = annotation_to_mask(ann['segmentation'], h, w)
            for sent in ref['sentences']:
                text = sent['sent'].strip()
                exprs.append(Expr(text.lower() if self.lowercase else text, mask, self.split_spec))
        return Sample(image, exprs, info['file_name'])

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


def open_dataset(spec: str, *, synthetic_seed: int = 1_000_000, synthetic_count: int = 200, scene_config=None,
                 per_kind: int = 1, default_split: str | None = None):
    """``synthetic`` | ``synthetic:SEED:COUNT`` | ``user:DIR[:SPLIT]`` | ``refcoco:ROOT[:name|by|split]``."""
    kind, _, rest = spec.partition(':')
    if kind == 'synthetic':
        seed, count = synthetic_seed, synthetic_count
        if rest:
            a, _, b = rest.partition(':')
            seed = int(a)
            count = int(b) if b else count
        return SyntheticDataset(seed, count, scene_config, per_kind=per_kind)
    if kind == 'user':
        path, split = rest, default_split
        # A trailing ":split" (not a Windows drive letter) selects the split.
        if ':' in rest and not pathlib.Path(rest).exists():
            path, _, split = rest.rpartition(':')
        return UserDataset(path, split)
    if kind == 'refcoco':
        # ROOT alone means RefCOCO (unc) with the default split (train for training, val for evaluation)
        path, split = rest, f'refcoco|unc|{default_split or "val"}'
        if ':' in rest:
            path, _, split = rest.partition(':')
        return RefCocoDataset(path, split)
    raise ValueError(f'unknown dataset {spec!r}: use synthetic[:SEED:COUNT], user:DIR[:SPLIT], refcoco:ROOT[:SPLIT]')


