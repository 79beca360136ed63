"""Train or fine-tune an EVF-SAM model (any size) on synthetic scenes, a user folder or RefCOCO.

    python -m evf_sam_ros.training.train --config evf_sam_ros/training/configs/default_small.json --out runs/small
    python -m evf_sam_ros.training.train --init /path/to/evf-sam --freeze-sam-encoder \\
        --data user:/data/my_objects --out runs/finetune --steps 2000

Recipe (EVF-SAM paper): per-pixel BCE + Dice on the mask of token 0 (SAM-1) or the selected token,
AdamW with warm-up and cosine decay, optional frozen SAM image encoder. Added here: an MSE loss on the
IoU head (so its score means something for a model trained from scratch), mixed precision on CUDA,
checkpoint/resume (``OUT/train_state.pt``), periodic validation (``OUT/train_log.jsonl``) and an
export in the official checkpoint layout (``OUT/config.json``, ``model.safetensors``, tokenizer files)
at every validation, so a partial run is always usable by ``load_model``, the CLI and the node.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import pathlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from evf_sam_ros.model.loading import resolve_device
from evf_sam_ros.synthetic.splits import VAL_SEED

from .batches import ImageStream, collate
from .objectives import AttributeProbe, ReferentProbe, TextProbe, mask_losses

__all__ = ['TrainConfig', 'train', 'main', 'SMALL_MODEL', 'build_model_config']

# The embedded default model: SAM-1 layout at 256 px (16x16 embedding, 64x64 low-res masks), a 4-block
# ViT image encoder and a 3-layer BEiT-3 at 64 px (4x4 patches) with the grammar's own small vocabulary.
SMALL_MODEL: dict[str, Any] = dict(
    sam_kind='sam1', sam_image_size=256, out_dim=128, projection_hidden_dim=128,
    beit3=dict(embed_dim=128, num_layers=3, num_heads=4, ffn_dim=512, vocab_size=160, img_size=64,
               max_source_positions=64),
    vit=dict(embed_dim=128, depth=4, num_heads=4, global_attn_indexes=(1, 3), window_size=8, mlp_ratio=4.0),
    mask_decoder=dict(depth=2, num_heads=4, mlp_dim=512, iou_head_hidden_dim=128, mask_in_chans=16),
    behaviour=dict(sam_resize='longest_side_pad', mask_selection='single', multitask=False),
    name='evf-sam-ros-synthetic-tabletop',
)

DEFAULT_CURRICULUM: list[list[Any]] = [
    # [from_progress (fraction of the run), {kind: weight}]: colour+shape first, then everything.
    [0.0, {'colour_shape': 6, 'shape': 2, 'colour': 2, 'no_match': 1}],
    [0.12, {'colour_shape': 4, 'shape': 2, 'colour': 2, 'size': 1, 'no_match': 1.5, 'position': 1, 'ordinal': 1,
           'relation': 1}],
    [0.4, {'colour_shape': 3, 'shape': 1.5, 'colour': 1.5, 'size': 1.5, 'no_match': 1.5, 'position': 1.5,
           'ordinal': 1.5, 'relation': 2}],
]



@dataclass
class TrainConfig:
    model: Any = field(default_factory=lambda: dict(SMALL_MODEL))  # dict of EvfSamConfig fields | preset name
    init: str | None = None                 # checkpoint dir to start from (weights + tokenizer)
    init_beit3_img_size: int = 0            # with init: give BEiT-3 this input size (position table interpolated)
    tokenizer: str | None = None            # tokenizer dir; None: the checkpoint's, or build the grammar's
    tokenizer_vocab_size: int = 160
    data: str = 'synthetic'                 # synthetic | user:DIR[:SPLIT] | refcoco:ROOT[:name|by|split]
    val_data: str | None = None             # default: synthetic held-out scenes (or the data's "val" split)
    val_scenes: int = 40
    steps: int = 3000
    images_per_batch: int = 8
    prompts_per_image: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    head_warmup_steps: int = 0              # first train only the training-only probe heads (the model's lr is 0),
    #                                         e.g. when continuing from an exported checkpoint, which has no heads;
    #                                         the model's warm-up starts after them
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    iou_weight: float = 1.0
    loss_size: int = 128                    # masks are compared at this size (low-res logits upsampled); 0: SAM size
    text_aux_weight: float = 0.0            # bag-of-words loss on the prompt token (see TextProbe); 0: off
    referent_aux_weight: float = 0.0        # where-is-the-target losses on BEiT-3 (see ReferentProbe); 0: off
    attribute_aux_weight: float = 0.0       # per-location shape/colour losses, synthetic data only (see AttributeProbe)
    freeze_sam_encoder: bool = False
    amp: str = 'auto'                       # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    device: str = 'auto'
    seed: int = 0
    val_every: int = 250
    save_every: int = 100
    log_every: int = 10
    num_threads: int = 0                    # torch CPU threads (0: torch's default)
    num_workers: int = 1                    # data worker processes (0: generate in the main process)
    time_limit_min: float = 0.0             # stop (and save) after this many minutes; 0: no limit.
    #                                         With a limit, LR decay and curriculum follow elapsed time.
    curriculum: list = field(default_factory=lambda: [list(x) for x in DEFAULT_CURRICULUM])
    scene: dict = field(default_factory=dict)   # SceneConfig overrides for synthetic data
    save_dtype: str = 'float32'             # dtype of the exported model.safetensors
    progress: bool = True

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> TrainConfig:
        raw = json.loads(pathlib.Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f'{path}: unknown training options {sorted(unknown)}')
        return cls(**raw)


def build_model_config(spec: Any, vocab_size: int | None = None):
    from evf_sam_ros.model import EvfSamConfig
    if isinstance(spec, str):
        return EvfSamConfig.preset(spec)
    spec = json.loads(json.dumps(spec))   # deep copy
    if vocab_size is not None:
        spec.setdefault('beit3', {})['vocab_size'] = vocab_size
    return EvfSamConfig(**spec)


# ---- helpers ------------------------------------------------------------------------------------

def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != 'cuda' or cfg.amp == 'off':
        return None
    if cfg.amp == 'fp16':
        return torch.float16
    if cfg.amp == 'bf16' or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def run_progress(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """Fraction of the run done: by steps, or by time when a time limit is set (whichever is further)."""
    p = step / max(1, cfg.steps)
    if cfg.time_limit_min:
        p = max(p, elapsed_s / (60 * cfg.time_limit_min))
    return min(1.0, p)


def _lr_at(cfg: TrainConfig, step: int, progress: float | None = None) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if progress is None:
        progress = step / max(1, cfg.steps)
    # cosine over the part of the run after warm-up
    w = cfg.warmup_steps / max(1, cfg.steps)
    progress = min(1.0, max(0.0, (progress - w) / max(1e-6, 1 - w)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _lrs_at(cfg: TrainConfig, step: int, progress: float | None = None) -> tuple[float, float]:
    """(model lr, probe-head lr) at ``step``: during ``head_warmup_steps`` the model stands still (lr 0)
    while the freshly initialised probe heads learn at ``cfg.lr``; then both follow ``_lr_at``, its
    warm-up counted from the end of the head warm-up."""
    if step < cfg.head_warmup_steps:
        return 0.0, cfg.lr
    lr = _lr_at(cfg, step - cfg.head_warmup_steps, progress)
    return lr, lr


def export_checkpoint(model, tokenizer_dir: pathlib.Path, out_dir: pathlib.Path, dtype: str = 'float32') -> None:
    """Write the official layout (config.json, model.safetensors, tokenizer files) into out_dir."""
    from evf_sam_ros.model import save_checkpoint
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        save_checkpoint(model, tokenizer_dir, out_dir, dtype=getattr(torch, dtype))
    except TypeError:   # an older save_checkpoint without dtype
        save_checkpoint(model, tokenizer_dir, out_dir)
    model.train(was_training)


def _tokenizer_dir(cfg: TrainConfig, out: pathlib.Path) -> pathlib.Path:
    if cfg.tokenizer:
        return pathlib.Path(cfg.tokenizer)
    if cfg.init:
        return pathlib.Path(cfg.init)
    tok_dir = out / 'tokenizer'
    if not (tok_dir / 'sentencepiece.bpe.model').is_file():
        from .tokenizer import build_tokenizer
        build_tokenizer(tok_dir, vocab_size=cfg.tokenizer_vocab_size)
    return tok_dir


def _build_model(cfg: TrainConfig, tokenizer, device: torch.device):
    from evf_sam_ros.model import EvfSamModel, load_model
    if cfg.init:
        predictor = load_model(cfg.init, device='cpu')
        model = predictor.model.float()
        if cfg.init_beit3_img_size and cfg.init_beit3_img_size != model.config.beit3.img_size:
            model = _resize_beit3_input(model, cfg.init_beit3_img_size)
    else:
        vocab = max(len(tokenizer) + 2, 8)
        vocab = int(math.ceil(vocab / 16) * 16)
        model = EvfSamModel(build_model_config(cfg.model, vocab_size=vocab))
    if cfg.freeze_sam_encoder:
        model.freeze_sam_image_encoder()
    return model.to(device).train()


def _aux_heads(cfg: TrainConfig, mc) -> torch.nn.ModuleDict:
    """The training-only heads the config asks for, by their train_state.pt names."""
    heads = torch.nn.ModuleDict()
    if cfg.text_aux_weight > 0:
        heads['probe'] = TextProbe(mc.out_dim, mc.beit3.vocab_size)
    if cfg.referent_aux_weight > 0:
        heads['referent'] = ReferentProbe(mc.beit3.embed_dim, mc.out_dim)
    if cfg.attribute_aux_weight > 0:
        if cfg.data != 'synthetic' or mc.is_sam2:
            raise ValueError(f'attribute_aux_weight > 0 needs data "synthetic" (its shape/colour labels come from the '
                             f'scene generator) and a SAM-1 layout model; got data {cfg.data!r}, '
                             f'{mc.architecture_name}. Set attribute_aux_weight to 0 for this run.')
        heads['attribute'] = AttributeProbe(mc.out_dim, mc.beit3.embed_dim)
    return heads


def _resize_beit3_input(model, img_size: int):
    """A copy of ``model`` whose BEiT-3 takes ``img_size`` images: the vision position table ([CLS] and the
    patch grid) is interpolated bicubically, every other weight is kept (the patch size does not change)."""
    from evf_sam_ros.model import EvfSamModel
    cfg = model.config
    new_cfg = dataclasses.replace(cfg, beit3=dataclasses.replace(cfg.beit3, img_size=img_size))
    resized = EvfSamModel(new_cfg)
    state = model.state_dict()
    key = next(k for k in state if k.endswith('embed_positions.A.weight'))
    table = state[key]                                   # [2 + 1 + g*g, D]: fairseq offset, [CLS], patches
    old_grid = cfg.beit3.img_size // cfg.beit3.patch_size
    new_grid = img_size // cfg.beit3.patch_size
    grid = table[3:].T.reshape(1, -1, old_grid, old_grid)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode='bicubic', align_corners=False)
    state[key] = torch.cat([table[:3], grid.reshape(table.shape[1], -1).T], dim=0)
    resized.load_state_dict(state)
    return resized


# ---- the loop -----------------------------------------------------------------------------------

def train(cfg: TrainConfig, out: str | pathlib.Path, resume: bool = True) -> pathlib.Path:
    """Run (or resume) training; returns the export directory (== out)."""
    from evf_sam_ros.model.tokenizer import load_tokenizer, tokenize_prompts
    from .evaluate import evaluate_model

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    amp_dtype = _amp_dtype(cfg, device)

    tok_dir = _tokenizer_dir(cfg, out)
    tokenizer = load_tokenizer(tok_dir)
    model = _build_model(cfg, tokenizer, device)
    mc = model.config
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': cfg.weight_decay},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    # training-only heads, each with its own optimizer (so a resumed run may add or drop one)
    aux_heads = _aux_heads(cfg, mc).to(device)
    aux_opts = {name: torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.0)
                for name, head in aux_heads.items()}
    scaler = torch.amp.GradScaler('cuda', enabled=amp_dtype == torch.float16)
    state_path = out / 'train_state.pt'
    step = 0
    elapsed_before = 0.0
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state['model'])
        opt.load_state_dict(state['optimizer'])
        step = int(state['step'])
        elapsed_before = float(state.get('elapsed_s', 0.0))
        for name, head in aux_heads.items():
            if name in state:
                head.load_state_dict(state[name])
                aux_opts[name].load_state_dict(state[name + '_optimizer'])
        print(f'resumed from {state_path} at step {step}', flush=True)
    (out / 'train_config.json').write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + '\n')
    n_params = sum(p.numel() for p in model.parameters())
    print(f'model: {mc.architecture_name}, {n_params / 1e6:.2f} M parameters '
          f'({sum(p.numel() for p in params) / 1e6:.2f} M trainable), device {device}, amp {amp_dtype}', flush=True)

    progress = multiprocessing.get_context('fork' if sys.platform != 'win32' else 'spawn').Value('d', 0.0)
    progress.value = run_progress(cfg, step, elapsed_before)
    stream = ImageStream(cfg, mc, progress)
    loader = torch.utils.data.DataLoader(stream, batch_size=cfg.images_per_batch, collate_fn=collate,
                                         num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                                         prefetch_factor=4 if cfg.num_workers > 0 else None)
    val_set = _validation_set(cfg)
    log = open(out / 'train_log.jsonl', 'a')
    t_start = time.time()
    bar = _progress(cfg, step)
    running: dict[str, float] = {}

    def save_state(reason: str) -> None:
        state = {'model': model.state_dict(), 'optimizer': opt.state_dict(), 'step': step,
                 'elapsed_s': elapsed_before + time.time() - t_start, 'config': dataclasses.asdict(cfg)}
        for name, head in aux_heads.items():
            state.update({name: head.state_dict(), name + '_optimizer': aux_opts[name].state_dict()})
        torch.save(state, state_path.with_suffix('.tmp'))
        os.replace(state_path.with_suffix('.tmp'), state_path)
        export_checkpoint(model, tok_dir, out, cfg.save_dtype)
        log.write(json.dumps({'event': 'save', 'step': step, 'reason': reason}) + '\n')
        log.flush()

    def validate() -> dict:
        model.eval()
        res = evaluate_model(model, tokenizer, val_set, device=device)
        model.train()
        if cfg.freeze_sam_encoder:
            model.sam.vision_encoder.eval()
        rec = {'event': 'val', 'step': step, 'elapsed_s': round(elapsed_before + time.time() - t_start, 1), **res}
        log.write(json.dumps(rec) + '\n')
        log.flush()
        summary = ' '.join(f'{k}={v["gIoU"]:.3f}' for k, v in res['scores'].items())
        _print(bar, f'[val step {step}] gIoU {summary}')
        return res

    data_iter = iter(loader)
    stop_reason = 'done'
    while step < cfg.steps:
        elapsed = elapsed_before + time.time() - t_start
        progress.value = run_progress(cfg, step, elapsed)
        if cfg.time_limit_min and elapsed / 60 > cfg.time_limit_min:
            stop_reason = 'time limit'
            break
        items = next(data_iter)
        sam = torch.stack([it['sam'] for it in items]).to(device)
        beit = torch.stack([it['beit'] for it in items]).to(device)
        target = torch.cat([it['target'] for it in items]).to(device)
        texts = [t for it in items for t in it['texts']]
        k = cfg.prompts_per_image
        ids, am = tokenize_prompts(tokenizer, texts, mc.beit3.max_text_tokens, device)
        lr, head_lr = _lrs_at(cfg, step, progress.value)
        for o, value in ((opt, lr), *((o, head_lr) for o in aux_opts.values())):
            for g in o.param_groups:
                g['lr'] = value
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            if cfg.freeze_sam_encoder:
                with torch.no_grad():
                    emb = model.encode_sam_image(sam)
            else:
                emb = model.encode_sam_image(sam)
            image_emb = emb if isinstance(emb, torch.Tensor) else emb[-1]    # [B, C, h, w], one per image
            emb = emb.repeat_interleave(k, dim=0) if isinstance(emb, torch.Tensor) else \
                [e.repeat_interleave(k, dim=0) for e in emb]
            features = model.beit3_features(beit.repeat_interleave(k, dim=0), ids, am)
            prompts = model.prompt_from_features(features)
            out_dec = model.decode_all(emb, prompts)
        if mc.behaviour.mask_selection == 'single':
            logits, iou_pred = out_dec.masks[:, 0], out_dec.iou_scores[:, 0]
        else:   # multimask checkpoints: supervise the best-of-3 token the selection rule would pick
            sel = model.select(out_dec)
            logits, iou_pred = sel.logits[:, 0], sel.iou_scores
        bce, dice, iou = mask_losses(logits, target)
        iou_loss = F.mse_loss(iou_pred.float(), iou)
        loss = cfg.bce_weight * bce.mean() + cfg.dice_weight * dice.mean() + cfg.iou_weight * iou_loss
        aux_losses = {}
        if 'probe' in aux_heads:
            aux_losses['text'] = aux_heads['probe'](prompts, ids, am)
        if 'referent' in aux_heads:
            aux_losses['referent'] = aux_heads['referent'](
                features, prompts, torch.cat([it['patches'] for it in items]).to(device), target)
        if 'attribute' in aux_heads:
            aux_losses['attribute'] = aux_heads['attribute'](
                image_emb, torch.stack([it['sam_attributes'] for it in items]).to(device),
                features, torch.stack([it['beit_attributes'] for it in items]).to(device))
        for name, value in aux_losses.items():
            loss = loss + getattr(cfg, f'{name}_aux_weight') * value
        for o in (opt, *aux_opts.values()):
            o.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        for o in (opt, *aux_opts.values()):
            scaler.step(o)
        scaler.update()
        step += 1
        for name, v in (('loss', loss.item()), ('bce', bce.mean().item()), ('dice', dice.mean().item()),
                        ('iou', iou.mean().item()),
                        *((n, aux_losses[n].item() if n in aux_losses else 0.0)
                          for n in ('text', 'referent', 'attribute'))):
            running[name] = v if name not in running else 0.95 * running[name] + 0.05 * v
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f'{running["loss"]:.3f}', iou=f'{running["iou"]:.3f}', lr=f'{lr:.1e}')
        if step % cfg.log_every == 0:
            log.write(json.dumps({'event': 'train', 'step': step, 'elapsed_s': round(elapsed_before + time.time() - t_start, 1),
                                  'lr': lr, 'progress': round(progress.value, 4), **{k2: round(v, 4) for k2, v in running.items()}}) + '\n')
            log.flush()
            if bar is None:
                print(f'step {step}/{cfg.steps} ' + ' '.join(f'{k2} {v:.3f}' for k2, v in running.items()), flush=True)
        if step % cfg.save_every == 0:
            save_state('periodic')
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
            validate()
    if bar is not None:
        bar.close()
    save_state(stop_reason)
    final = validate()
    total = elapsed_before + time.time() - t_start
    summary = {'event': 'end', 'step': step, 'reason': stop_reason, 'train_time_s': round(total, 1),
               'parameters': n_params, **final}
    log.write(json.dumps(summary) + '\n')
    log.close()
    print(f'finished ({stop_reason}) at step {step} after {total / 60:.1f} min; model in {out}', flush=True)
    return out


def _validation_set(cfg: TrainConfig):
    from evf_sam_ros.synthetic.scene import SceneConfig
    from .datasets import SyntheticDataset, open_dataset
    if cfg.val_data:
        return open_dataset(cfg.val_data, default_split='val')
    if cfg.data == 'synthetic':
        return SyntheticDataset(VAL_SEED, cfg.val_scenes, SceneConfig(**cfg.scene))
    return open_dataset(cfg.data, default_split='val')


def _progress(cfg: TrainConfig, start: int):
    if not cfg.progress or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.steps, initial=start, dynamic_ncols=True, desc='train')


def _print(bar, text: str) -> None:
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.train', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', help='JSON file with TrainConfig fields (see train.py)')
    ap.add_argument('--out', required=True, help='output directory (checkpoint in the official layout + state)')
    ap.add_argument('--init', help='start from this checkpoint directory (fine-tuning)')
    ap.add_argument('--freeze-sam-encoder', action='store_true', help='freeze the SAM image encoder (paper option)')
    ap.add_argument('--data', help='synthetic | user:DIR[:SPLIT] | refcoco:ROOT[:refcoco|unc|train]')
    ap.add_argument('--val-data', help='validation data (same forms)')
    ap.add_argument('--steps', type=int)
    ap.add_argument('--lr', type=float)
    ap.add_argument('--images-per-batch', type=int)
    ap.add_argument('--prompts-per-image', type=int)
    ap.add_argument('--device', help='auto | cpu | cuda | cuda:N')
    ap.add_argument('--amp', choices=['auto', 'off', 'bf16', 'fp16'])
    ap.add_argument('--threads', type=int, dest='num_threads')
    ap.add_argument('--workers', type=int, dest='num_workers')
    ap.add_argument('--time-limit-min', type=float)
    ap.add_argument('--val-every', type=int)
    ap.add_argument('--save-every', type=int)
    ap.add_argument('--seed', type=int)
    ap.add_argument('--save-dtype', choices=['float32', 'float16', 'bfloat16'])
    ap.add_argument('--no-resume', action='store_true', help='ignore OUT/train_state.pt')
    args = ap.parse_args(argv)
    cfg = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ('config', 'out', 'no_resume', 'freeze_sam_encoder') and v is not None}
    if args.freeze_sam_encoder:
        overrides['freeze_sam_encoder'] = True
    cfg = dataclasses.replace(cfg, **overrides)
    train(cfg, args.out, resume=not args.no_resume)
    return 0


if __name__ == '__main__':
    sys.exit(main())
