"""Loading and releasing the node's model (device/dtype "auto" are resolved by ``load_model``)."""
from __future__ import annotations

import gc
import logging
import os
import sys
import time

import numpy as np

__all__ = ['make_predictor', 'release_predictor']

log = logging.getLogger('evf_sam_ros')


def make_predictor(factory, p: dict):
    """The predictor for the node's parameters ``p``: ``factory(model_path, device, dtype)`` when
    injected, the deterministic stand-in for ``model_path`` ``fake:...``, else ``load_model``."""
    if factory is not None:
        predictor = factory(p['model_path'], p['device'], p['dtype'])
    elif p['model_path'].startswith('fake'):
        from evf_sam_ros.ros.fake_predictor import FakePredictor, parse_fake_spec
        predictor = FakePredictor(**parse_fake_spec(p['model_path']))
    else:
        import torch

        from evf_sam_ros.model import load_model
        torch.set_num_threads(p['torch_threads'] or max(1, min(4, os.cpu_count() or 1)))
        predictor = load_model(p['model_path'] or None, device=p['device'], dtype=p['dtype'], backend=p['backend'],
                               backend_options={'threads': p['torch_threads']} if p['backend'] != 'torch' else None)
    if p['warmup']:
        t0 = time.monotonic()
        predictor.segment(predictor.encode_image(np.zeros((64, 64, 3), np.uint8)), ['object'])
        predictor.warmup_s = time.monotonic() - t0
    return predictor


def release_predictor(pipeline, timeout: float = -1) -> None:
    """Drop the model and give cached GPU memory back; waits for a run in flight to finish (at most
    ``timeout`` s; -1 = as long as it takes)."""
    locked = pipeline.model_lock.acquire(timeout=timeout)
    try:
        device = str(getattr(pipeline.predictor, 'device', ''))
        pipeline.predictor = None
    finally:
        if locked:
            pipeline.model_lock.release()
    gc.collect()
    if device.startswith('cuda') and 'torch' in sys.modules:
        import torch
        torch.cuda.empty_cache()
