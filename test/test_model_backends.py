"""The exported-graph backends (onnxruntime, OpenVINO) against the torch backend, on the conformance fixtures
(SAM-1 ViT; SAM-2 Hiera with best-of-3 and with the stability rule; multitask tokenizer) and the embedded model.

Masks must equal torch's except where torch's final logit is within NEAR_ZERO of 0; the maxima reached are
printed (pytest -s) and quoted in the README's backend section.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evf_sam_ros.cli import main as cli_main
from evf_sam_ros.model import InvalidPromptError, ModelLoadError, load_model
from evf_sam_ros.model.export import export_onnx
from evf_sam_ros.model.preprocessing import postprocess_logits

pytestmark = pytest.mark.usefixtures('one_torch_thread')

RUNTIME_MODULE = {'onnxruntime': 'onnxruntime', 'openvino': 'openvino'}
BACKENDS = tuple(RUNTIME_MODULE)
CASES = ('sam1_vit', 'sam2_hiera_best3', 'sam2_hiera_stability')
IMAGES = ('landscape', 'portrait')
ATOL_FEATURES = 1e-4  # image embeddings, high-res features (reached: ~1e-5)
ATOL_LOW_RES = 1e-3  # low-res logits of the kept token (reached: ~1e-5)
ATOL_SCORE = 1e-4  # IoU and object scores
NEAR_ZERO = 1e-3  # final-mask pixels whose torch logit is this close to 0 may flip
MIN_IOU = 0.999


def _require(backend: str) -> None:
    pytest.importorskip(RUNTIME_MODULE[backend], reason=f'{RUNTIME_MODULE[backend]} is not installed '
                        '(pip install -r requirements/deploy.txt; scripts/setup.sh installs it)')


@pytest.fixture(scope='module')
def exported(conformance_dir, tmp_path_factory):
    """One export per architecture: SAM-1, and SAM-2 (best3 and stability share the weights)."""
    out = {}
    for arch, case in (('sam1', 'sam1_vit'), ('sam2', 'sam2_hiera_stability')):
        predictor = load_model(conformance_dir / case)
        out[arch] = export_onnx(predictor.model, conformance_dir / case, tmp_path_factory.mktemp(f'onnx_{arch}'))
    return out


@pytest.fixture(scope='module')
def torch_cases(conformance_dir):
    images = {name: np.asarray(Image.open(conformance_dir / 'images' / f'{name}.png').convert('RGB'))
              for name in IMAGES}
    out = {}
    for case in CASES:
        meta = json.loads((conformance_dir / case / 'cases.json').read_text())
        prompts = sorted({(p['prompt_index'], p['prompt']) for p in meta['pairs']})
        out[case] = dict(predictor=load_model(conformance_dir / case), prompts=[p for _, p in prompts])
    return out, images


def _backend_predictor(exported, torch_predictor, backend):
    arch = 'sam2' if torch_predictor.config.is_sam2 else 'sam1'
    # the behaviour is a load-time choice (selection runs in the package): best3 reuses the stability export
    return load_model(exported[arch], backend=backend, behaviour=torch_predictor.config.behaviour,
                      backend_options={'threads': 1})


def compare_results(reference, candidate, resize, report: dict) -> None:
    """Assert parity of two result lists (return_logits=True) and record the worst differences in ``report``."""
    for ref, got in zip(reference, candidate, strict=True):
        assert got.token_index == ref.token_index, (ref.prompt, ref.token_index, got.token_index)
        assert got.score == pytest.approx(ref.score, abs=ATOL_SCORE)
        if ref.object_score is not None:
            assert got.object_score == pytest.approx(ref.object_score, abs=ATOL_SCORE)
        low_res = float(np.abs(got.low_res_logits - ref.low_res_logits).max())
        assert low_res <= ATOL_LOW_RES, f'{ref.prompt!r}: low-res logits differ by {low_res:.3g}'
        differ = got.mask != ref.mask
        iou = (got.mask & ref.mask).sum() / max(1, (got.mask | ref.mask).sum())
        if differ.any():
            logits = postprocess_logits(torch.from_numpy(ref.low_res_logits)[None, None], resize)[0, 0].numpy()
            assert np.abs(logits[differ]).max() < NEAR_ZERO, f'{ref.prompt!r}: {int(differ.sum())} px differ'
        assert iou >= MIN_IOU or not (got.mask | ref.mask).any()
        report['max_low_res_logit_diff'] = max(report.get('max_low_res_logit_diff', 0.0), low_res)
        report['min_iou'] = min(report.get('min_iou', 1.0), float(iou) if (got.mask | ref.mask).any() else 1.0)
        report['pixels_differing'] = report.get('pixels_differing', 0) + int(differ.sum())


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('case', CASES)
def test_backend_matches_torch_on_conformance(exported, torch_cases, case, backend):
    _require(backend)
    cases, images = torch_cases
    reference = cases[case]['predictor']
    predictor = _backend_predictor(exported, reference, backend)
    assert predictor.backend == backend and predictor.config.behaviour == reference.config.behaviour
    report: dict = {}
    for name, rgb in images.items():
        ref_features = reference.encode_image(rgb)
        features = predictor.encode_image(rgb)
        ref_levels = ref_features.sam_embeddings if reference.config.is_sam2 else [ref_features.sam_embeddings]
        levels = features.sam_embeddings if reference.config.is_sam2 else [features.sam_embeddings]
        for ref_level, level in zip(ref_levels, levels, strict=True):
            diff = float((level - ref_level).abs().max())
            assert diff <= ATOL_FEATURES
            report['max_feature_diff'] = max(report.get('max_feature_diff', 0.0), diff)
        prompts = cases[case]['prompts']  # different lengths: the batch is padded
        ref_results = reference.segment(ref_features, prompts, return_logits=True)
        compare_results(ref_results, predictor.segment(features, prompts, return_logits=True), features.resize,
                        report)
        # one prompt at a time (batch of 1, no padding) gives the same
        compare_results(ref_results, predictor.segment(features, prompts, batch_size=1, return_logits=True),
                        features.resize, report)
    print(f'\n{backend} {case}: ' + ', '.join(f'{k}={v:.3g}' for k, v in report.items()))


@pytest.mark.parametrize('backend', BACKENDS)
def test_embedded_model_export_via_cli(tmp_path_factory, backend):
    _require(backend)
    out = tmp_path_factory.getbasetemp() / 'onnx_default'
    if not (out / 'export.json').is_file():
        assert cli_main(['export', 'default', str(out), '--threads', '1']) == 0
    reference = load_model(None)
    predictor = load_model(out, backend=backend, backend_options={'threads': 1})
    rgb = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    prompts = ['the red cup', 'the green block on the left', 'a ball']
    report: dict = {}
    ref_features = reference.encode_image(rgb)
    compare_results(reference.segment(ref_features, prompts, return_logits=True),
                    predictor.segment(predictor.encode_image(rgb), prompts, return_logits=True),
                    ref_features.resize, report)
    print(f'\n{backend} embedded model: ' + ', '.join(f'{k}={v:.3g}' for k, v in report.items()))


def test_same_prompt_checks_as_torch(exported, torch_cases):
    _require('onnxruntime')
    cases, images = torch_cases
    predictor = _backend_predictor(exported, cases['sam1_vit']['predictor'], 'onnxruntime')
    features = predictor.encode_image(images['portrait'])
    with pytest.raises(InvalidPromptError):
        predictor.segment(features, [''])
    with pytest.raises(InvalidPromptError):
        predictor.segment(features, ['word ' * (predictor.config.beit3.max_text_tokens + 5)])
    assert predictor.segment(features, []) == []


def test_missing_export_says_how_to_make_it(conformance_dir):
    _require('onnxruntime')
    with pytest.raises(ModelLoadError, match='evf-sam export'):
        load_model(conformance_dir / 'sam1_vit', backend='onnxruntime')


def test_checkpoint_onnx_subfolder_is_found(exported, tmp_path):
    _require('onnxruntime')
    (tmp_path / 'onnx').symlink_to(exported['sam1'], target_is_directory=True)
    assert load_model(tmp_path, backend='onnxruntime').export_dir == tmp_path / 'onnx'


def test_load_errors(exported, tiny_checkpoint_sam1):
    _require('onnxruntime')
    with pytest.raises(ModelLoadError, match='unknown backend'):
        load_model(exported['sam1'], backend='tensorflow')
    with pytest.raises(ModelLoadError, match='exported in fp32'):
        load_model(exported['sam1'], backend='onnxruntime', dtype='fp16')
    with pytest.raises(ModelLoadError, match='backend_options'):
        load_model(tiny_checkpoint_sam1, backend_options={'threads': 1})
    with pytest.raises(ModelLoadError, match='onnxruntime optimization'):
        load_model(exported['sam1'], backend='onnxruntime', backend_options={'optimization': 'max'})


def test_dtype_auto_is_fp32_on_cpu(tiny_checkpoint_sam1):
    assert load_model(tiny_checkpoint_sam1, device='cpu', dtype='auto').dtype == torch.float32


# ops of the exported graphs; all are in TensorRT 10's ONNX parser support matrix (opset 18)
TENSORRT_OPS = {'Add', 'Cast', 'Concat', 'Conv', 'ConvTranspose', 'Div', 'Einsum', 'Erf', 'Expand', 'Gather', 'Gemm',
                'IsNaN', 'LayerNormalization', 'MatMul', 'MaxPool', 'Mul', 'Pad', 'Relu', 'Reshape', 'Resize', 'Shape',
                'Sigmoid', 'Slice', 'Softmax', 'Squeeze', 'Tile', 'Transpose', 'Unsqueeze', 'Where'}


@pytest.mark.parametrize('arch', ['sam1', 'sam2'])
def test_graphs_follow_tensorrt_conventions(exported, arch):
    onnx = pytest.importorskip('onnx', reason='onnx is not installed (pip install -r requirements/deploy.txt)')
    manifest = json.loads((exported[arch] / 'export.json').read_text())
    for name, graph in manifest['graphs'].items():
        model = onnx.load(str(exported[arch] / graph['file']), load_external_data=False)
        assert model.opset_import[0].version == 18
        assert {n.op_type for n in model.graph.node} <= TENSORRT_OPS, name
        dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                for i in [*model.graph.input, *model.graph.output]}
        assert [i.name for i in model.graph.input] == graph['inputs']
        for tensor, shape in dims.items():
            symbolic = [d for d in shape if isinstance(d, str)]
            if name == 'image_encoder' or tensor.startswith(('sam_', 'beit3_', 'image_', 'high_res_')):
                assert not symbolic, f'{name}.{tensor} must be static for TensorRT: {shape}'
            else:  # only the prompt count and the text length vary
                assert set(symbolic) <= {'prompts', 'text_tokens'}, f'{name}.{tensor}: {shape}'


def test_int8_weights_run_and_are_marked(exported, torch_cases, tmp_path):
    _require('onnxruntime')
    from evf_sam_ros.model.quantize import quantize_export

    cases, images = torch_cases
    reference = cases['sam1_vit']['predictor']
    out = quantize_export(exported['sam1'], tmp_path / 'int8')
    assert json.loads((out / 'export.json').read_text())['weights'] == {'int8_dynamic': ['image_encoder',
                                                                                         'text_encoder']}
    predictor = load_model(out, backend='onnxruntime', backend_options={'threads': 1})
    results = predictor.segment(predictor.encode_image(images['landscape']), cases['sam1_vit']['prompts'])
    assert [r.mask.shape for r in results] == [images['landscape'].shape[:2]] * len(results)
    assert reference.config.behaviour == predictor.config.behaviour
