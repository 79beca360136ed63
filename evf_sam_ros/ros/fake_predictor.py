"""A deterministic stand-in for the EVF-SAM predictor (same methods), for tests and benchmarks.

Selected with ``model_path:=fake:`` (optionally ``fake:delay=0.2,radius=0.125,score=0.9``) or
injected with ``SegmentNode(predictor_factory=...)``. It measures the node, not a model:

* ``encode_image`` sleeps ``delay`` seconds (constant model time) and remembers the frame;
* ``segment`` returns, for prompt k of n, a filled disc of radius ``radius * min(H, W)`` centred
  at ``((k + 1) W / (n + 1), H / 2)`` with ``score``; special prompts:
  ``"absent ..."`` -> empty mask, score 0; ``"lowscore ..."`` -> disc with score 0.05;
  ``"fail ..."`` -> raises RuntimeError; ``"oom ..."`` -> raises ``EvfSamOutOfMemoryError``;
  ``"slow ..."`` -> sleeps another ``delay`` seconds.

Everything it processed is logged in ``self.calls`` (frame value at pixel (0, 0) and times).
"""
from __future__ import annotations

import threading
import time

import numpy as np

__all__ = ['FakePredictor', 'FakeResult', 'disc_mask', 'parse_fake_spec']


class FakeResult:
    __slots__ = ('prompt', 'mask', 'score', 'object_score', 'token_index')

    def __init__(self, prompt, mask, score, object_score=None, token_index=0):
        self.prompt, self.mask, self.score = prompt, mask, score
        self.object_score, self.token_index = object_score, token_index


def disc_mask(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def parse_fake_spec(spec: str) -> dict:
    """'fake:delay=0.2,score=0.8' -> {'delay': 0.2, 'score': 0.8}."""
    body = spec.split(':', 1)[1] if ':' in spec else ''
    out = {}
    for item in filter(None, (s.strip() for s in body.split(','))):
        k, _, v = item.partition('=')
        out[k.strip()] = float(v)
    return out


def default_model_text_limit() -> int:
    """The embedded default model's text-token limit, read from its config (the fake claims no
    limit of its own)."""
    import json
    import pathlib
    cfg = json.loads((pathlib.Path(__file__).parents[1] / 'model' / 'default_model' / 'config.json').read_text())
    return int(cfg['evf_sam_ros']['beit3']['max_source_positions']) - 2


class FakePredictor:

    def __init__(self, delay: float = 0.0, radius: float = 0.125, score: float = 0.9,
                 object_score: float | None = None, device: str = 'cpu'):
        self.delay = float(delay)
        self.radius = float(radius)
        self.score = float(score)
        self.object_score = object_score
        self.name = 'fake'
        self.device = device
        self.dtype = 'float32'
        self.is_default_model = False
        self.has_object_score = object_score is not None
        self.calls = []
        self.released = False
        self._lock = threading.Lock()
        self.masks_cache = {}
        self.max_text_tokens = default_model_text_limit()
        self._active = 0
        self.max_concurrent = 0   # most encode/segment calls ever in progress at once

    def tokenize(self, prompts):
        """One token per word plus <s> and </s>; over the limit raises InvalidPromptError like the
        real tokenizer."""
        from evf_sam_ros.errors import InvalidPromptError
        lens = [len(p.split()) + 2 for p in prompts]
        for i, n in enumerate(lens):
            if n > self.max_text_tokens:
                raise InvalidPromptError(f'prompt {i} is {n} tokens long, but the text encoder takes at most '
                                         f'{self.max_text_tokens}')
        n = max(lens) if lens else 0
        ids = np.zeros((len(prompts), n), np.int64)
        att = np.zeros((len(prompts), n), np.int64)
        for i, L in enumerate(lens):
            att[i, :L] = 1
        return ids, att

    def encode_image(self, rgb):
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            from evf_sam_ros.errors import InvalidImageError
            raise InvalidImageError(f'expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}')
        t0 = time.monotonic()
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        if self.delay > 0:
            time.sleep(self.delay)
        with self._lock:
            self._active -= 1
        feat = {'shape': rgb.shape[:2], 'value': int(rgb[0, 0, 0]) | (int(rgb[0, 0, 1]) << 8),
                't_start': t0}
        with self._lock:
            self.calls.append(feat)
        return feat

    def _disc(self, h, w, k, n):
        key = (h, w, k, n)
        m = self.masks_cache.get(key)
        if m is None:
            r = self.radius * min(h, w)
            m = disc_mask(h, w, (k + 1) * w / (n + 1), h / 2.0, r)
            self.masks_cache[key] = m
        return m

    def segment(self, features, prompts):
        h, w = features['shape']
        out = []
        n = len(prompts)
        for k, p in enumerate(prompts):
            low = p.lower()
            if low.startswith('fail'):
                raise RuntimeError('fake inference failure')
            if low.startswith('oom'):
                from evf_sam_ros.errors import EvfSamOutOfMemoryError
                raise EvfSamOutOfMemoryError('fake CUDA out of memory')
            if low.startswith('slow') and self.delay > 0:
                time.sleep(self.delay)
            if low.startswith('absent'):
                out.append(FakeResult(p, np.zeros((h, w), bool), 0.0, self.object_score, k))
                continue
            score = 0.05 if low.startswith('lowscore') else self.score
            out.append(FakeResult(p, self._disc(h, w, k, n).copy(), score, self.object_score, k))
        return out
