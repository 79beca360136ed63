"""Opt-in parity test at the real sizes (SAM ViT-H / SAM-2.0 Hiera-L + BEiT-3 Large) against
../shared/fixtures/evf_fullsize: the official code's outputs on deterministic pseudo-random weights.

    make test ARGS='-m fullsize'        # about 10 minutes on 2 CPU cores, ~11 GB RAM, ~9 GB of /tmp

Each case's checkpoint directory is assembled as the fixture README says; the weights are regenerated
from the fixture's rule (every tensor a function of its key name and shape).
"""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from evf_sam_ros.model.testing import FULLSIZE_CASES as CASES
from evf_sam_ros.model.testing import make_fullsize_checkpoint

pytestmark = [pytest.mark.fullsize, pytest.mark.slow]


@pytest.fixture(scope='module', params=list(CASES))
def fullsize_case(request, fullsize_dir, tmp_path_factory):
    from evf_sam_ros.model import load_model

    case = request.param
    ckpt = make_fullsize_checkpoint(fullsize_dir, case, tmp_path_factory.mktemp(case))
    predictor = load_model(ckpt, device='cpu', dtype=torch.float32)
    yield case, predictor
    shutil.rmtree(ckpt, ignore_errors=True)


def test_fullsize_parity(fullsize_case, fullsize_dir):
    from safetensors.torch import load_file

    worst: dict[str, float] = {}

    def check(name, actual, wanted, atol, rtol=0.0):
        diff = (actual.float() - wanted.float()).abs().max().item()
        worst[name] = max(worst.get(name, 0.0), diff)
        torch.testing.assert_close(actual.float(), wanted.float(), atol=atol, rtol=rtol, msg=lambda m: f'{name}: {m}')

    case, predictor = fullsize_case
    info = json.loads((fullsize_dir / case / 'case.json').read_text())
    expected = load_file(str(fullsize_dir / case / 'expected.safetensors'))
    model = predictor.model
    for image_name in ('landscape', 'portrait'):
        rgb = np.asarray(Image.open(fullsize_dir / f'{image_name}.png').convert('RGB'))
        features = predictor.encode_image(rgb, keep_sam_input=True)
        e = {k[len(image_name) + 1:]: v for k, v in expected.items() if k.startswith(image_name + '.')}
        check('sam_pixel_values', features.sam_pixel_values[..., ::64, ::64], e['sam_pixel_values_stride64'], 1e-5)
        check('beit3_pixel_values', features.beit3_pixel_values[..., ::14, ::14], e['beit3_pixel_values_stride14'],
              1e-5)
        emb = features.sam_embeddings
        image_emb = emb[-1] if isinstance(emb, (list, tuple)) else emb
        check('image_embeddings', image_emb[..., ::16, ::16], e['image_embeddings_stride16'], 1e-3, 1e-4)
        if isinstance(emb, (list, tuple)):
            check('high_res_s0', emb[0][..., ::64, ::64], e['high_res_feat_s0_stride64'], 1e-3, 1e-4)
            check('high_res_s1', emb[1][..., ::32, ::32], e['high_res_feat_s1_stride32'], 1e-3, 1e-4)
        for k, prompt in enumerate(info['prompts']):
            p = f'p{k}.'
            ids, am = predictor.tokenize([prompt])
            assert ids.tolist() == e[p + 'input_ids'].tolist()
            with torch.inference_mode():
                cls = model.beit3_features(features.beit3_pixel_values, ids, am)[:, :1]
                prompt_emb = model.prompt_embeddings(features.beit3_pixel_values, ids, am)
                out = model.decode_all(features.sam_embeddings, prompt_emb, predictor.dense_positional_embedding())
            check('beit3_cls', cls, e[p + 'beit3_cls'], 1e-4)
            check('prompt_embedding', prompt_emb, e[p + 'prompt_embedding'], 1e-4)
            check('iou_predictions', out.iou_scores.reshape(1, 4), e[p + 'iou_predictions_all_tokens'], 1e-5)
            check('all_low_res_logits', out.masks.reshape(1, 4, 256, 256), e[p + 'all_low_res_logits'], 1e-3)
            (result,) = predictor.segment(features, [prompt], return_logits=True)
            assert result.token_index == int(e[p + 'selected_token_index'])
            if p + 'object_score_logits' in e:
                assert result.object_score == pytest.approx(float(e[p + 'object_score_logits']), abs=1e-5)
            if p + 'stability_score_token0' in e:
                assert result.stability_score == pytest.approx(float(e[p + 'stability_score_token0']), abs=1e-4)
            expected_mask = e[p + 'final_mask'][0].numpy().astype(bool)
            differ = result.mask != expected_mask
            iou = (result.mask & expected_mask).sum() / max(1, (result.mask | expected_mask).sum())
            assert iou >= 0.999, f'{case} {image_name} p{k}: mask IoU {iou:.5f}'
            if differ.any():
                # every differing pixel must sit where the reference logit is within 1e-2 of the threshold
                from evf_sam_ros.model.preprocessing import postprocess_logits
                ref = postprocess_logits(e[p + 'selected_low_res_logits'], features.resize)[0, 0].numpy()
                assert np.abs(ref[differ]).max() < 1e-2, f'{case} {image_name} p{k}: {differ.sum()} px differ'
            worst['mask_pixels_differing'] = max(worst.get('mask_pixels_differing', 0), int(differ.sum()))
    print(f'\n{case}: worst abs differences ' + ', '.join(f'{k}={v:.2g}' for k, v in worst.items()))
