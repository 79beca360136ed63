"""Image pre- and post-processing of EVF-SAM (spec section 6), in plain torch + PIL (no torchvision).

* BEiT-3 input: uint8/255 -> bicubic resize of the float tensor to 224x224 **without antialias**, no clamp
  -> (x - 0.5) / 0.5.
* SAM input (``EvfSamBehaviour.sam_resize``):
  ``longest_side_pad``: PIL bilinear on the uint8 image to the longest-side size (``int(x * s + 0.5)``),
  ImageNet normalisation on the 0..255 scale, zero pad at the bottom/right (after normalising);
  ``square``: torch's uint8 bilinear ``interpolate`` straight to S x S (CPU kernel: it rounds internally,
  which a float resize would not reproduce), then normalise;
  ``longest_then_stretch``: PIL longest side, normalise, float bilinear stretch to S x S.
* Post-processing: fp32 bilinear (``align_corners=False``, no antialias) of the low-res logits, through
  S x S and a crop for ``longest_side_pad``, straight to (H, W) otherwise; the mask is ``logits > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InvalidImageError

__all__ = [
    'SAM_PIXEL_MEAN',
    'SAM_PIXEL_STD',
    'validate_rgb_image',
    'beit3_pixel_values',
    'longest_side_size',
    'sam_pixel_values',
    'SamResizeInfo',
    'postprocess_logits',
]

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamResizeInfo:
    """How the SAM input was made, as post-processing needs it."""

    mode: str
    original_size: tuple[int, int]  # (H, W)
    resized_size: tuple[int, int]  # (h, w) of the content inside the S x S input (= (S, S) when stretched)
    input_size: int  # S


def validate_rgb_image(rgb: object) -> np.ndarray:
    """Check an HxWx3 uint8 RGB array; returns it C-contiguous. Raises :class:`InvalidImageError`."""
    if not isinstance(rgb, np.ndarray):
        raise InvalidImageError(f'expected an HxWx3 uint8 numpy array (RGB), got {type(rgb).__name__}; '
                                'convert with numpy.asarray(...) (for ROS images use cv_bridge with "rgb8")')
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        hint = ''
        if rgb.ndim == 2:
            hint = ' (a grayscale image: stack it to 3 channels, e.g. np.repeat(img[..., None], 3, axis=2))'
        elif rgb.ndim == 3 and rgb.shape[2] == 4:
            hint = ' (RGBA/BGRA: drop the alpha channel, e.g. img[..., :3], and make sure the order is RGB)'
        elif rgb.ndim == 3 and rgb.shape[0] == 3:
            hint = ' (channels first: transpose to HxWx3 with img.transpose(1, 2, 0))'
        raise InvalidImageError(f'expected an HxWx3 RGB image, got shape {rgb.shape}{hint}')
    if rgb.dtype != np.uint8:
        raise InvalidImageError(f'expected dtype uint8 (0..255), got {rgb.dtype}; for floats in [0, 1] use '
                                '(img * 255).round().clip(0, 255).astype(np.uint8)')
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImageError(f'the image is empty (shape {rgb.shape}); pass an image with at least 1x1 pixels')
    return np.ascontiguousarray(rgb)


def _as_tensor(rgb: np.ndarray) -> torch.Tensor:
    # torch.from_numpy warns on read-only arrays (PIL results, ROS message buffers): copy those
    return torch.from_numpy(rgb if rgb.flags.writeable else rgb.copy())


def _to_chw_float(rgb: np.ndarray, device: torch.device | str) -> torch.Tensor:
    # [H, W, 3] uint8 -> [1, 3, H, W] float32 on the device (0..255)
    return _as_tensor(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float()


def beit3_pixel_values(rgb: np.ndarray, size: int = 224, device: torch.device | str = 'cpu') -> torch.Tensor:
    """[1, 3, size, size] float32: bicubic (no antialias, no clamp) of uint8/255, then (x - 0.5) / 0.5."""
    x = _to_chw_float(rgb, device) / 255.0
    x = F.interpolate(x, size=(size, size), mode='bicubic', align_corners=False, antialias=False)
    return (x - 0.5) / 0.5


def longest_side_size(height: int, width: int, target: int) -> tuple[int, int]:
    """segment-anything ``ResizeLongestSide.get_preprocess_shape``: scale the longest side to ``target``."""
    scale = target * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _pil_resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    if (height, width) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def sam_pixel_values(rgb: np.ndarray, mode: str, size: int = 1024,
                     device: torch.device | str = 'cpu') -> tuple[torch.Tensor, SamResizeInfo]:
    """The normalised SAM input [1, 3, size, size] float32 and what post-processing needs to undo it."""
    height, width = rgb.shape[:2]
    if mode == 'longest_side_pad':
        new_h, new_w = longest_side_size(height, width, size)
        x = _normalise(_to_chw_float(_pil_resize(rgb, new_h, new_w), device))
        x = F.pad(x, (0, size - new_w, 0, size - new_h))  # zeros in normalised space
        return x, SamResizeInfo(mode, (height, width), (new_h, new_w), size)
    if mode == 'square':
        # torch's uint8 bilinear kernel exists on CPU only; the result is uint8 (rounded), as in EVF.
        x = _as_tensor(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
        if (height, width) != (size, size):
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False, antialias=False)
        x = _normalise(x.to(device).float())
        return x, SamResizeInfo(mode, (height, width), (size, size), size)
    if mode == 'longest_then_stretch':
        new_h, new_w = longest_side_size(height, width, size)
        x = _normalise(_to_chw_float(_pil_resize(rgb, new_h, new_w), device))
        if (new_h, new_w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False, antialias=False)
        return x, SamResizeInfo(mode, (height, width), (size, size), size)
    raise ValueError(f'unknown SAM resize mode {mode!r}')


def postprocess_logits(low_res: torch.Tensor, info: SamResizeInfo) -> torch.Tensor:
    """[B, 1, h, w] low-res logits -> [B, 1, H, W] float32 logits at the original size (one call for all B)."""
    x = low_res.float()
    if info.mode == 'longest_side_pad':
        x = F.interpolate(x, size=(info.input_size, info.input_size), mode='bilinear', align_corners=False)
        x = x[..., :info.resized_size[0], :info.resized_size[1]]
    return F.interpolate(x, size=info.original_size, mode='bilinear', align_corners=False)
