"""Predictor API: encode once / segment many, batching == one-by-one, errors, dtypes, mask helpers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from evf_sam_ros.model import (EvfSamError, EvfSamOutOfMemoryError, InvalidImageError, InvalidPromptError,
                               SegmentationResult, load_model, mask_area, mask_bbox, mask_centroid)
from evf_sam_ros.model.testing import make_tiny_checkpoint


pytestmark = pytest.mark.usefixtures('one_torch_thread')

PROMPTS = ['the red cup', 'a dog running on the grass near the small white car behind the tree', 'sky',
           '[semantic] floor', 'the object on the far right']


def _scene(h=150, w=200, seed=0):
    """Random texture with a few flat shapes, so masks are not pure noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[20:70, 30:90] = (220, 30, 30)
    img[80:140, 120:190] = (30, 30, 220)
    return img


@pytest.fixture(scope='module')
def predictors(tiny_checkpoint_sam1, tiny_checkpoint_sam2):
    return {'sam1': load_model(tiny_checkpoint_sam1), 'sam2': load_model(tiny_checkpoint_sam2)}


@pytest.fixture(scope='module')
def stability_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('stab'), sam='sam2', seed=1, sam_image_size=256)


@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_segment_results(predictors, sam):
    predictor = predictors[sam]
    img = _scene()
    features = predictor.encode_image(img)
    assert features.original_size == (150, 200)
    assert features.beit3_pixel_values.shape == (1, 3, 224, 224)
    results = predictor.segment(features, PROMPTS, return_logits=True)
    assert [r.prompt for r in results] == PROMPTS
    for r in results:
        assert isinstance(r, SegmentationResult)
        assert r.mask.shape == (150, 200) and r.mask.dtype == np.bool_
        assert isinstance(r.score, float) and np.isfinite(r.score)
        assert r.low_res_logits.shape == (256, 256) and r.low_res_logits.dtype == np.float32
        assert r.area == mask_area(r.mask) and r.bbox == mask_bbox(r.mask) and r.centroid == mask_centroid(r.mask)
        if sam == 'sam1':
            assert r.object_score is None and r.token_index == 0
        else:
            assert isinstance(r.object_score, float) and r.token_index in (1, 2, 3)
    assert predictor.segment(features, []) == []
    assert predictor.predict(img, PROMPTS[:1])[0].mask.shape == (150, 200)


@pytest.mark.parametrize('sam', ['sam1', 'sam2', 'stability'])
def test_batch_equals_one_by_one(predictors, stability_ckpt, sam):
    predictor = load_model(stability_ckpt) if sam == 'stability' else predictors[sam]
    features = predictor.encode_image(_scene(seed=1))
    batched = predictor.segment(features, PROMPTS, return_logits=True)
    chunked = predictor.segment(features, PROMPTS, batch_size=2, return_logits=True)
    for i, prompt in enumerate(PROMPTS):
        single = predictor.segment(features, [prompt], return_logits=True)[0]
        for other in (batched[i], chunked[i]):
            assert other.token_index == single.token_index
            assert other.score == pytest.approx(single.score, abs=1e-5)
            np.testing.assert_allclose(other.low_res_logits, single.low_res_logits, atol=1e-4)
            # a pixel may only flip where the logit is ~0
            assert (other.mask != single.mask).mean() < 1e-3
            if single.object_score is not None:
                assert other.object_score == pytest.approx(single.object_score, abs=1e-5)
            if sam == 'stability':
                assert other.stability_score == pytest.approx(single.stability_score, abs=1e-4)


def test_features_are_reusable_and_deterministic(predictors):
    predictor = predictors['sam2']
    img = _scene(seed=2)
    f1, f2 = predictor.encode_image(img), predictor.encode_image(img)
    a = predictor.segment(f1, PROMPTS[:2])
    b = predictor.segment(f1, PROMPTS[:2])
    c = predictor.segment(f2, PROMPTS[:2])
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.mask, y.mask) and np.array_equal(x.mask, z.mask) and x.score == z.score


def test_small_sam_image_size(tmp_path):
    predictor = load_model(make_tiny_checkpoint(tmp_path, sam='sam1', sam_image_size=256))
    features = predictor.encode_image(_scene(h=300, w=100))
    assert features.sam_embeddings.shape == (1, 32, 16, 16)
    assert features.resize.resized_size == (256, 85)
    r = predictor.segment(features, ['the cup'], return_logits=True)[0]
    assert r.mask.shape == (300, 100) and r.low_res_logits.shape == (64, 64)


def test_tokenize_pads_right_with_pad_id_1(predictors):
    predictor = predictors['sam1']
    ids, mask = predictor.tokenize(['sky', 'the red cup'])
    assert ids.dtype == torch.long and ids.shape == mask.shape and ids.shape[0] == 2
    n = int(mask[0].sum())
    assert ids[0, 0] == 0 and ids[0, n - 1] == 2 and (ids[0, n:] == 1).all() and (mask[0, n:] == 0).all()
    assert mask[1].all()


# ---- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('prompts,match', [
    ([''], 'prompt 0 is empty'),
    (['ok', '   '], 'prompt 1 is empty'),
    (['ok', 3], 'prompt 1 is a int, not a string'),
    ('the red cup', 'single string'),
    (['cup ' * 1100], 'at most 1022'),
])
def test_prompt_errors(predictors, prompts, match):
    predictor = predictors['sam1']
    features = predictor.encode_image(_scene(h=40, w=40))
    with pytest.raises(InvalidPromptError, match=match) as err:
        predictor.segment(features, prompts)
    assert isinstance(err.value, EvfSamError) and isinstance(err.value, ValueError)


def test_prompt_of_exactly_1022_tokens_is_accepted(predictors):
    predictor = predictors['sam1']
    one = predictor.tokenize(['cup'])[0].shape[1] - 2  # pieces per word
    prompt = ' '.join(['cup'] * (1020 // one))
    assert predictor.tokenize([prompt])[0].shape[1] <= 1022
    assert predictor.segment(predictor.encode_image(_scene(h=40, w=40)), [prompt])[0].mask.shape == (40, 40)


@pytest.mark.parametrize('image,match', [
    (np.zeros((20, 30, 3), dtype=np.float32), 'expected dtype uint8'),
    (np.zeros((20, 30), dtype=np.uint8), 'grayscale'),
    (np.zeros((20, 30, 4), dtype=np.uint8), 'RGBA'),
    (np.zeros((3, 20, 30), dtype=np.uint8), 'channels first'),
    (np.zeros((0, 30, 3), dtype=np.uint8), 'empty'),
    (np.zeros((20, 0, 3), dtype=np.uint8), 'empty'),
    ([[[0, 0, 0]]], 'numpy array'),
])
def test_image_errors(predictors, image, match):
    with pytest.raises(InvalidImageError, match=match) as err:
        predictors['sam1'].encode_image(image)
    assert isinstance(err.value, EvfSamError)


def test_read_only_and_tiny_images(predictors):
    img = _scene(h=1, w=1)
    img.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        result = predictors['sam2'].predict(img, ['sky'])[0]
    assert result.mask.shape == (1, 1)
    assert predictors['sam1'].predict(_scene(h=1300, w=17), ['sky'])[0].mask.shape == (1300, 17)


def test_out_of_memory_is_reported_with_advice(predictors, monkeypatch):
    predictor = predictors['sam1']
    features = predictor.encode_image(_scene(h=40, w=40))

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(predictor.model, 'decode_all', boom)
    with pytest.raises(EvfSamOutOfMemoryError, match='fp16.*fewer') as err:
        predictor.segment(features, ['sky'])
    assert isinstance(err.value, EvfSamError) and isinstance(err.value, MemoryError)
    monkeypatch.setattr(predictor.model, 'encode_sam_image', boom)
    with pytest.raises(EvfSamOutOfMemoryError, match='encode_image'):
        predictor.encode_image(_scene(h=40, w=40))


# ---- reduced precision on CPU ----------------------------------------------------------------------
@pytest.fixture(scope='module')
def small_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('small')
    return {'sam1': make_tiny_checkpoint(root / 'sam1', sam='sam1', seed=5, sam_image_size=256),
            'sam2': make_tiny_checkpoint(root / 'sam2', sam='sam2', multitask=True, seed=5, sam_image_size=256)}


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_reduced_precision_close_to_fp32(small_checkpoints, sam, dtype):
    """CPU bf16/fp16 paths run end to end and give masks close to fp32 (random tiny weights)."""
    ref_predictor = load_model(small_checkpoints[sam])
    low = load_model(small_checkpoints[sam], dtype=dtype)
    assert low.dtype == dtype and low.model.beit3.text_embed.weight.dtype == dtype
    img = _scene(seed=3)
    ref = ref_predictor.predict(img, PROMPTS[:3], return_logits=True)
    got = low.predict(img, PROMPTS[:3], return_logits=True)
    for r, g in zip(ref, got):
        assert g.mask.dtype == np.bool_ and g.mask.shape == r.mask.shape
        agreement = (g.mask == r.mask).mean()
        assert agreement > 0.97, agreement
        scale = np.abs(r.low_res_logits).max()
        assert np.abs(g.low_res_logits - r.low_res_logits).mean() < 0.02 * scale
        assert g.score == pytest.approx(r.score, abs=0.05)
        if r.object_score is not None:
            assert g.object_score == pytest.approx(r.object_score, abs=0.1)


def test_features_of_another_dtype_are_refused(small_checkpoints):
    fp32 = load_model(small_checkpoints['sam1'])
    bf16 = load_model(small_checkpoints['sam1'], dtype='bf16')
    with pytest.raises(ValueError, match='encode the image with this model'):
        bf16.segment(fp32.encode_image(_scene(h=40, w=40)), ['sky'])
    with pytest.raises(TypeError, match='ImageFeatures'):
        fp32.segment(_scene(h=40, w=40), ['sky'])


# ---- mask helpers ------------------------------------------------------------------------------------
def test_mask_helpers():
    mask = np.zeros((10, 20), dtype=bool)
    assert mask_area(mask) == 0 and mask_bbox(mask) is None and mask_centroid(mask) is None
    mask[2:5, 3:9] = True  # rows 2..4, cols 3..8
    assert mask_area(mask) == 18
    assert mask_bbox(mask) == (3, 2, 6, 3)
    assert mask_centroid(mask) == pytest.approx((5.5, 3.0))
    mask[9, 19] = True
    assert mask_bbox(mask) == (3, 2, 17, 8)
    assert mask_area(mask.astype(np.uint8)) == 19
    with pytest.raises(ValueError):
        mask_area(np.zeros((2, 2, 2), dtype=bool))
