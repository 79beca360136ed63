"""Exceptions raised by ``evf_sam_ros.model``.

Every message says what was wrong and what to do about it, because these errors surface in a ROS
node's log where the user cannot inspect a traceback comfortably.
"""
from __future__ import annotations

__all__ = [
    'EvfSamError',
    'ModelLoadError',
    'InvalidImageError',
    'InvalidPromptError',
    'EvfSamOutOfMemoryError',
]


class EvfSamError(Exception):
    """Base class of all errors raised by the EVF-SAM inference core."""


class ModelLoadError(EvfSamError, ValueError):
    """The checkpoint (directory, files, config, weights, tokenizer) or the device request is unusable."""


class InvalidImageError(EvfSamError, ValueError):
    """The image given to ``encode_image`` is not an HxWx3 uint8 RGB array."""


class InvalidPromptError(EvfSamError, ValueError):
    """A text prompt is empty, not a string, or longer than BEiT-3 accepts."""


class EvfSamOutOfMemoryError(EvfSamError, MemoryError):
    """The accelerator ran out of memory while loading or running the model."""


OutOfMemoryError = EvfSamOutOfMemoryError  # short alias
