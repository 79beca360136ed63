"""Export of an EVF-SAM checkpoint to three ONNX graphs for the onnxruntime / OpenVINO / TensorRT backends.

    evf-sam export MODEL_DIR OUT_DIR            # or: export_onnx(load_model(MODEL_DIR), OUT_DIR)

``OUT_DIR`` is self-contained: the graphs, ``export.json`` (what was exported, input/output names and shapes),
``config.json`` and the tokenizer files. ``load_model(OUT_DIR, backend="onnxruntime")`` loads it; so does
``load_model(MODEL_DIR, backend=...)`` when the export lives in ``MODEL_DIR/onnx``.

Graphs (fp32 by default; ``dtype="fp16"`` for GPUs):

* ``image_encoder.onnx``: ``sam_pixel_values`` [1, 3, S, S] -> SAM-1 ``image_embeddings`` [1, C, h, w];
  SAM-2 ``high_res_feat_s0`` [1, C/8, 4h, 4w], ``high_res_feat_s1`` [1, C/4, 2h, 2w], ``image_embeddings``
  (no-memory embedding added). Static shapes (TensorRT builds it without an optimisation profile).
* ``text_encoder.onnx``: ``beit3_pixel_values`` [1, 3, 224, 224], ``input_ids`` / ``attention_mask`` [B, T]
  int64 (right-padded, 1 = token) -> ``prompt_embeddings`` [B, 1, C]. B and T are dynamic.
* ``mask_decoder.onnx``: ``prompt_embeddings`` [B, 1, C] + the image-encoder outputs -> ``masks`` [B, 4, 4h, 4w]
  logits of all four mask tokens, ``iou_scores`` [B, 4], SAM-2 ``object_score_logits`` [B]. B is dynamic.

Pre-processing, tokenisation, the mask-selection rule and post-processing stay in the package (the same code
as the torch backend), so a load-time ``behaviour`` override needs no re-export.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import warnings

import torch
from torch import nn

from ..errors import ModelLoadError
from .modeling import EvfSamModel
from .tokenizer import TOKENIZER_FILES

__all__ = ['export_onnx', 'EXPORT_MANIFEST', 'GRAPH_FILES', 'ONNX_OPSET', 'read_manifest']

log = logging.getLogger(__name__)

EXPORT_MANIFEST = 'export.json'
EXPORT_FORMAT_VERSION = 1
GRAPH_FILES = {'image_encoder': 'image_encoder.onnx', 'text_encoder': 'text_encoder.onnx',
               'mask_decoder': 'mask_decoder.onnx'}
ONNX_OPSET = 18  # LayerNormalization (17+) and the ops TensorRT 8.6+/10 parse
_EXTERNAL_DATA_BYTES = 1 << 30  # graphs above this keep their weights in <file>.data (ONNX's 2 GB limit)


class ImageEncoderGraph(nn.Module):
    """SAM image encoder (+ SAM-2 high-resolution convolutions and no-memory embedding)."""

    def __init__(self, model: EvfSamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, sam_pixel_values: torch.Tensor):
        out = self.model.encode_sam_image(sam_pixel_values)
        return tuple(out) if isinstance(out, (list, tuple)) else out


class TextEncoderGraph(nn.Module):
    """BEiT-3 early fusion + projection -> the SAM prompt token; padding always masked (no data branch)."""

    def __init__(self, model: EvfSamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        pixels = beit3_pixel_values.to(self.model.dtype)
        features = self.model.beit3(pixels, input_ids, attention_mask, always_mask=True)  # [B, 197 + T, D]
        return self.model.prompt_from_features(features)  # [B, 1, C]


class MaskDecoderGraph(nn.Module):
    """The SAM mask decoder for B prompt tokens against one image; all four mask tokens out."""

    def __init__(self, model: EvfSamModel) -> None:
        super().__init__()
        self.model = model
        dtype = model.sam.mask_decoder.iou_token.weight.dtype
        self.register_buffer('dense_pe', model.dense_positional_embedding().to(dtype), persistent=False)

    def forward(self, prompt_embeddings: torch.Tensor, image_embeddings: torch.Tensor,
                high_res_feat_s0: torch.Tensor | None = None, high_res_feat_s1: torch.Tensor | None = None):
        if self.model.config.is_sam2:
            levels = [high_res_feat_s0, high_res_feat_s1, image_embeddings]
        else:
            levels = image_embeddings
        out = self.model.decode_all(levels, prompt_embeddings, self.dense_pe)
        if out.object_score_logits is None:
            return out.masks, out.iou_scores
        return out.masks, out.iou_scores, out.object_score_logits


def _graph_specs(model: EvfSamModel, dtype: torch.dtype) -> dict[str, dict]:
    """Example inputs, names and dynamic dimensions of the three graphs."""
    cfg = model.config
    size, emb = cfg.sam_image_size, cfg.image_embedding_size
    prompts = torch.export.Dim('prompts', min=1, max=256)
    text = torch.export.Dim('text_tokens', min=1, max=cfg.beit3.max_text_tokens)
    with torch.inference_mode():
        sam_levels = model.encode_sam_image(torch.zeros(1, 3, size, size, dtype=dtype))
    levels = list(sam_levels) if cfg.is_sam2 else [sam_levels]
    level_names = ['high_res_feat_s0', 'high_res_feat_s1', 'image_embeddings'] if cfg.is_sam2 else ['image_embeddings']
    by_name = dict(zip(level_names, levels))
    decoder_inputs = ['prompt_embeddings', 'image_embeddings'] + (['high_res_feat_s0', 'high_res_feat_s1']
                                                                  if cfg.is_sam2 else [])
    batch = 2  # example size > 1: torch.export specialises dimensions of size 1
    return {
        'image_encoder': dict(
            module=ImageEncoderGraph(model), args=(torch.zeros(1, 3, size, size, dtype=dtype),),
            inputs=['sam_pixel_values'], outputs=level_names, dynamic=None),
        'text_encoder': dict(
            module=TextEncoderGraph(model),
            args=(torch.zeros(1, 3, cfg.beit3.img_size, cfg.beit3.img_size, dtype=dtype),
                  torch.ones(batch, 5, dtype=torch.long), torch.tensor([[1] * 5, [1] * 3 + [0] * 2])),
            inputs=['beit3_pixel_values', 'input_ids', 'attention_mask'], outputs=['prompt_embeddings'],
            dynamic={'beit3_pixel_values': None, 'input_ids': {0: prompts, 1: text},
                     'attention_mask': {0: prompts, 1: text}}),
        'mask_decoder': dict(
            module=MaskDecoderGraph(model),
            args=(torch.zeros(batch, 1, cfg.out_dim, dtype=dtype), *(by_name[n] for n in decoder_inputs[1:])),
            inputs=decoder_inputs,
            outputs=['masks', 'iou_scores'] + (['object_score_logits'] if cfg.is_sam2 else []),
            dynamic={'prompt_embeddings': {0: prompts}, **{n: None for n in decoder_inputs[1:]}}),
        '_shapes': {n: list(t.shape) for n, t in by_name.items()} | {'low_res_size': cfg.low_res_size,
                                                                     'embedding_size': emb},
    }


def _export_one(name: str, spec: dict, path: pathlib.Path, opset: int) -> None:
    module = spec['module'].eval()
    n_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    dynamic = spec['dynamic']
    kwargs = dict(input_names=spec['inputs'], output_names=spec['outputs'], opset_version=opset, dynamo=True,
                  external_data=n_bytes > _EXTERNAL_DATA_BYTES, optimize=True, verbose=False)
    if dynamic is not None:
        kwargs['dynamic_shapes'] = dynamic
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(module, spec['args'], **kwargs)
    program.save(str(path), external_data=kwargs['external_data'])
    log.info('exported %s (%.1f MB of weights) to %s', name, n_bytes / 2**20, path)


def export_onnx(model: EvfSamModel, tokenizer_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                dtype: str = 'fp32', opset: int = ONNX_OPSET, source: str = '') -> pathlib.Path:
    """Write the three graphs, ``export.json``, ``config.json`` and the tokenizer files to ``out_dir``."""
    if dtype not in ('fp32', 'fp16'):
        raise ValueError(f"export dtype must be 'fp32' or 'fp16', got {dtype!r}")
    torch_dtype = torch.float32 if dtype == 'fp32' else torch.float16
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to('cpu').to_inference_dtype(torch_dtype).eval()
    specs = _graph_specs(model, torch_dtype)
    shapes = specs.pop('_shapes')
    graphs = {}
    for name, spec in specs.items():
        path = out / GRAPH_FILES[name]
        for stale in (path, path.with_name(path.name + '.data')):
            stale.unlink(missing_ok=True)
        _export_one(name, spec, path, opset)
        graphs[name] = {'file': path.name, 'inputs': spec['inputs'], 'outputs': spec['outputs']}
    _copy_checkpoint_files(model, pathlib.Path(tokenizer_dir), out)
    manifest = {
        'format_version': EXPORT_FORMAT_VERSION, 'architecture': model.config.architecture_name,
        'sam_kind': model.config.sam_kind, 'dtype': dtype, 'opset': opset, 'source': source,
        'sam_image_size': model.config.sam_image_size, 'shapes': shapes,
        'max_text_tokens': model.config.beit3.max_text_tokens, 'graphs': graphs,
        'torch_version': torch.__version__, 'behaviour_at_export': model.config.behaviour.__dict__,
    }
    (out / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + '\n')
    return out


def _copy_checkpoint_files(model: EvfSamModel, tokenizer_dir: pathlib.Path, out: pathlib.Path) -> None:
    model.config.to_json(out / 'config.json', torch_dtype='float32')
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file() and tokenizer_dir.resolve() != out.resolve():
            shutil.copy(tokenizer_dir / name, out / name)


def read_manifest(directory: pathlib.Path) -> dict:
    """``export.json`` of an export directory, checked for the graph files. Raises :class:`ModelLoadError`."""
    path = directory / EXPORT_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f'{path}: unreadable export manifest ({exc}); re-run `evf-sam export`') from exc
    if manifest.get('format_version') != EXPORT_FORMAT_VERSION:
        raise ModelLoadError(f'{path}: export format {manifest.get("format_version")} is not the supported '
                             f'{EXPORT_FORMAT_VERSION}; re-run `evf-sam export` with this version of the package')
    missing = [g['file'] for g in manifest['graphs'].values() if not (directory / g['file']).is_file()]
    if missing:
        raise ModelLoadError(f'{directory}: exported graph(s) missing: {missing}; re-run `evf-sam export`')
    return manifest
