"""Install a trained run as the embedded default model and write its model card.

    python -m evf_sam_ros.training.ship --run out/train_default [--scenes 200]

Copies the official-layout files of the run into ``evf_sam_ros/model/default_model/``, evaluates the
installed copy with the public loader on held-out synthetic scenes (seeds from 2,000,000; training
uses seeds below 1,000,000, validation 1,000,000+), and writes ``MODEL_CARD.md`` and ``eval.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys

__all__ = ['ship', 'main']

FILES = ('config.json', 'model.safetensors', 'sentencepiece.bpe.model', 'special_tokens_map.json',
         'tokenizer_config.json')
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[1] / 'model' / 'default_model'


def _card(run: pathlib.Path, res: dict, gated: dict, end: dict, cfg: dict, n_params: int, size_bytes: int,
          vocab: int) -> str:
    from .evaluate import format_report
    vals = [r for r in _log(run) if r.get('event') == 'val']
    curve = '\n'.join(f'| {v["step"]} | {v["elapsed_s"] / 60:.1f} | {v["scores"]["all"]["gIoU"]:.3f} | '
                      f'{v["scores"].get("colour_shape", {}).get("gIoU", float("nan")):.3f} |' for v in vals)
    m = cfg['model']
    return f"""# evf-sam-ros synthetic tabletop model

**This is a demo model.** It was trained from scratch, here, on synthetic tabletop scenes (coloured
boxes, cylinders, balls, rings and pyramids on a table, rendered by `evf_sam_ros.synthetic`). It knows
the words of that grammar and nothing else: on real camera images it will not work. For real scenes
load a real EVF-SAM checkpoint (`model_path`, e.g. `YxZhang/evf-sam2`).

## Architecture
EVF-SAM (SAM-1 layout) in the official checkpoint format, {n_params / 1e6:.2f} M parameters,
`model.safetensors` {size_bytes / 1e6:.1f} MB (float16 on disk, float32 when loaded).
* SAM image size {m['sam_image_size']} (16x16 image embedding, 64x64 low-res masks), ViT image encoder
  {m['vit']['embed_dim']} wide x {m['vit']['depth']} blocks (window {m['vit']['window_size']}, global blocks
  {list(m['vit']['global_attn_indexes'])}), mask decoder width {m['out_dim']}, {m['mask_decoder']['depth']} layers;
* BEiT-3 {m['beit3']['embed_dim']} wide x {m['beit3']['num_layers']} layers, image input {m['beit3']['img_size']}x{m['beit3']['img_size']};
* its own sentencepiece vocabulary ({vocab} tokens: one piece per grammar word, capitalised words,
  characters and a few sub-words) in the XLM-R id layout (`<s>`=0, `<pad>`=1, `</s>`=2).

## Data
On-the-fly synthetic scenes, 256x192, 3-6 objects, seeds drawn below 1,000,000 (training);
validation seeds 1,000,000+, the scores below on seeds 2,000,000+ (never seen in training).
Expressions of eight kinds (see `evf_sam_ros/synthetic/grammar.py`): colour+shape, shape, colour,
size, position ("on the left"), ordinal ("the leftmost"), relation ("the cube next to the red ball")
and no-match (names nothing in the scene; the correct answer is an empty mask).

## Recipe
BCE (x{cfg['bce_weight']}) + Dice (x{cfg['dice_weight']}) on token 0's mask at {cfg['loss_size']}x{cfg['loss_size']},
MSE (x{cfg['iou_weight']}) on the IoU head; AdamW lr {cfg['lr']}, weight decay {cfg['weight_decay']},
{cfg['warmup_steps']} warm-up steps then cosine decay (by elapsed time: {cfg['time_limit_min']} min budget);
{cfg['images_per_batch']} scenes x {cfg['prompts_per_image']} expressions per step; curriculum
{json.dumps(cfg['curriculum'])} (first number: fraction of the run); seed {cfg['seed']}; CPU, {cfg['num_threads']} thread(s).
A training-only auxiliary loss (x{cfg.get('text_aux_weight', 0)}) asks a cosine classifier to recognise the
prompt's words from the direction of the projected [CLS] prompt token (`_TextProbe` in `train.py`; not
exported). Without it, training from scratch collapsed: the prompt token became text-independent
(relative spread between prompts < 0.1 %) and the model segmented the same objects whatever the text
(gIoU ~0.19 for colour+shape after 900 steps); with it, prompts stay text-dependent and the masks follow
the words.
Trained for {end.get('step', '?')} steps in {end.get('train_time_s', 0) / 60:.1f} min on a shared 2-core CPU.

Reproduce:

    python -m evf_sam_ros.training.train --config evf_sam_ros/training/configs/default_small.json --out out/train_default
    python -m evf_sam_ros.training.ship --run out/train_default

(On a loaded machine the time budget ends the run earlier, in steps, so results vary a little.)

## Scores on held-out scenes
`python -m evf_sam_ros.training.evaluate --data synthetic:2000000:{res['images']}`
(gIoU: mean per-expression IoU, an empty prediction for a no-match expression counts as 1;
cIoU: sum of intersections / sum of unions; centroid errors: medians, robust depth centroid of the
predicted mask vs the same for the true mask ("surf") and vs the object's true 3D centre ("centre"),
which is inside the object, so it includes the object's radius):

```
{format_report(res)}
```

The node additionally reports a target as not detected when its predicted IoU is below
`score_threshold` (0.5 by default); counting such masks as empty (`--score-threshold 0.5`) gives:

```
{format_report(gated)}
```

Goals of the issue: gIoU >= 0.80 for colour+shape, >= 0.60 overall. **Not reached**: colour+shape and
overall are the numbers above. The model has learned colours well and shapes poorly; spatial words
(left/right, leftmost, next to ...) and "not there" are mostly not learned within this budget. Its IoU head
is calibrated low (about 0.2 for the kinds it gets wrong, 0.4-0.7 for colour expressions), so the demo
runs the node with `score_threshold:=0.3`, which keeps its colour/colour+shape masks and turns most of
its guesses into "not detected".

## Validation during training

| step | minutes | gIoU all | gIoU colour+shape |
|---|---|---|---|
{curve}
"""


def _log(run: pathlib.Path) -> list[dict]:
    p = run / 'train_log.jsonl'
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def ship(run: str | pathlib.Path, dest: pathlib.Path = DEFAULT_DIR, scenes: int = 200) -> dict:
    from evf_sam_ros.model import load_model
    from .datasets import SyntheticDataset
    from .evaluate import evaluate_predictor
    from .train import TEST_SEED
    run = pathlib.Path(run)
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(run / name, dest / name)
        os.chmod(dest / name, 0o644)
    predictor = load_model(dest)
    res = evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, scenes), also_gated=0.5)
    gated = res.pop('gated')
    log = _log(run)
    end = next((r for r in reversed(log) if r.get('event') == 'end'), {})
    if not end:   # a run still in progress: take the last save
        last = [r for r in log if r.get('event') in ('train', 'val')]
        end = {'step': last[-1]['step'] if last else 0, 'train_time_s': last[-1].get('elapsed_s', 0) if last else 0}
    cfg = json.loads((run / 'train_config.json').read_text())
    n_params = sum(p.numel() for p in predictor.model.parameters())
    size = (dest / 'model.safetensors').stat().st_size
    (dest / 'MODEL_CARD.md').write_text(_card(run, res, gated, end, cfg, n_params, size, len(predictor.tokenizer)))
    res.update(steps=end.get('step'), train_time_s=end.get('train_time_s'), parameters=n_params, size_bytes=size,
               gated_score_threshold_0_5=gated)
    (dest / 'eval.json').write_text(json.dumps(res, indent=2) + '\n')
    return res


def main(argv: list[str] | None = None) -> int:
    from .evaluate import format_report
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.ship', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True, help='training output directory')
    ap.add_argument('--dest', default=str(DEFAULT_DIR))
    ap.add_argument('--scenes', type=int, default=200)
    args = ap.parse_args(argv)
    res = ship(args.run, pathlib.Path(args.dest), args.scenes)
    print(format_report(res))
    print(f'installed in {args.dest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
