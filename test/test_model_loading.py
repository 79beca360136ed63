"""load_model / save_checkpoint: file formats, dtypes, HF cache, behaviour override, and every load error."""
from __future__ import annotations

import json
import logging
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from evf_sam_ros.model import EvfSamPredictor, ModelLoadError, load_model, save_checkpoint
from evf_sam_ros.model import loading
from evf_sam_ros.model.testing import make_tiny_checkpoint, make_tiny_model


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _image(seed=0, h=120, w=160):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: pathlib.Path, tensors) -> None:
    """Replace a weight file whose load_file() tensors are still in use: they map the file (zero copy), and
    safetensors 0.4's save_file rewrites it in place (0.8's writes a new file), which changed those tensors
    under the test (or raised SIGBUS). A new file leaves the old mapping intact."""
    path.unlink()
    save_file(tensors, str(path))


@pytest.fixture(scope='module')
def small_ckpt(tmp_path_factory):
    """A tiny SAM-1 checkpoint at 256 px (fast), used as the template of the broken variants below."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp('small_sam1'), sam='sam1', seed=4, sam_image_size=256)


def _predict(predictor: EvfSamPredictor, prompts=('the red cup', 'a dog running on the grass')):
    return predictor.predict(_image(), list(prompts), return_logits=True)


# ---- the conftest checkpoints and the basic contract ---------------------------------------------
def test_tiny_checkpoints_load(tiny_checkpoint_sam1, tiny_checkpoint_sam2):
    p1 = load_model(tiny_checkpoint_sam1)
    p2 = load_model(str(tiny_checkpoint_sam2), device='cpu', dtype='fp32')
    assert isinstance(p1, EvfSamPredictor) and isinstance(p2, EvfSamPredictor)
    assert (p1.has_object_score, p2.has_object_score) == (False, True)
    assert p1.name == str(tiny_checkpoint_sam1) and not p1.is_default_model
    assert p1.device == torch.device('cpu') and p1.dtype == torch.float32
    assert p1.config.behaviour.mask_selection == 'single' and p1.config.sam_image_size == 1024
    assert p2.config.behaviour.mask_selection == 'best_of_3' and p2.config.behaviour.multitask
    assert p2.tokenizer.convert_tokens_to_ids('[semantic]') == len(p2.tokenizer) - 1
    files = sorted(f.name for f in tiny_checkpoint_sam2.iterdir())
    assert files == ['added_tokens.json', 'config.json', 'model.safetensors', 'sentencepiece.bpe.model',
                     'special_tokens_map.json', 'tokenizer_config.json']
    assert sum(f.stat().st_size for f in tiny_checkpoint_sam2.iterdir()) < 3_000_000


def test_tiny_checkpoint_is_deterministic(tmp_path):
    a = make_tiny_checkpoint(tmp_path / 'a', sam='sam2', seed=7, sam_image_size=256)
    b = make_tiny_checkpoint(tmp_path / 'b', sam='sam2', seed=7, sam_image_size=256)
    c = make_tiny_checkpoint(tmp_path / 'c', sam='sam2', seed=8, sam_image_size=256)
    assert (a / 'model.safetensors').read_bytes() == (b / 'model.safetensors').read_bytes()
    assert (a / 'sentencepiece.bpe.model').read_bytes() == (b / 'sentencepiece.bpe.model').read_bytes()
    assert (a / 'model.safetensors').read_bytes() != (c / 'model.safetensors').read_bytes()


def test_save_load_round_trip_equals_source_model(tmp_path, small_ckpt):
    model = make_tiny_model('sam2', multitask=True, seed=11, sam_image_size=256)
    out = save_checkpoint(model, small_ckpt, tmp_path / 'ckpt')  # tokenizer files copied from a directory
    loaded = load_model(out)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    raw = json.loads((out / 'config.json').read_text())
    assert raw['architectures'] == ['EvfSam2Model'] and raw['evf_sam_ros']['sam_kind'] == 'sam2'
    # SAM-2 export holds the image path only
    assert not any('memory' in k for k in load_file(out / 'model.safetensors'))


def test_save_with_loaded_tokenizer_object_and_fp16(tmp_path, tiny_checkpoint_sam2):
    predictor = load_model(tiny_checkpoint_sam2)
    out = save_checkpoint(predictor.model, predictor.tokenizer, tmp_path / 'fp16', dtype=torch.float16)
    stored = load_file(out / 'model.safetensors')
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert json.loads((out / 'config.json').read_text())['torch_dtype'] == 'float16'
    reloaded = load_model(out)  # fp16 on disk, fp32 in memory
    assert reloaded.model.dtype == torch.float32
    assert reloaded.tokenizer('[semantic] sky')['input_ids'] == predictor.tokenizer('[semantic] sky')['input_ids']


def test_safetensors_and_bin_give_identical_results(tmp_path):
    st = make_tiny_checkpoint(tmp_path / 'st', sam='sam1', seed=2, sam_image_size=256)
    pt = make_tiny_checkpoint(tmp_path / 'pt', sam='sam1', seed=2, sam_image_size=256, weights_format='bin')
    assert (pt / 'pytorch_model.bin').is_file() and not (pt / 'model.safetensors').exists()
    a, b = _predict(load_model(st)), _predict(load_model(pt))
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.mask, rb.mask) and ra.score == rb.score
        assert np.array_equal(ra.low_res_logits, rb.low_res_logits)


def test_bin_with_python_objects_is_refused(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'ckpt')
    state = load_file(ckpt / 'model.safetensors')
    (ckpt / 'model.safetensors').unlink()
    torch.save({**state, 'extra': pathlib.Path('/')}, ckpt / 'pytorch_model.bin')
    with pytest.raises(ModelLoadError, match=r'Python objects other than tensors \(pathlib'):
        load_model(ckpt)


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ('echo pwned > /dev/null',))


def test_malicious_pickle_in_a_zip_checkpoint_is_refused_for_safety(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'ckpt')
    state = load_file(ckpt / 'model.safetensors')
    (ckpt / 'model.safetensors').unlink()
    torch.save({**state, 'payload': _RunsCode()}, ckpt / 'pytorch_model.bin')   # zip format
    with pytest.raises(ModelLoadError, match='REFUSED for safety') as err:
        load_model(ckpt)
    assert 'corrupt' not in str(err.value)


def test_non_finite_weights_are_refused(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'ckpt')
    state = load_file(ckpt / 'model.safetensors')
    _rewrite(ckpt / 'model.safetensors',
             {k: (torch.full_like(v, float('nan')) if v.is_floating_point() else v) for k, v in state.items()})
    with pytest.raises(ModelLoadError, match='NaN or inf'):
        load_model(ckpt)


def test_mixed_per_tensor_dtypes(tmp_path, small_ckpt):
    """Like evf-sam2 on disk: BEiT-3 + projection fp32, SAM fp16; cast per tensor on load."""
    ckpt = _copy(small_ckpt, tmp_path / 'mixed')
    state = load_file(ckpt / 'model.safetensors')
    mixed = {k: (v.half() if k.startswith('visual_model.') else v) for k, v in state.items()}
    _rewrite(ckpt / 'model.safetensors', mixed)
    predictor = load_model(ckpt)
    official = predictor.model.official_state_dict()
    for key, value in mixed.items():
        assert official[key].dtype == torch.float32
        assert torch.equal(official[key], value.float()), key
    bf16 = load_model(ckpt, dtype=torch.bfloat16)
    assert bf16.model.beit3.text_embed.weight.dtype == torch.bfloat16
    assert bf16.model.sam.vision_encoder.neck.conv1.weight.dtype == torch.float32  # SAM-1 neck stays fp32


def test_sharded_safetensors(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'sharded')
    state = load_file(ckpt / 'model.safetensors')
    (ckpt / 'model.safetensors').unlink()
    keys = sorted(state)
    shards = {'model-00001-of-00002.safetensors': keys[:len(keys) // 2],
              'model-00002-of-00002.safetensors': keys[len(keys) // 2:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(ckpt / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (ckpt / 'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))
    sharded = [r.mask.sum() for r in _predict(load_model(ckpt))]
    assert sharded == [r.mask.sum() for r in _predict(load_model(small_ckpt))]
    (ckpt / 'model-00002-of-00002.safetensors').unlink()
    with pytest.raises(ModelLoadError, match='shard'):
        load_model(ckpt)


def test_behaviour_override_reproduces_the_other_fixture(conformance_dir):
    """sam2_hiera_stability and sam2_hiera_best3 share weights: overriding the behaviour of one gives the other."""
    pair = json.loads((conformance_dir / 'sam2_hiera_best3' / 'cases.json').read_text())['pairs'][4]
    expected = load_file(conformance_dir / 'sam2_hiera_best3' / pair['expected_file'])
    rgb = np.asarray(Image.open(conformance_dir / 'images' / f'{pair["image_name"]}.png').convert('RGB'))
    predictor = load_model(conformance_dir / 'sam2_hiera_stability',
                           behaviour={'sam_resize': 'square', 'mask_selection': 'best_of_3'})
    assert predictor.config.behaviour.sam_resize == 'square'
    result = predictor.predict(rgb, [pair['prompt']])[0]
    differ = result.mask != expected['final_mask'][0].numpy().astype(bool)
    assert int(differ.sum()) <= pair['final_pixels_with_abs_logit_below_1e-4']
    assert result.token_index == pair['selected_token_index']
    with pytest.raises(ModelLoadError, match='invalid behaviour override'):
        load_model(conformance_dir / 'sam2_hiera_stability', behaviour={'mask_selection': 'biggest'})


# ---- Hugging Face cache ------------------------------------------------------------------------------
def _fake_hf_cache(root: pathlib.Path, repo: str, source: pathlib.Path) -> None:
    org, name = repo.split('/')
    base = root / f'models--{org}--{name}'
    revision = '0123456789abcdef0123456789abcdef01234567'
    shutil.copytree(source, base / 'snapshots' / revision)
    (base / 'refs').mkdir(parents=True)
    (base / 'refs' / 'main').write_text(revision)


def test_hf_cache_lookup_offline(tmp_path, monkeypatch, small_ckpt):
    cache = tmp_path / 'hub'
    _fake_hf_cache(cache, 'Org/evf-tiny', small_ckpt)
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)  # read at import time: never go online
    predictor = load_model('Org/evf-tiny')
    assert predictor.name == 'Org/evf-tiny'
    assert 'snapshots' in str(loading.resolve_checkpoint_dir('Org/evf-tiny')[0])
    with pytest.raises(ModelLoadError) as err:
        load_model('Org/not-cached')
    msg = str(err.value)
    assert 'not in the local Hugging Face cache' in msg and 'allow_download=True' in msg and str(cache) in msg
    # allowed to download, but offline: a clear error too (no network is touched)
    with pytest.raises(ModelLoadError, match='download failed'):
        load_model('Org/not-cached', allow_download=True)


# ---- errors --------------------------------------------------------------------------------------------
def test_error_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match='does not exist'):
        load_model(tmp_path / 'nope')
    with pytest.raises(ModelLoadError, match='does not exist'):
        load_model('./relative/nope')


def test_error_path_is_a_file(tmp_path):
    (tmp_path / 'model.safetensors').write_bytes(b'x')
    with pytest.raises(ModelLoadError, match='is a file'):
        load_model(tmp_path / 'model.safetensors')


def test_error_missing_config(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    (ckpt / 'config.json').unlink()
    with pytest.raises(ModelLoadError, match='no config.json'):
        load_model(ckpt)
    (ckpt / 'config.json').write_text('{"architectures": [')
    with pytest.raises(ModelLoadError, match='not valid JSON'):
        load_model(ckpt)


def test_error_unknown_architecture(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    raw = json.loads((ckpt / 'config.json').read_text())
    del raw['evf_sam_ros']
    raw['architectures'] = ['EvfEffiSamModel']
    (ckpt / 'config.json').write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="unknown architecture 'EvfEffiSamModel'"):
        load_model(ckpt)


def test_error_missing_weights(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    (ckpt / 'model.safetensors').unlink()
    with pytest.raises(ModelLoadError, match='no weights: expected model.safetensors or pytorch_model.bin'):
        load_model(ckpt)


def test_error_weights_of_another_architecture(tmp_path, small_ckpt):
    """config.json of one size, weights of another: missing/unexpected/mis-shaped keys are named."""
    other = make_tiny_checkpoint(tmp_path / 'sam2', sam='sam2', seed=0, sam_image_size=256)
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    shutil.copyfile(other / 'model.safetensors', ckpt / 'model.safetensors')
    with pytest.raises(ModelLoadError) as err:
        load_model(ckpt)
    msg = str(err.value)
    assert 'missing key(s): ' in msg and 'visual_model.image_encoder.blocks.0.attn.qkv.weight' in msg
    assert 'unexpected key(s): ' in msg and 'visual_model.image_encoder.trunk.' in msg
    assert 'config.json' in msg


def test_error_mis_shaped_weights(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    state = load_file(ckpt / 'model.safetensors')
    state['mm_extractor.beit3.text_embed.weight'] = state['mm_extractor.beit3.text_embed.weight'][:-1].clone()
    _rewrite(ckpt / 'model.safetensors', state)
    with pytest.raises(ModelLoadError, match=r'wrong shape: mm_extractor.beit3.text_embed.weight \(file'):
        load_model(ckpt)


@pytest.mark.parametrize('weights', ['model.safetensors', 'pytorch_model.bin'])
def test_error_truncated_weights(tmp_path, small_ckpt, weights):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    if weights == 'pytorch_model.bin':
        torch.save(load_file(ckpt / 'model.safetensors'), ckpt / weights)
        (ckpt / 'model.safetensors').unlink()
    data = (ckpt / weights).read_bytes()
    (ckpt / weights).write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelLoadError, match='truncated or corrupt'):
        load_model(ckpt)


@pytest.mark.parametrize('weights', ['model.safetensors', 'pytorch_model.bin'])
def test_error_corrupt_weights(tmp_path, small_ckpt, weights):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    (ckpt / 'model.safetensors').unlink()
    (ckpt / weights).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match='truncated or corrupt'):
        load_model(ckpt)


def test_error_tokenizer_missing(tmp_path, small_ckpt):
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    (ckpt / 'sentencepiece.bpe.model').unlink()
    with pytest.raises(ModelLoadError, match='tokenizer missing'):
        load_model(ckpt)
    (ckpt / 'sentencepiece.bpe.model').write_bytes(b'not a sentencepiece model')
    with pytest.raises(ModelLoadError, match='not a valid sentencepiece model'):
        load_model(ckpt)


def test_error_cuda_unavailable(monkeypatch, small_ckpt):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for device in ('cuda', 'cuda:1'):
        with pytest.raises(ModelLoadError, match='CUDA is not available'):
            load_model(small_ckpt, device=device)
    assert load_model(small_ckpt, device='auto').device == torch.device('cpu')


def test_error_bad_device_and_dtype(small_ckpt):
    with pytest.raises(ModelLoadError, match='unknown device'):
        load_model(small_ckpt, device='gpu0')
    with pytest.raises(ModelLoadError, match='unknown dtype'):
        load_model(small_ckpt, dtype='int8')
    with pytest.raises(ModelLoadError, match='unsupported dtype'):
        load_model(small_ckpt, dtype=torch.float64)


def test_tokenizer_must_fit_embedding(tmp_path, small_ckpt, caplog):
    """A tokenizer larger than the table is refused; one that leaves most rows unused is most likely another
    model's (every prompt silently misread) and is warned about."""
    ckpt = _copy(small_ckpt, tmp_path / 'c')
    raw = json.loads((ckpt / 'config.json').read_text())
    raw['evf_sam_ros']['beit3']['vocab_size'] = 10
    (ckpt / 'config.json').write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match='tokenizer has .* tokens but the BEiT-3 embedding only 10 rows'):
        load_model(ckpt)
    with caplog.at_level(logging.WARNING, logger=loading.log.name):
        load_model(small_ckpt)
    assert 'misread' not in caplog.text     # a checkpoint's own tokenizer: no warning
    raw['evf_sam_ros']['beit3']['vocab_size'] = 100_000
    (ckpt / 'config.json').write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger=loading.log.name), pytest.raises(ModelLoadError):
        load_model(ckpt)                     # the weights' table does not match the config either
    assert 'but the BEiT-3 embedding 100000 rows' in caplog.text and 'misread' in caplog.text


def test_default_model(monkeypatch, tmp_path, small_ckpt):
    if (loading.DEFAULT_MODEL_DIR / 'config.json').is_file():
        assert load_model().is_default_model
    else:
        with pytest.raises(ModelLoadError, match='embedded default model is not installed'):
            load_model()
    # with a default model in place (a stand-in directory)
    monkeypatch.setattr(loading, 'DEFAULT_MODEL_DIR', small_ckpt)
    predictor = load_model(None)
    assert predictor.is_default_model and predictor.name == 'default'
    assert load_model(small_ckpt).is_default_model


def test_make_tokenizer_dir_from_own_spm(tmp_path, conformance_dir):
    import io

    import sentencepiece as spm

    from evf_sam_ros.model.tokenizer import load_tokenizer, make_tokenizer_dir

    out = make_tokenizer_dir(tmp_path / 'tok', conformance_dir / 'sam1_vit' / 'sentencepiece.bpe.model', multitask=True)
    tokenizer = load_tokenizer(out)
    assert tokenizer('[semantic] grass')['input_ids'] == [0, 257, 125, 2]  # as in the fixture's cases.json
    assert tokenizer('Blue')['input_ids'][:3] == [0, 6, 3]  # unknown 'B' -> <unk> = 3
    buffer = io.BytesIO()  # a model with the sentencepiece default pad/unk layout of other projects
    spm.SentencePieceTrainer.train(sentence_iterator=iter(['a b c d'] * 10), model_writer=buffer, vocab_size=12,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(ValueError, match='XLM-R id layout'):
        make_tokenizer_dir(tmp_path / 'bad', buffer.getvalue())
