"""Key mapping official <-> ours: round trips, the released key lists (names and shapes), error naming."""
from __future__ import annotations

import pathlib
import re

import pytest
import torch
from safetensors.torch import load_file

from evf_sam_ros.model.config import EvfSamConfig
from evf_sam_ros.errors import ModelLoadError
from evf_sam_ros.model.key_mapping import is_ignored_official_key
from evf_sam_ros.model.modeling import EvfSamModel
from evf_sam_ros.model.testing import make_tiny_model


pytestmark = pytest.mark.usefixtures('one_torch_thread')

KEYS_DIR = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'reference' / 'keys'


def _read_key_list(path: pathlib.Path) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith('#'):
            continue
        name, shape = line.split('\t')
        keys[name] = tuple(int(v) for v in re.findall(r'\d+', shape))
    return keys


@pytest.fixture(scope='module')
def reference_keys(conformance_dir):  # conformance_dir: skips (or fails under CI) without ../shared
    keys_dir = conformance_dir.parents[1] / 'reference' / 'keys'
    return {name: _read_key_list(keys_dir / f'keys_{name}.txt') for name in ('sam', 'sam2')}


@pytest.mark.parametrize('case', ['sam1_vit', 'sam2_hiera_best3'])
def test_fixture_round_trip_official_ours_official(conformance_dir, case):
    official = load_file(conformance_dir / case / 'model.safetensors')
    config = EvfSamConfig.from_checkpoint_dir(conformance_dir / case)
    model = EvfSamModel(config)
    ignored = model.load_official_state_dict(official)
    exported = model.official_state_dict()
    used = {k for k in official if not is_ignored_official_key(k, config.sam_kind)}
    assert set(exported) == used
    assert set(ignored) == set(official) - used
    if config.is_sam2:
        assert len(ignored) == 97  # memory modules of the fixture, as its README says
        assert all(k.startswith('visual_model.') for k in ignored) and 'visual_model.no_mem_embed' in used
    else:
        assert not ignored
    for key in used:
        assert torch.equal(exported[key], official[key]), key


@pytest.mark.parametrize('preset,name', [('evf-sam', 'sam'), ('evf-sam2', 'sam2'), ('evf-sam2-multitask', 'sam2')])
def test_full_size_keys_and_shapes_match_released_lists(reference_keys, preset, name):
    """Built on the meta device (nothing allocated): names and shapes against reference/keys/keys_*.txt."""
    with torch.device('meta'):
        model = EvfSamModel(EvfSamConfig.preset(preset))
    exported = {k: tuple(v.shape) for k, v in model.official_state_dict().items()}
    reference = reference_keys[name]
    used = {k: v for k, v in reference.items() if not is_ignored_official_key(k, model.config.sam_kind)}
    assert exported == used
    if name == 'sam2':
        skipped = set(reference) - set(used)
        assert len(skipped) == 157  # the video/memory tensors
        assert {k.split('.')[1] for k in skipped} == {'memory_attention', 'memory_encoder', 'mask_downsample',
                                                     'obj_ptr_proj', 'maskmem_tpos_enc', 'no_mem_pos_enc',
                                                     'no_obj_ptr'}
    else:
        assert len(exported) == 1569


@pytest.mark.parametrize('preset,name', [('evf-sam', 'sam'), ('evf-sam2', 'sam2')])
def test_full_size_load_from_released_key_list(reference_keys, preset, name):
    """Every released key (memory keys included for SAM-2) loads strictly into the full-size model (meta)."""
    with torch.device('meta'):
        model = EvfSamModel(EvfSamConfig.preset(preset))
        state = {k: torch.empty(shape) for k, shape in reference_keys[name].items()}
    ignored = model.load_official_state_dict(state, assign=True)
    assert len(ignored) == (157 if name == 'sam2' else 0)


@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_mapping_is_a_bijection(sam):
    model = make_tiny_model(sam, sam_image_size=256)
    mapping = model.key_mapping()
    ours = set(model.state_dict())
    duplicate = 'sam.shared_image_embedding.positional_embedding'  # filled from the prompt encoder's matrix
    covered = set(mapping.ours_to_official) | set(mapping.concat_sources)
    assert covered | {duplicate} == ours
    assert len(set(mapping.ours_to_official.values())) == len(mapping.ours_to_official)
    gaussian = mapping.ours_to_official['sam.prompt_encoder.shared_embedding.positional_embedding']
    assert sorted(mapping.official_to_ours[gaussian]) == sorted(
        [duplicate, 'sam.prompt_encoder.shared_embedding.positional_embedding'])
    prefixes = {k.split('.')[0] for k in mapping.official_keys()}
    assert prefixes == {'visual_model', 'mm_extractor', 'text_hidden_fcs'}
    assert all(k.startswith('mm_extractor.beit3.') for k in mapping.official_keys() if k.startswith('mm_'))


def test_sam2_point_embeddings_split_and_concat():
    model = make_tiny_model('sam2', sam_image_size=256)
    official = model.official_state_dict()
    rows = [official[f'visual_model.sam_prompt_encoder.point_embeddings.{i}.weight'] for i in range(4)]
    assert all(r.shape == (1, 32) for r in rows)
    assert torch.equal(torch.cat(rows), model.sam.prompt_encoder.point_embed.weight.detach())
    other = make_tiny_model('sam2', seed=5, sam_image_size=256)
    other.load_official_state_dict(official)
    for key, value in model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    # both transformers copies of the gaussian matrix come from the one official tensor
    g = official['visual_model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix']
    assert torch.equal(other.sam.shared_image_embedding.positional_embedding, g)
    assert torch.equal(other.sam.prompt_encoder.shared_embedding.positional_embedding, g)


@pytest.fixture(scope='module')
def tiny_official():
    model = make_tiny_model('sam1', sam_image_size=256)
    return model.config, model.official_state_dict()


def test_missing_keys_are_named(tiny_official):
    config, official = tiny_official
    state = dict(official)
    del state['mm_extractor.beit3.encoder.layer_norm.A.weight']
    del state['visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix']
    with pytest.raises(ModelLoadError) as err:
        EvfSamModel(config).load_official_state_dict(state)
    msg = str(err.value)
    assert '2 missing key(s)' in msg
    assert 'mm_extractor.beit3.encoder.layer_norm.A.weight' in msg
    assert 'visual_model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix' in msg


def test_unexpected_keys_are_named(tiny_official):
    config, official = tiny_official
    state = dict(official, **{'visual_model.extra_head.weight': torch.zeros(2), 'text_hidden_fcs.1.0.weight':
                              torch.zeros(2)})
    with pytest.raises(ModelLoadError, match=r'2 unexpected key\(s\): .*visual_model.extra_head.weight'):
        EvfSamModel(config).load_official_state_dict(state)
    # non-strict loading tolerates them (shapes are still checked)
    EvfSamModel(config).load_official_state_dict(state, strict=False)


def test_mis_shaped_keys_are_named(tiny_official):
    config, official = tiny_official
    state = dict(official)
    state['text_hidden_fcs.0.2.weight'] = torch.zeros(16, 32)
    with pytest.raises(ModelLoadError, match=r'text_hidden_fcs.0.2.weight \(file \(16, 32\), model \(32, 32\)\)'):
        EvfSamModel(config).load_official_state_dict(state, strict=False)


def test_sam1_pixel_buffers_in_file_are_ignored(tiny_official):
    config, official = tiny_official
    state = dict(official, **{'visual_model.pixel_mean': torch.zeros(3, 1, 1), 'visual_model.pixel_std':
                              torch.ones(3, 1, 1)})
    ignored = EvfSamModel(config).load_official_state_dict(state)
    assert sorted(ignored) == ['visual_model.pixel_mean', 'visual_model.pixel_std']
