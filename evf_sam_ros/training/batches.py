"""Training batches: the endless stream of preprocessed images with their expressions and target masks
(synthetic scenes with a curriculum over expression kinds, or a dataset), and the target conversions."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from evf_sam_ros.synthetic.splits import VAL_SEED

from .objectives import AttributeProbe

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = ['ImageStream', 'mask_to_sam_frame', 'mask_to_beit3_grid', 'kind_weights', 'open_source', 'collate']

def mask_to_sam_frame(mask: np.ndarray, info, out_size: int | None = None) -> np.ndarray:
    """Ground-truth mask (H,W) -> soft target (S,S) float32 in the SAM input frame (resize + pad),
    optionally area-resampled to ``out_size`` (the loss resolution)."""
    import cv2
    S = info.input_size
    h, w = info.resized_size
    m = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = np.zeros((S, S), np.float32)
    out[:h, :w] = m
    if out_size and out_size != S:
        out = cv2.resize(out, (out_size, out_size), interpolation=cv2.INTER_AREA)
    return out


def mask_to_beit3_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    """[H, W] mask -> [grid, grid] float32: its share of each BEiT-3 patch (BEiT-3 sees the whole image
    squashed to a square)."""
    import cv2
    return cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)


def kind_weights(curriculum: list, progress: float) -> dict[str, float]:
    current = curriculum[0][1]
    for start, weights in curriculum:
        if progress >= start:
            current = weights
    return current


class ImageStream(torch.utils.data.IterableDataset):
    """Endless preprocessed training images, each with ``prompts_per_image`` expressions."""

    def __init__(self, cfg: TrainConfig, model_cfg, progress) -> None:
        super().__init__()
        # progress: a multiprocessing.Value the training loop updates (the curriculum follows it).
        self.cfg, self.model_cfg, self.progress = cfg, model_cfg, progress

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        torch.set_num_threads(1)
        rng = np.random.default_rng([self.cfg.seed, int(self.progress.value * 1e6), wid, nw])
        source = None if self.cfg.data == 'synthetic' else open_source(self.cfg.data, 'train')
        while True:
            if source is None:
                yield self._synthetic(rng, self.progress.value)
            else:
                yield self._from_dataset(rng, source)

    def _prepare(self, image: np.ndarray, texts: list[str], masks: list[np.ndarray], kinds: list[str],
                 attribute_masks: list[np.ndarray] | None = None) -> dict:
        from evf_sam_ros.model.preprocessing import beit3_pixel_values, sam_pixel_values
        mc = self.model_cfg
        sam_px, info = sam_pixel_values(image, mc.behaviour.sam_resize, mc.sam_image_size)
        beit = beit3_pixel_values(image, mc.beit3.img_size)
        target = np.stack([mask_to_sam_frame(m, info, self.cfg.loss_size or mc.sam_image_size) for m in masks])
        grid = mc.beit3.img_size // mc.beit3.patch_size
        item = dict(sam=sam_px[0], beit=beit[0], target=torch.from_numpy(target), texts=texts, kinds=kinds)
        if self.cfg.referent_aux_weight > 0:   # the target's share of each BEiT-3 patch
            item['patches'] = torch.from_numpy(np.stack([mask_to_beit3_grid(m, grid) for m in masks]))
        if attribute_masks is not None:   # [A] class masks -> their share of each SAM embedding / BEiT-3 cell
            emb = mc.image_embedding_size
            item['sam_attributes'] = torch.from_numpy(np.stack([mask_to_sam_frame(m, info, emb) for m in attribute_masks]))
            item['beit_attributes'] = torch.from_numpy(np.stack([mask_to_beit3_grid(m, grid) for m in attribute_masks]))
        return item

    def _synthetic(self, rng: np.random.Generator, progress: float) -> dict:
        from evf_sam_ros.synthetic.grammar import sample_expression
        from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene
        scene = generate_scene(int(rng.integers(VAL_SEED)), SceneConfig(**self.cfg.scene))
        weights = kind_weights(self.cfg.curriculum, progress)
        names = list(weights)
        p = np.array([weights[k] for k in names], np.float64)
        p /= p.sum()
        texts, masks, kinds = [], [], []
        while len(texts) < self.cfg.prompts_per_image:
            e = None
            for _ in range(6):
                e = sample_expression(rng, scene, names[rng.choice(len(names), p=p)])
                if e is not None:
                    break
            if e is None:
                e = sample_expression(rng, scene, 'no_match')
            texts.append(e.text)
            masks.append(scene.mask(e.target))
            kinds.append(e.kind)
        attributes = AttributeProbe.class_masks(scene) if self.cfg.attribute_aux_weight > 0 else None
        return self._prepare(scene.rgb, texts, masks, kinds, attributes)

    def _from_dataset(self, rng: np.random.Generator, source) -> dict:
        for _ in range(100):
            sample = source[int(rng.integers(len(source)))]
            if sample.exprs:
                break
        else:
            raise RuntimeError('the training data has no expressions')
        idx = rng.choice(len(sample.exprs), self.cfg.prompts_per_image, replace=len(sample.exprs) < self.cfg.prompts_per_image)
        ex = [sample.exprs[i] for i in idx]
        return self._prepare(sample.image, [e.text for e in ex], [e.mask for e in ex], [e.kind for e in ex])


def open_source(spec: str, split: str | None):
    from .datasets import open_dataset
    return open_dataset(spec, default_split=split)


def collate(items: list[dict]) -> list[dict]:
    return items
