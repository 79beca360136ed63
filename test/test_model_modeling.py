"""EvfSamModel pieces: decoder composition vs transformers, BEiT-3 padding, selection rules, configs, training."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from evf_sam_ros.model.config import EvfSamBehaviour, EvfSamConfig, HieraConfig
from evf_sam_ros.errors import ModelLoadError
from evf_sam_ros.model.modeling import DecoderOutput, EvfSamModel, select_masks, stability_scores
from evf_sam_ros.model.testing import make_tiny_model


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def tiny_models():
    return {sam: make_tiny_model(sam, seed=1, sam_image_size=256) for sam in ('sam1', 'sam2')}


def _inputs(model, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size = model.config.sam_image_size
    sam_px = torch.randn(1, 3, size, size, generator=gen)
    beit_px = torch.randn(1, 3, 224, 224, generator=gen)
    lengths = [5, 9, 3][:batch] + [4] * max(0, batch - 3)
    ids = torch.ones(batch, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(4, model.config.beit3.vocab_size, (n,), generator=gen)
        ids[i, 0], ids[i, n - 1] = 0, 2
        mask[i, :n] = 1
    return sam_px, beit_px, ids, mask


@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_decode_all_matches_transformers_mask_decoder(tiny_models, sam):
    """Our decoder head composition == transformers' mask_decoder.forward (the slices it returns)."""
    model = tiny_models[sam]
    sam_px, beit_px, ids, mask = _inputs(model)
    with torch.no_grad():
        emb = model.encode_sam_image(sam_px)
        prompts = model.prompt_embeddings(beit_px, ids, mask)  # [3, 1, C]
        ours = model.decode_all(emb, prompts)
        decoder = model.sam.mask_decoder
        image = emb[-1] if sam == 'sam2' else emb
        pe = model.sam.get_image_wide_positional_embeddings()
        assert torch.allclose(pe, model.dense_positional_embedding(), atol=1e-6)
        dense = model.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(image)
        kwargs = dict(image_embeddings=image, image_positional_embeddings=pe,
                      sparse_prompt_embeddings=prompts[None], dense_prompt_embeddings=dense)  # [1, P=3, 1, C]
        if sam == 'sam2':
            kwargs['high_resolution_features'] = emb[:2]
        for multimask in (False, True):
            out = decoder(multimask_output=multimask, **kwargs)
            masks, iou = out[0][0], out[1][0]  # [P, 1|3, h, w], [P, 1|3]
            sl = slice(1, None) if multimask else slice(0, 1)
            torch.testing.assert_close(ours.masks[:, sl], masks, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(ours.iou_scores[:, sl], iou, atol=2e-6, rtol=1e-5)
            if sam == 'sam2':
                torch.testing.assert_close(ours.object_score_logits, out[3][0, :, 0], atol=2e-6, rtol=1e-5)
        if sam == 'sam2':
            # transformers' own dynamic-stability switch == our stability_single rule
            decoder.dynamic_multimask_via_stability = True
            try:
                masks, iou = decoder(multimask_output=False, **kwargs)[:2]
            finally:
                decoder.dynamic_multimask_via_stability = False
            selected = select_masks(ours, 'stability_single')
            torch.testing.assert_close(selected.logits, masks[0], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(selected.iou_scores, iou[0, :, 0], atol=2e-6, rtol=1e-5)


def test_sam2_image_embeddings_match_transformers(tiny_models):
    model = tiny_models['sam2']
    sam_px = _inputs(model)[0]
    with torch.no_grad():
        ours = model.encode_sam_image(sam_px)
        theirs = model.sam.get_image_embeddings(sam_px)  # conv_s0/s1 and no_memory_embedding applied
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_beit3_padding_only_affects_text(tiny_models):
    model = tiny_models['sam1']
    _, beit_px, ids, mask = _inputs(model)
    with torch.no_grad():
        batched = model.prompt_embeddings(beit_px, ids, mask)
        for i in range(ids.shape[0]):
            n = int(mask[i].sum())
            alone = model.prompt_embeddings(beit_px, ids[i:i + 1, :n], None)
            torch.testing.assert_close(batched[i:i + 1], alone, atol=2e-5, rtol=1e-5)
        # an all-ones mask is the same as no mask; one shared image == B copies of it
        full = ids[:1, :5]
        a = model.prompt_embeddings(beit_px, full, torch.ones_like(full))
        b = model.prompt_embeddings(beit_px, full, None)
        assert torch.equal(a, b)
        c = model.prompt_embeddings(beit_px.expand(3, -1, -1, -1), ids, mask)
        torch.testing.assert_close(c, batched, atol=1e-6, rtol=1e-6)


def test_beit3_rejects_too_many_text_tokens(tiny_models):
    model = tiny_models['sam1']
    ids = torch.zeros(1, 1023, dtype=torch.long)
    with pytest.raises(ValueError, match='at most 1022'):
        model.beit3(torch.zeros(1, 3, 224, 224), ids)


@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_decode_b_images_with_b_prompts(tiny_models, sam):
    model = tiny_models[sam]
    gen = torch.Generator().manual_seed(3)
    size = model.config.sam_image_size
    sam_px = torch.randn(2, 3, size, size, generator=gen)
    prompts = torch.randn(2, 1, model.config.out_dim, generator=gen)
    with torch.no_grad():
        emb = model.encode_sam_image(sam_px)
        both = model.decode_all(emb, prompts)
        for i in range(2):
            one = model.decode_all([e[i:i + 1] for e in emb] if sam == 'sam2' else emb[i:i + 1], prompts[i:i + 1])
            torch.testing.assert_close(both.masks[i:i + 1], one.masks, atol=2e-5, rtol=1e-5)
        lo, iou, obj = model.decode(emb, prompts, multimask=True)
        assert lo.shape == (2, 3, size // 4, size // 4) and iou.shape == (2, 3)
        assert (obj is None) == (sam == 'sam1')
        with pytest.raises(ValueError, match='one per prompt'):
            model.decode_all(emb, torch.randn(3, 1, model.config.out_dim))


def test_sam1_patch_size_sets_embedding_grid():
    """A SAM-1 ViT with 8 px patches gives a twice finer embedding and low-res mask grid end to end."""
    base = make_tiny_model('sam1', seed=4, sam_image_size=128).config
    cfg = dataclasses.replace(base, vit=dataclasses.replace(base.vit, patch_size=8, window_size=8))
    assert (cfg.image_embedding_size, cfg.low_res_size) == (16, 64)
    assert (base.image_embedding_size, base.low_res_size) == (8, 32)
    model = EvfSamModel(cfg).eval()
    sam_px, beit_px, ids, mask = _inputs(model, batch=2)
    with torch.no_grad():
        out = model(sam_px, beit_px, ids, mask)
    assert out.masks.shape[-2:] == (64, 64)
    with pytest.raises(ValueError, match='multiple of the ViT patch size'):
        dataclasses.replace(base, sam_image_size=144, vit=dataclasses.replace(base.vit, patch_size=32))


def test_training_gradients_and_freeze():
    model = make_tiny_model('sam2', seed=2, sam_image_size=256).train()
    model.freeze_sam_image_encoder()
    sam_px, beit_px, ids, mask = _inputs(model, batch=2)
    out = model(sam_px.expand(2, -1, -1, -1), beit_px.expand(2, -1, -1, -1), ids[:2], mask[:2])
    loss = out.masks.sigmoid().mean() + out.iou_scores.mean() + out.object_score_logits.mean()
    loss.backward()
    assert model.beit3.encoder.layers[0].self_attn.q_proj.B.weight.grad is not None
    assert model.text_hidden_fcs[0][0].weight.grad is not None
    assert model.sam.mask_decoder.iou_token.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.sam.vision_encoder.parameters())
    assert model.sam.no_memory_embedding.grad is None


def test_select_masks_rules():
    masks = torch.zeros(3, 4, 8, 8)
    masks[:, 0] = 1.0  # token 0: stable (all > 0.05)
    masks[1, 0, :4] = 0.0  # prompt 1: 32 of 64 pixels in (-0.05, 0.05] -> stability 32/64 ... (> -0.05 is all 64)
    masks[2, 0] = -1.0  # prompt 2: empty under -delta -> stability 1 (0/0)
    iou = torch.tensor([[0.9, 0.1, 0.5, 0.4], [0.9, 0.6, 0.6, 0.2], [0.1, 0.2, 0.3, 0.9]])
    out = DecoderOutput(masks, iou, None)
    assert select_masks(out, 'single').token_index.tolist() == [0, 0, 0]
    assert select_masks(out, 'best_of_3').token_index.tolist() == [2, 1, 3]  # ties: first
    sel = select_masks(out, 'stability_single')
    assert sel.token_index.tolist() == [0, 1, 0]
    assert sel.stability_score.tolist() == [1.0, 0.5, 1.0]
    assert sel.stability_area_pos.tolist() == [64, 32, 0] and sel.stability_area_neg.tolist() == [64, 64, 0]
    assert torch.equal(sel.logits[1], masks[1, 1:2]) and sel.iou_scores.tolist() == pytest.approx([0.9, 0.6, 0.1])
    score, _, _ = stability_scores(torch.full((1, 4, 4), -1.0), 0.05)
    assert score.item() == 1.0
    with pytest.raises(ValueError):
        select_masks(out, 'nope')


def test_sam1_neck_stays_fp32_in_bf16():
    model = make_tiny_model('sam1', seed=0, sam_image_size=256).to_inference_dtype(torch.bfloat16)
    neck = model.sam.vision_encoder.neck
    assert neck.conv1.weight.dtype == torch.float32
    assert model.sam.vision_encoder.patch_embed.projection.weight.dtype == torch.bfloat16
    with torch.no_grad():
        emb = model.encode_sam_image(torch.randn(1, 3, 256, 256))
    assert emb.dtype == torch.bfloat16 and emb.shape == (1, 32, 16, 16)


# ---- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize('preset,kind,params', [
    # spec: 1,315,105,072 parameters; transformers makes the 256-value gaussian matrix (a buffer upstream) a parameter
    ('evf-sam', 'sam1', 1_315_105_072 + 256),
    ('evf-sam2', 'sam2', 890_939_329),  # spec: the image-only EVF-SAM2 parameters (gaussian matrix is a buffer)
])
def test_full_size_presets_build_on_meta(preset, kind, params):
    with torch.device('meta'):
        model = EvfSamModel(EvfSamConfig.preset(preset))
    assert model.config.sam_kind == kind
    count = sum(p.numel() for p in model.parameters())
    pe, shared = model.sam.prompt_encoder.shared_embedding.positional_embedding, \
        model.sam.shared_image_embedding.positional_embedding
    if kind == 'sam1' and pe is not shared:
        # transformers 5.0 declares the tie (SamModel._tied_weights_keys) but builds the two copies untied
        # (5.23 ties them); both are filled from the one official tensor
        # (test_full_size_load_from_released_key_list), so count the matrix once
        count -= pe.numel()
    assert count == params


def test_presets_behaviour():
    assert EvfSamConfig.preset('YxZhang/evf-sam2').behaviour == EvfSamBehaviour('longest_then_stretch',
                                                                               'stability_single', False)
    assert EvfSamConfig.preset('evf-sam2-multitask').behaviour == EvfSamBehaviour('square', 'best_of_3', True)
    assert EvfSamConfig.preset('evf-sam-multitask').behaviour == EvfSamBehaviour('longest_side_pad', 'single', True)
    with pytest.raises(ValueError, match='unknown preset'):
        EvfSamConfig.preset('evf-sam3')


OFFICIAL_SAM2 = {'architectures': ['EvfSam2Model'], 'model_type': 'evf', 'hidden_size': 1024, 'out_dim': 256,
                 'mm_extractor_scale': 'large', 'sam_scale': 'large', 'torch_dtype': 'float16'}


def test_official_config_behaviour_inference(tmp_path):
    (tmp_path / 'config.json').write_text(json.dumps(OFFICIAL_SAM2))
    released = EvfSamConfig.from_checkpoint_dir(tmp_path)
    assert released.is_sam2 and released.hiera.blocks_per_stage == (2, 6, 36, 4)
    assert (released.behaviour.sam_resize, released.behaviour.mask_selection) == ('longest_then_stretch',
                                                                                   'stability_single')
    (tmp_path / 'added_tokens.json').write_text('{"[semantic]": 64002}')
    multitask = EvfSamConfig.from_checkpoint_dir(tmp_path)
    assert (multitask.behaviour.sam_resize, multitask.behaviour.mask_selection, multitask.behaviour.multitask) == (
        'square', 'best_of_3', True)
    sam1 = EvfSamConfig.from_json_dict({**OFFICIAL_SAM2, 'architectures': ['EvfSamModel'], 'sam_scale': 'huge'},
                                       multitask_tokenizer=True)
    assert sam1.vit.embed_dim == 1280 and sam1.behaviour.mask_selection == 'single'
    base = EvfSamConfig.from_json_dict({**OFFICIAL_SAM2, 'mm_extractor_scale': 'base', 'hidden_size': 768})
    assert base.beit3.num_layers == 12


@pytest.mark.parametrize('raw,match', [
    ({'architectures': ['EvfEffiSamModel']}, 'unknown architecture'),
    ({'architectures': ['EvfSam2Model'], 'sam_scale': 'huge'}, 'unknown sam_scale'),
    ({'sam_scale': 'gigantic'}, 'neither a known architecture'),
    ({**OFFICIAL_SAM2, 'mm_extractor_scale': 'xl'}, 'unknown mm_extractor_scale'),
    ({**OFFICIAL_SAM2, 'hidden_size': 768}, 'does not match'),
])
def test_official_config_errors(raw, match):
    with pytest.raises(ModelLoadError, match=match):
        EvfSamConfig.from_json_dict(raw)


def test_explicit_config_round_trip(tmp_path):
    config = make_tiny_model('sam2', multitask=True, sam_image_size=256).config
    config.to_json(tmp_path)
    loaded = EvfSamConfig.from_checkpoint_dir(tmp_path)
    assert loaded == config
    raw = json.loads((tmp_path / 'config.json').read_text())
    assert raw['architectures'] == ['EvfSam2Model'] and raw['model_type'] == 'evf'
    assert raw['hidden_size'] == 32 and raw['out_dim'] == 32


def test_behaviour_validation_and_aliases():
    b = EvfSamBehaviour(sam_resize='square_uint8_bilinear', mask_selection='best_of_3')
    assert b.sam_resize == 'square'
    assert b.replace({'sam2_selection': 'stability_single'}).mask_selection == 'stability_single'
    with pytest.raises(ValueError, match='unknown sam_resize'):
        EvfSamBehaviour(sam_resize='crop')
    with pytest.raises(ValueError, match='unknown behaviour field'):
        b.replace({'colour': 'red'})
    with pytest.raises(ValueError, match='pooling stage'):
        HieraConfig(blocks_per_stage=(1, 1, 2, 1), global_att_blocks=(2,), embed_dim_per_stage=(8, 16, 32, 64),
                    num_heads_per_stage=(1, 1, 1, 1), window_spec=(8, 4, 14, 7))
    with pytest.raises(ValueError, match='multiple of 16'):
        EvfSamConfig(sam_image_size=1000)


@pytest.mark.parametrize('sam', ['sam1', 'sam2'])
def test_layer_norm_eps_match_the_original_modules(tiny_models, sam):
    """segment-anything / sam2 use nn.LayerNorm's default 1e-5 in the two-way transformer (transformers' SAM-1
    config says 1e-6: found by the full-size parity test), 1e-6 in the image encoders and LayerNorm2d."""
    model = tiny_models[sam]
    transformer = model.sam.mask_decoder.transformer
    norms = [m for m in transformer.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    assert model.sam.mask_decoder.upscale_layer_norm.eps == 1e-6
    encoder_norms = [m for m in model.sam.vision_encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert encoder_norms and all(m.eps == 1e-6 for m in encoder_norms)
    beit_norms = [m for m in model.beit3.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(m.eps == 1e-5 for m in beit_norms)
