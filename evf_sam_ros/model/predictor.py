"""Inference API shaped for the ROS node: encode a frame once, segment many prompts against it.

    predictor = load_model("YxZhang/evf-sam2", device="cuda", dtype="fp16")
    features = predictor.encode_image(rgb)                  # SAM image encoder + BEiT-3 input, once per frame
    results = predictor.segment(features, ["the red cup", "the robot gripper"])
    results[0].mask, results[0].score

``segment`` runs one batched BEiT-3 pass (prompts right-padded; padding only touches text tokens) and one
batched mask-decoder pass for all prompts, selects one mask per prompt by the checkpoint's rule, and
resizes all selected logits to the original size in one interpolate call on the device.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from .config import EvfSamConfig
from ..errors import EvfSamOutOfMemoryError, InvalidImageError
from ..masks import mask_area, mask_bbox, mask_centroid
from .modeling import DecoderOutput, EvfSamModel, SamImageEmbeddings, SelectedMasks, select_masks
from .preprocessing import (SamResizeInfo, beit3_pixel_values, longest_side_size, postprocess_logits, sam_pixel_values,
                            validate_rgb_image)
from .tokenizer import tokenize_prompts

__all__ = ['EvfSamPredictor', 'ImageFeatures', 'SegmentationResult']


@dataclass
class ImageFeatures:
    """Everything of a frame that does not depend on the prompt (cache it per frame)."""

    sam_embeddings: SamImageEmbeddings  # SAM-1: [1, C, h, w]; SAM-2: [s0, s1, emb]
    beit3_pixel_values: torch.Tensor  # [1, 3, 224, 224] in the model dtype
    resize: SamResizeInfo
    sam_pixel_values: torch.Tensor | None = None  # kept only when asked for (debugging)

    @property
    def original_size(self) -> tuple[int, int]:
        return self.resize.original_size

    @property
    def device(self) -> torch.device:
        return self.beit3_pixel_values.device


@dataclass
class SegmentationResult:
    """One prompt's mask at the original image resolution."""

    prompt: str
    mask: np.ndarray  # (H, W) bool
    score: float  # predicted IoU of the chosen mask (SAM-1: raw IoU head, may leave [0, 1]; SAM-2: sigmoid)
    object_score: float | None  # SAM-2 object-presence logit (> 0: object present); None for SAM-1
    token_index: int  # kept mask token, 0..3
    low_res_logits: np.ndarray | None = field(default=None, repr=False)  # (h, w) float32 when requested
    stability_score: float | None = None  # token-0 stability (stability rule only)

    @property
    def area(self) -> int:
        return mask_area(self.mask)

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        return mask_bbox(self.mask)

    @property
    def centroid(self) -> tuple[float, float] | None:
        return mask_centroid(self.mask)


@contextlib.contextmanager
def _oom_guard(what: str) -> Iterator[None]:
    try:
        yield
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise EvfSamOutOfMemoryError(
            f'out of GPU memory during {what}: {exc}. Load the model with dtype="fp16" (or "bf16"), segment fewer '
            'prompts per call (segment(..., batch_size=N)), use smaller images, or free GPU memory used by other '
            'processes.') from exc


class EvfSamPredictor:
    """A loaded EVF-SAM model with its tokenizer, ready for frames and prompts."""

    backend = 'torch'

    def __init__(self, model: EvfSamModel | None, tokenizer, *, device: torch.device, dtype: torch.dtype,
                 name: str = '', is_default_model: bool = False, config: EvfSamConfig | None = None) -> None:
        self.model = model.eval() if model is not None else None  # None for the exported-graph backends
        self.tokenizer = tokenizer
        self.config: EvfSamConfig = model.config if model is not None else config
        self.device = torch.device(device)
        self.dtype = dtype
        self.name = name
        self.is_default_model = is_default_model
        self._dense_pe: torch.Tensor | None = None
        # transformers' fast tokenizers switch padding state per call: not safe to share across threads
        self._tokenize_lock = threading.Lock()

    # ---- info --------------------------------------------------------------------------------
    @property
    def has_object_score(self) -> bool:
        return self.config.is_sam2

    @property
    def behaviour(self):
        return self.config.behaviour

    def __repr__(self) -> str:
        b = self.config.behaviour
        return (f'{type(self).__name__}({self.name!r}, {self.config.architecture_name}, backend={self.backend}, '
                f'device={self.device}, '
                f'dtype={self.dtype}, resize={b.sam_resize}, selection={b.mask_selection}, multitask={b.multitask})')

    def dense_positional_embedding(self) -> torch.Tensor:
        if self._dense_pe is None:
            with torch.inference_mode():
                self._dense_pe = self.model.dense_positional_embedding().to(self.dtype)
        return self._dense_pe

    # ---- prompts -----------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids [B, T], attention_mask [B, T])`` on the model device, right-padded with id 1.
        Raises InvalidPromptError for a prompt this model cannot take (e.g. over its text-token limit).
        Thread-safe."""
        with self._tokenize_lock:
            return tokenize_prompts(self.tokenizer, prompts, self.config.beit3.max_text_tokens, self.device)

    # ---- images ------------------------------------------------------------------------------
    def encode_image(self, rgb: np.ndarray, *, keep_sam_input: bool = False) -> ImageFeatures:
        """Run the SAM image encoder and prepare the BEiT-3 input for an HxWx3 uint8 RGB frame."""
        rgb = validate_rgb_image(rgb)
        height, width = rgb.shape[:2]
        if min(longest_side_size(height, width, self.config.sam_image_size)) < 1:
            raise InvalidImageError(
                f'the image is {width}x{height}: scaled to the model input ({self.config.sam_image_size} px on the '
                'longest side) its short side would be 0 px; crop or pad it to a less extreme aspect ratio')
        with _oom_guard('encode_image'), torch.inference_mode():
            beit = beit3_pixel_values(rgb, self.config.beit3.img_size, self.device).to(self.dtype)
            sam_input, info = sam_pixel_values(rgb, self.config.behaviour.sam_resize, self.config.sam_image_size,
                                               self.device)
            embeddings = self._run_sam_encoder(sam_input)
        return ImageFeatures(embeddings, beit, info, sam_input if keep_sam_input else None)

    # ---- segmentation ------------------------------------------------------------------------
    def segment(self, features: ImageFeatures, prompts: Sequence[str], *, batch_size: int | None = None,
                return_logits: bool = False) -> list[SegmentationResult]:
        """One result per prompt, in order. ``batch_size`` caps prompts per pass (memory); default: all."""
        input_ids, attention_mask = self.tokenize(prompts)  # validates every prompt first
        prompts = list(prompts)
        if not prompts:
            return []
        if not isinstance(features, ImageFeatures):
            raise TypeError('segment() needs the ImageFeatures returned by encode_image(), got '
                            f'{type(features).__name__}')
        same_device = (features.device.type == self.device.type
                       and (features.device.index or 0) == (self.device.index or 0))
        if not same_device or features.beit3_pixel_values.dtype != self.dtype:
            raise ValueError(f'these features were encoded on {features.device} in '
                             f'{features.beit3_pixel_values.dtype}, this model runs on {self.device} in {self.dtype}; '
                             'encode the image with this model')
        if batch_size is not None and batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        step = batch_size or len(prompts)
        results: list[SegmentationResult] = []
        for start in range(0, len(prompts), step):
            stop = start + step
            ids, am = input_ids[start:stop], attention_mask[start:stop]
            # trim padding that only the longer prompts of other chunks needed
            width = int(am.sum(dim=1).max())
            results.extend(self._segment_batch(features, prompts[start:stop], ids[:, :width], am[:, :width],
                                               return_logits))
        return results

    def _segment_batch(self, features: ImageFeatures, prompts: list[str], input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, return_logits: bool) -> list[SegmentationResult]:
        with _oom_guard('segment'), torch.inference_mode():
            prompt_emb = self._run_prompt_embeddings(features.beit3_pixel_values, input_ids, attention_mask)
            out = self._run_decoder(features.sam_embeddings, prompt_emb)
            selected = self.select(out)
            logits = postprocess_logits(selected.logits, features.resize)  # [B, 1, H, W] fp32
            masks = (logits[:, 0] > 0).cpu().numpy()
            scores = selected.iou_scores.float().cpu().tolist()
            tokens = selected.token_index.cpu().tolist()
            objects = out.object_score_logits.float().cpu().tolist() if out.object_score_logits is not None else None
            stability = selected.stability_score.cpu().tolist() if selected.stability_score is not None else None
            low_res = selected.logits[:, 0].float().cpu().numpy() if return_logits else None
        return [
            SegmentationResult(prompt=p, mask=masks[i], score=scores[i],
                               object_score=objects[i] if objects is not None else None, token_index=tokens[i],
                               low_res_logits=low_res[i] if low_res is not None else None,
                               stability_score=stability[i] if stability is not None else None)
            for i, p in enumerate(prompts)
        ]

    # ---- the three networks (overridden by the exported-graph backends, see runtimes.py) -------
    def _run_sam_encoder(self, sam_pixel_values: torch.Tensor) -> SamImageEmbeddings:
        """[1, 3, S, S] float32 -> SAM-1: [1, C, h, w]; SAM-2: [s0, s1, emb]."""
        return self.model.encode_sam_image(sam_pixel_values.to(self.dtype))

    def _run_prompt_embeddings(self, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor) -> torch.Tensor:
        """[1, 3, 224, 224] + [B, T] ids/mask -> the SAM prompt tokens [B, 1, C]."""
        return self.model.prompt_embeddings(beit3_pixel_values, input_ids, attention_mask)

    def _run_decoder(self, sam_embeddings: SamImageEmbeddings, prompt_embeddings: torch.Tensor) -> DecoderOutput:
        """All four mask tokens for B prompts against one image."""
        return self.model.decode_all(sam_embeddings, prompt_embeddings, self.dense_positional_embedding())

    def select(self, out: DecoderOutput) -> SelectedMasks:
        """One mask per prompt by the checkpoint's selection rule (same code for every backend)."""
        b = self.config.behaviour
        return select_masks(out, b.mask_selection, stability_delta=b.stability_delta,
                            stability_thresh=b.stability_thresh)

    def predict(self, rgb: np.ndarray, prompts: Sequence[str], **kwargs) -> list[SegmentationResult]:
        """``segment(encode_image(rgb), prompts)``."""
        return self.segment(self.encode_image(rgb), prompts, **kwargs)
