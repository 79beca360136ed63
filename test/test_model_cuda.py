"""CUDA checks, deselected by default (pytest.ini: -m "not cuda"); bench/gpu_check.sh runs them on a GPU machine:

    python -m pytest test -m cuda

fp16 / bf16 on CUDA against fp32 on the CPU (conformance fixtures), dtype "auto" = fp16 on CUDA, and the
onnxruntime CUDA execution provider where onnxruntime-gpu is installed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evf_sam_ros.model import load_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (bench/gpu_check.sh)')]

CASES = ('sam1_vit', 'sam2_hiera_best3', 'sam2_hiera_stability')


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _inputs(conformance_dir, case):
    rgb = np.asarray(Image.open(conformance_dir / 'images' / 'landscape.png').convert('RGB'))
    meta = json.loads((conformance_dir / case / 'cases.json').read_text())
    return rgb, sorted({p['prompt'] for p in meta['pairs']})


def test_dtype_auto_is_fp16_on_cuda(tiny_checkpoint_sam2):
    predictor = load_model(tiny_checkpoint_sam2, device='cuda', dtype='auto')
    assert predictor.dtype == torch.float16 and predictor.device.type == 'cuda'


@pytest.mark.parametrize('dtype', ['fp32', 'fp16', 'bf16'])
@pytest.mark.parametrize('case', CASES)
def test_cuda_masks_match_cpu_fp32(conformance_dir, case, dtype):
    rgb, prompts = _inputs(conformance_dir, case)
    reference = load_model(conformance_dir / case, device='cpu', dtype='fp32')
    expected = reference.segment(reference.encode_image(rgb), prompts)
    predictor = load_model(conformance_dir / case, device='cuda', dtype=dtype)
    results = predictor.segment(predictor.encode_image(rgb), prompts)
    min_iou = {'fp32': 0.999, 'fp16': 0.98, 'bf16': 0.95}[dtype]
    for ref, got in zip(expected, results, strict=True):
        iou = _iou(ref.mask, got.mask)
        print(f'{case} {dtype} {ref.prompt!r}: IoU {iou:.4f}, score {ref.score:.4f} -> {got.score:.4f}')
        assert iou >= min_iou


def test_onnxruntime_cuda_provider(conformance_dir, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        pytest.skip(f'onnxruntime has no CUDA execution provider ({ort.get_available_providers()}): '
                    'install onnxruntime-gpu')
    from evf_sam_ros.model.export import export_onnx

    case = 'sam2_hiera_best3'
    rgb, prompts = _inputs(conformance_dir, case)
    reference = load_model(conformance_dir / case)
    export_onnx(reference.model, conformance_dir / case, tmp_path)
    predictor = load_model(tmp_path, backend='onnxruntime', device='cuda',
                           behaviour=reference.config.behaviour)
    assert 'CUDAExecutionProvider' in predictor.graphs['image_encoder'].providers
    expected = reference.segment(reference.encode_image(rgb), prompts)
    for ref, got in zip(expected, predictor.segment(predictor.encode_image(rgb), prompts), strict=True):
        assert _iou(ref.mask, got.mask) >= 0.999
