"""EVF-SAM / EVF-SAM2 text-prompted segmentation, ROS-free.

    from evf_sam_ros.model import load_model
    model = load_model("/path/to/evf-sam2", device="cuda", dtype="fp16")   # or a cached HF id, or None
    features = model.encode_image(rgb)            # HxWx3 uint8 RGB; cache per frame
    results = model.segment(features, ["the red cup", "[semantic] floor"])
    results[0].mask, results[0].score, results[0].object_score

Weight-compatible with the released checkpoints (YxZhang/evf-sam, evf-sam-multitask, evf-sam2,
evf-sam2-multitask): BEiT-3 is implemented here, SAM / SAM 2 come from transformers.
"""
from .config import EvfSamBehaviour, EvfSamConfig
from ..errors import (EvfSamError, EvfSamOutOfMemoryError, InvalidImageError, InvalidPromptError, ModelLoadError,
                     OutOfMemoryError)
from .loading import load_model, save_checkpoint
from ..masks import mask_area, mask_bbox, mask_centroid
from .modeling import EvfSamModel
from .predictor import EvfSamPredictor, ImageFeatures, SegmentationResult

__all__ = [
    'load_model',
    'save_checkpoint',
    'EvfSamPredictor',
    'ImageFeatures',
    'SegmentationResult',
    'EvfSamModel',
    'EvfSamConfig',
    'EvfSamBehaviour',
    'EvfSamError',
    'ModelLoadError',
    'InvalidImageError',
    'InvalidPromptError',
    'EvfSamOutOfMemoryError',
    'OutOfMemoryError',
    'mask_area',
    'mask_bbox',
    'mask_centroid',
]
