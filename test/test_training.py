"""Training / evaluation tools on a tiny model: a few steps, checkpoint layout, resume, CLI, user data."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from evf_sam_ros.training.batches import mask_to_sam_frame
from evf_sam_ros.training.objectives import mask_losses
from evf_sam_ros.training.train import TrainConfig, _lr_at, _lrs_at, train

TINY = dict(
    sam_kind='sam1', sam_image_size=64, out_dim=32, projection_hidden_dim=32,
    beit3=dict(embed_dim=32, num_layers=1, num_heads=2, ffn_dim=64, img_size=32, max_source_positions=48),
    vit=dict(embed_dim=32, depth=1, num_heads=2, global_attn_indexes=(0,), window_size=2),
    mask_decoder=dict(depth=1, num_heads=2, mlp_dim=64, iou_head_hidden_dim=32, mask_in_chans=4),
)


def _cfg(**kw):
    base = dict(model=TINY, steps=3, images_per_batch=2, prompts_per_image=2, val_every=0, save_every=2,
                val_scenes=2, num_workers=0, num_threads=1, warmup_steps=1, progress=False, log_every=1,
                scene=dict(width=96, height=72))
    base.update(kw)
    return TrainConfig(**base)


def test_losses_and_targets():
    logits = torch.full((2, 8, 8), -10.0)
    logits[0, 2:6, 2:6] = 10.0
    target = torch.zeros(2, 16, 16)
    target[0, 4:12, 4:12] = 1.0
    bce, dice, iou = mask_losses(logits, target)
    assert iou[0] > 0.5 and iou[1] == 1.0          # empty prediction for an empty target counts as IoU 1
    assert dice[1] < 0.02 and bce.shape == (2,)
    from evf_sam_ros.model.preprocessing import SamResizeInfo
    m = np.zeros((30, 40), bool)
    m[:, :20] = True
    t = mask_to_sam_frame(m, SamResizeInfo('longest_side_pad', (30, 40), (48, 64), 64))
    assert t.shape == (64, 64) and t[:48, :32].min() == 1.0 and t[48:].max() == 0.0 and t[:, 33:].max() == 0.0


def test_text_probe_rewards_text_dependent_prompts():
    from evf_sam_ros.training.objectives import TextProbe
    torch.manual_seed(0)
    probe = TextProbe(8, 10)
    ids = torch.tensor([[0, 5, 2], [0, 6, 2]])
    am = torch.ones_like(ids)
    same = torch.ones(2, 1, 8) * 50 + torch.randn(2, 1, 8) * 0.01     # nearly constant prompt
    loss = probe(same.requires_grad_(), ids, am)
    loss.backward()
    assert loss.item() > 1.0 and torch.isfinite(same.grad).all()


def test_referent_probe_targets_and_gradients():
    from evf_sam_ros.training.objectives import ReferentProbe
    torch.manual_seed(0)
    probe = ReferentProbe(16, 8)
    features = torch.randn(2, 1 + 4 + 3, 16, requires_grad=True)     # [CLS] + 2x2 patches + 3 text tokens
    prompts = torch.randn(2, 1, 8, requires_grad=True)
    patches = torch.zeros(2, 2, 2)
    patches[0, 0, 1] = 1.0
    mask = torch.zeros(2, 8, 8)
    mask[0, :4, 4:] = 1.0                       # target in the top-right quarter; sample 1 has no target
    loss = probe(features, prompts, patches, mask)
    loss.backward()
    assert torch.isfinite(loss) and features.grad[:, 1:5].abs().sum() > 0 and prompts.grad.abs().sum() > 0
    assert features.grad[:, 5:].abs().sum() == 0          # text tokens are not supervised
    # a head that says exactly "top-right, exists" for sample 0 and "absent" for sample 1 has a lower loss
    with torch.no_grad():
        probe.prompt_head[2].weight.zero_()
        probe.prompt_head[2].bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        worse = probe(features, prompts, patches, mask)
        probe.prompt_head[2].bias.copy_(torch.tensor([0.0, float(torch.logit(torch.tensor(0.75))),
                                                      float(torch.logit(torch.tensor(0.25)))]))
        better = probe(features, prompts, patches, mask)
    assert better < worse


def test_attribute_probe_soft_targets():
    from evf_sam_ros.training.objectives import AttributeProbe
    torch.manual_seed(0)
    probe = AttributeProbe(8, 16, (('shape', ('s0', 's1')), ('colour', ('c0', 'c1', 'c2'))))   # + "none" each
    emb = torch.randn(2, 8, 4, 4, requires_grad=True)
    features = torch.randn(6, 1 + 4 + 2, 16, requires_grad=True)    # 2 images x 3 prompts, 2x2 patches
    sam_shares = torch.zeros(2, 5, 4, 4)
    sam_shares[0, 1, :2, :2] = 1.0                           # shape 1 ...
    sam_shares[0, 2 + 0, :2, :2] = 1.0                       # ... coloured 0 in the top-left quarter of image 0
    beit_shares = torch.zeros(2, 5, 2, 2)
    beit_shares[0, 1, 0, 0] = beit_shares[0, 2, 0, 0] = 0.5  # half of one patch
    loss = probe(emb, sam_shares, features, beit_shares)
    loss.backward()
    assert torch.isfinite(loss) and emb.grad.abs().sum() > 0
    # only the first prompt of each image is read (the image patches are the same for all its prompts)
    assert features.grad[[0, 3]].abs().sum() > 0 and features.grad[[1, 2, 4, 5]].abs().sum() == 0
    # the perfect SAM-side answer has a lower loss than a uniform one
    logits = torch.full((2, 7, 16), -20.0)
    shares = sam_shares.flatten(2)
    logits[:, 0:2] += 40 * shares[:, 0:2]
    logits[:, 2] += 40 * (1 - shares[:, 0:2].sum(1))
    logits[:, 3:6] += 40 * shares[:, 2:5]
    logits[:, 6] += 40 * (1 - shares[:, 2:5].sum(1))
    assert probe._loss(logits, shares) < 1e-3 < probe._loss(torch.zeros(2, 7, 16), shares)


def test_attribute_probe_needs_synthetic_data(tmp_path):
    with pytest.raises(ValueError, match='attribute_aux_weight > 0 needs data "synthetic"'):
        train(_cfg(attribute_aux_weight=1.0, data=f'user:{tmp_path}'), tmp_path / 'run')


def test_resize_beit3_input_keeps_weights_and_interpolates_positions():
    from evf_sam_ros.model import EvfSamModel
    from evf_sam_ros.training.train import _resize_beit3_input, build_model_config
    torch.manual_seed(0)
    model = EvfSamModel(build_model_config(TINY, vocab_size=32)).eval()
    bigger = _resize_beit3_input(model, 64).eval()
    assert bigger.config.beit3.img_size == 64 and model.config.beit3.img_size == 32
    a, b = model.state_dict(), bigger.state_dict()
    key = next(k for k in a if k.endswith('embed_positions.A.weight'))
    assert a[key].shape[0] == 3 + 4 and b[key].shape[0] == 3 + 16     # 2x2 -> 4x4 patches
    assert torch.equal(a[key][:3], b[key][:3])                      # offset rows and [CLS] kept
    assert all(torch.equal(a[k], b[k]) for k in a if k != key)
    # the resized model runs on the new input size; resizing to the same size changes nothing
    ids = torch.tensor([[0, 5, 6, 2]])
    out = bigger.prompt_embeddings(torch.zeros(1, 3, 64, 64), ids, torch.ones_like(ids))
    assert out.shape == (1, 1, TINY['out_dim']) and torch.isfinite(out).all()
    same = _resize_beit3_input(model, 32)
    assert all(torch.allclose(a[k], same.state_dict()[k], atol=1e-6) for k in a)


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert _lr_at(cfg, 0) == pytest.approx(1e-4)
    assert _lr_at(cfg, 10) == pytest.approx(1e-3, rel=1e-3)
    assert _lr_at(cfg, 100) == pytest.approx(1e-4)
    # head warm-up: the model stands still while the probe heads learn, then the model's warm-up starts
    cfg = TrainConfig(steps=100, warmup_steps=10, head_warmup_steps=5, lr=1e-3, min_lr_ratio=0.1)
    assert _lrs_at(cfg, 0) == (0.0, 1e-3) and _lrs_at(cfg, 4) == (0.0, 1e-3)
    assert _lrs_at(cfg, 5) == pytest.approx((1e-4, 1e-4)) and _lrs_at(cfg, 15)[0] == pytest.approx(1e-3, rel=1e-3)


def test_head_warmup_keeps_the_model_and_trains_the_heads(tmp_path):
    import safetensors.torch as st
    base = tmp_path / 'base'
    train(_cfg(steps=1), base)
    out = tmp_path / 'cont'
    train(_cfg(steps=2, init=str(base), head_warmup_steps=2, referent_aux_weight=1.0, save_every=1), out)
    a, b = st.load_file(str(base / 'model.safetensors')), st.load_file(str(out / 'model.safetensors'))
    assert all(torch.equal(a[k], b[k]) for k in a)                   # lr 0 for the model (no decay either)
    state = torch.load(out / 'train_state.pt', weights_only=False)
    assert state['referent_optimizer']['state']                     # the probe head did take steps


def test_train_resume_export_and_evaluate(tmp_path):
    from evf_sam_ros.model import load_model
    from evf_sam_ros.training import evaluate
    out = tmp_path / 'run'
    train(_cfg(text_aux_weight=1.0, referent_aux_weight=1.0), out)
    for name in ('config.json', 'model.safetensors', 'sentencepiece.bpe.model', 'tokenizer_config.json',
                 'train_state.pt', 'train_log.jsonl'):
        assert (out / name).is_file(), name
    log = [json.loads(x) for x in (out / 'train_log.jsonl').read_text().splitlines()]
    assert [x['step'] for x in log if x['event'] == 'train'] == [1, 2, 3]
    end = [x for x in log if x['event'] == 'end'][-1]
    assert 'gIoU' in end['scores']['all'] and end['step'] == 3
    state = torch.load(out / 'train_state.pt', weights_only=False)
    assert state['step'] == 3
    assert 'probe' in state and 'referent' in state    # the training-only heads are resumable ...
    # resume: continues at step 3 up to 5
    train(_cfg(steps=5, text_aux_weight=1.0, referent_aux_weight=1.0), out)
    assert torch.load(out / 'train_state.pt', weights_only=False)['step'] == 5
    import safetensors.torch as st     # ... but not part of the exported checkpoint
    exported = st.load_file(str(out / 'model.safetensors'))
    assert not any('probe' in k or 'referent' in k or k.split('.')[0] in ('head', 'patch_head', 'prompt_head')
                   for k in exported)
    # the export loads with the public loader and runs
    predictor = load_model(out)
    from evf_sam_ros.synthetic.scene import generate_scene
    scene = generate_scene(0, width=96, height=72)
    res = predictor.predict(scene.rgb, ['the red cube'])
    assert res[0].mask.shape == (72, 96)
    # evaluation CLI on two synthetic scenes
    rc = evaluate.main(['--model', str(out), '--data', 'synthetic:2000000:2', '--json', str(tmp_path / 'ev.json')])
    assert rc == 0
    ev = json.loads((tmp_path / 'ev.json').read_text())
    assert ev['images'] == 2 and ev['expressions'] > 4 and 'centroid_error_m' in ev


def test_finetune_from_checkpoint_with_frozen_encoder_on_user_data(tmp_path):
    from evf_sam_ros.training.train import main
    # a tiny user dataset: squares on noise
    data = tmp_path / 'data'
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        img[10:25, 10 + 10 * i:25 + 10 * i] = (255, 0, 0)
        mask = np.zeros((40, 60), np.uint8)
        mask[10:25, 10 + 10 * i:25 + 10 * i] = 255
        Image.fromarray(img).save(data / f'{i}.png')
        Image.fromarray(mask).save(data / f'{i}_m.png')
        lines.append(json.dumps({'image': f'{i}.png', 'mask': f'{i}_m.png', 'expressions': ['the red square']}))
    (data / 'annotations.jsonl').write_text('\n'.join(lines) + '\n')
    base = tmp_path / 'base'
    train(_cfg(steps=1), base)
    cfg_path = tmp_path / 'ft.json'
    cfg = json.loads((base / 'train_config.json').read_text())
    cfg.update(steps=2, save_every=1)
    cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / 'ft'
    assert main(['--config', str(cfg_path), '--out', str(out), '--init', str(base), '--freeze-sam-encoder',
                 '--data', f'user:{data}', '--val-data', f'user:{data}']) == 0
    import safetensors.torch as st
    a = st.load_file(str(base / 'model.safetensors'))
    b = st.load_file(str(out / 'model.safetensors'))
    enc = [k for k in a if k.startswith('visual_model.image_encoder.')]
    dec = [k for k in a if k.startswith('visual_model.mask_decoder.')]
    assert enc and dec
    assert all(torch.equal(a[k], b[k]) for k in enc)            # frozen
    assert any(not torch.equal(a[k], b[k]) for k in dec)        # trained


def test_ship_two_stage_recipe_writes_card(tmp_path, monkeypatch):
    from evf_sam_ros.model import load_model
    from evf_sam_ros.training import ship
    first, second, dest = tmp_path / 'stage1', tmp_path / 'stage2', tmp_path / 'default_model'
    train(_cfg(steps=1, text_aux_weight=1.0), first)
    train(_cfg(steps=1, init=str(first), init_beit3_img_size=64, referent_aux_weight=1.0,
               attribute_aux_weight=1.0), second)
    notes = tmp_path / 'notes.md'
    notes.write_text('**Measured.** Something the scores do not say.\n')
    import shutil
    monkeypatch.chdir(tmp_path)   # the stages' config files, by the relative names the card shows
    shutil.copyfile(first / 'train_config.json', 'a.json')
    shutil.copyfile(second / 'train_config.json', 'b.json')
    assert ship.main(['--run', str(first), '--run', str(second), '--config', 'a.json', '--config', 'b.json',
                      '--dest', str(dest), '--scenes', '2', '--notes', str(notes)]) == 0
    card = (dest / 'MODEL_CARD.md').read_text()
    assert 'Something the scores do not say.' in card and f'--config b.json --notes {notes}' in card
    assert load_model(dest).model.config.beit3.img_size == 64          # the last stage is installed
    assert f'--config a.json --out {first}' in card and f'--config b.json --out {second}' in card
    assert 'word probe' in card and 'referent probe' in card and 'attribute probe' in card and '2 stage(s)' in card
    assert '**not reached**' in card                                     # a 2-step model reaches no goal
    ev = json.loads((dest / 'eval.json').read_text())
    assert ev['steps'] == 2 and 'colour_shape' in ev['scores']
    with pytest.raises(SystemExit):                                      # one config per stage
        ship.main(['--run', str(first), '--run', str(second), '--config', 'a.json', '--dest', str(dest)])
    recipe = json.loads((dest / 'recipe.json').read_text())['stages']
    assert [r['steps'] for r in recipe] == [1, 1] and all(r['heldout_gIoU']['all'] >= 0 for r in recipe)
    assert '**Learning curve.**' in card and card.count('| 1 | 1 | ') >= 1
    # a third stage appended to the shipped recipe: the earlier run directories are no longer needed
    third = tmp_path / 'stage3'
    train(_cfg(steps=1, init=str(dest), head_warmup_steps=1, referent_aux_weight=1.0), third)
    shutil.rmtree(first)
    for source in ('recipe', 'card'):   # from recipe.json, and from a card written before there was one
        d = tmp_path / f'from_{source}'
        shutil.copytree(dest, d)
        if source == 'card':
            (d / 'recipe.json').unlink()
        assert ship.main(['--append', '--run', str(third), '--config', 'c.json', '--dest', str(d), '--scenes', '2']) == 0
        card3 = (d / 'MODEL_CARD.md').read_text()
        assert '3 stage(s)' in card3 and f'--config a.json --out {first}' in card3
        assert f'--run {first} --run {second} --run {third} --config a.json --config b.json --config c.json' in card3
        assert f'ship --append --run {third} --config c.json' in card3
        assert 'the probe heads alone for the first 1 steps' in card3
        recipe = json.loads((d / 'recipe.json').read_text())['stages']
        assert len(recipe) == 3 and recipe[2]['run'] == str(third) and recipe[0]['config']['text_aux_weight'] == 1.0
        assert json.loads((d / 'eval.json').read_text())['steps'] == 3
    assert ship.main(['--append', '--run', str(third), '--dest', str(tmp_path / 'empty')]) == 2
    # the probes' diagnosis: accuracies in [0, 1] per feature; a run without probes is refused clearly
    from evf_sam_ros.training import diagnose
    res = diagnose.diagnose(second, scenes=2)
    assert {'sam shape', 'sam colour', 'beit3 shape', 'beit3 colour'} <= set(res)
    assert any(k.startswith('referent ') for k in res) and all(0 <= r['accuracy'] <= 1 for r in res.values())
    assert diagnose.main(['--run', str(first), '--scenes', '1']) == 2


def test_tune_threshold_counts_commands_like_the_demo():
    from evf_sam_ros.training.tune_threshold import _right, sweep
    obj = dict(kind='colour_shape', has_target=True, area=500, min_mask_area=50)
    outcomes = [dict(obj, score=0.6, iou=0.8),                      # right from 0.0 to 0.6
                dict(obj, score=0.4, iou=0.1),                      # a wrong mask: never right
                dict(obj, score=0.9, iou=0.9, area=20),             # too small to count as detected
                dict(kind='no_match', has_target=False, score=0.35, iou=0.0, area=400, min_mask_area=50)]
    assert _right(outcomes[0], 0.6) and not _right(outcomes[0], 0.65) and not _right(outcomes[2], 0.0)
    assert not _right(outcomes[3], 0.35) and _right(outcomes[3], 0.4)
    res = sweep(outcomes, thresholds=(0.0, 0.3, 0.4, 0.65))
    assert res['table'][0.4] == {'all': 0.5, 'colour_shape': 1 / 3, 'no_match': 1.0} and res['best'] == 0.4


def test_tune_threshold_runs_on_validation_scenes(tmp_path):
    from evf_sam_ros.model import load_model
    from evf_sam_ros.training.tune_threshold import command_outcomes, main
    outcomes = command_outcomes(load_model(None), 1, width=160, height=120)
    assert len(outcomes) == 5 and all(o['seed'] >= 1_000_000 for o in outcomes)
    assert {o['kind'] for o in outcomes} == {'colour_shape', 'position', 'no_match', 'relation'}
    assert main(['--scenes', '1', '--json', str(tmp_path / 'sweep.json')]) == 0
    res = json.loads((tmp_path / 'sweep.json').read_text())['default']
    assert res['commands'] == 5 and 0.0 <= res['best'] <= 0.9 and len(res['outcomes']) == 5
