"""Exceptions of the whole package (model core, pipeline, node): one type per kind of bad input.

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
    """An image that cannot be used: a malformed ROS message, an undecodable or oversized compressed
    image, or an array that is not HxWx3 uint8 RGB of a size the model accepts."""


class InvalidPromptError(EvfSamError, ValueError):
    """A text prompt (or prompt command) that is empty, not a string, too long for the loaded model's
    text encoder, or one too many; the caller keeps its previous prompts."""


class EvfSamOutOfMemoryError(EvfSamError, MemoryError):
    """The accelerator ran out of memory while loading or running the model."""


OutOfMemoryError = EvfSamOutOfMemoryError  # short alias
