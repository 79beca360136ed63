"""Opt-in parity of the exported-graph backends with torch at the real sizes (SAM ViT-H, SAM-2 Hiera-L,
BEiT-3 Large) on the full-size fixture's random weights, images and prompts.

    make test ARGS='-m fullsize -k backends'     # ~30-40 min on 2 CPU cores; up to 14 GB RAM (onnxruntime on
                                                 # EVF-SAM) and ~12 GB of /tmp; not run here yet

Per case: torch results first, then the export (from the same model), then each backend alone in memory.
"""
import gc
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from evf_sam_ros.model import load_model
from evf_sam_ros.model.export import export_onnx
from evf_sam_ros.model.testing import make_fullsize_checkpoint

from test_model_backends import BACKENDS, RUNTIME_MODULE, compare_results

pytestmark = [pytest.mark.fullsize, pytest.mark.slow]

CASES = ('evf_sam2_hieral', 'evf_sam_vith')  # the multitask case has the evf_sam2_hieral architecture


@pytest.fixture(scope='module', params=CASES)
def fullsize_export(request, fullsize_dir, tmp_path_factory):
    """(torch results per image, export directory, prompts) of one case."""
    case = request.param
    ckpt = make_fullsize_checkpoint(fullsize_dir, case, tmp_path_factory.mktemp(case))
    prompts = json.loads((fullsize_dir / case / 'case.json').read_text())['prompts']
    predictor = load_model(ckpt, device='cpu', dtype='fp32')
    reference = {}
    for name in ('landscape', 'portrait'):
        rgb = np.asarray(Image.open(fullsize_dir / f'{name}.png').convert('RGB'))
        features = predictor.encode_image(rgb)
        reference[name] = (rgb, features.resize, predictor.segment(features, prompts, return_logits=True))
    out = export_onnx(predictor.model, ckpt, tmp_path_factory.mktemp(f'{case}_onnx'))
    del predictor, features
    gc.collect()
    (ckpt / 'model.safetensors').unlink(missing_ok=True)
    yield case, reference, out, prompts
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize('backend', BACKENDS)
def test_fullsize_backend_matches_torch(fullsize_export, backend):
    pytest.importorskip(RUNTIME_MODULE[backend], reason=f'{RUNTIME_MODULE[backend]} is not installed')
    case, reference, export_dir, prompts = fullsize_export
    predictor = load_model(export_dir, backend=backend)
    report: dict = {}
    for rgb, resize, ref_results in reference.values():
        results = predictor.segment(predictor.encode_image(rgb), prompts, return_logits=True)
        compare_results(ref_results, results, resize, report)
    del predictor
    gc.collect()
    print(f'\n{backend} {case}: ' + ', '.join(f'{k}={v:.3g}' for k, v in report.items()))
