"""Install a trained run as the embedded default model and write its model card.

    python -m evf_sam_ros.training.ship --run out/train_default [--run out/train_stage2 ...] [--scenes 200]

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
from dataclasses import dataclass

__all__ = ['ship', 'main']

FILES = ('config.json', 'model.safetensors', 'sentencepiece.bpe.model', 'special_tokens_map.json',
         'tokenizer_config.json')
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[1] / 'model' / 'default_model'


GOALS = {'colour_shape': 0.80, 'all': 0.60}   # the gIoU goals for the embedded model

# (training option, name in the card, what it is): the training-only auxiliary losses
AUX_LOSSES = (
    ('text_aux_weight', 'word probe', """(`_TextProbe`): a cosine classifier must recognise the prompt's words from the
  *direction* of the projected [CLS] prompt token. Without it, training from scratch collapsed: the prompt
  token became text-independent and the model segmented the same objects whatever the text."""),
    ('referent_aux_weight', 'referent probe', """(`_ReferentProbe`): from each BEiT-3 vision patch, the share of it covered by the
  target; from the prompt token, whether a target exists and where its mask centre is. The mask loss
  reaches BEiT-3 only through one token and the decoder, which is too weak a signal for words that need
  BEiT-3 to look at the image (shapes, left/right, leftmost, next to, not there)."""),
    ('attribute_aux_weight', 'attribute probe', """(`_AttributeProbe`): at every SAM image-embedding cell and every BEiT-3 patch,
  which shape and which colour of object covers it. From the mask loss alone the SAM encoder learns few
  shape features, so shape words have nothing to match; dense shape labels supervise those features
  directly (`python -m evf_sam_ros.training.diagnose --run RUN` says how far they got)."""),
)


@dataclass
class _Stage:
    """One training run of a (multi-stage) recipe, read from its output directory."""
    run: pathlib.Path
    config: dict
    end: dict                 # the log's 'end' record (or the last one of a run still in progress)
    vals: list[dict]          # the log's validation records
    config_path: str | None = None

    @property
    def steps(self) -> int:
        return self.end.get('step', 0) or 0

    @property
    def seconds(self) -> float:
        return self.end.get('train_time_s', 0)


def _stage_text(i: int, stage: _Stage) -> str:
    cfg = stage.config
    init = f'from `{cfg["init"]}`' if cfg.get('init') else 'from random weights'
    resize = (f', BEiT-3 input enlarged to {cfg["init_beit3_img_size"]} px (position table interpolated)'
              if cfg.get('init') and cfg.get('init_beit3_img_size') else '')
    aux = [f'{label} x{cfg[key]}' for key, label, _ in AUX_LOSSES if cfg.get(key)]
    return (f"{i}. `{stage.run}`: {init}{resize}; {stage.end.get('step', '?')} steps in "
            f"{stage.seconds / 60:.1f} min; BCE (x{cfg['bce_weight']}) + Dice (x{cfg['dice_weight']}) "
            f"on token 0's mask at {cfg['loss_size']}x{cfg['loss_size']}, MSE (x{cfg['iou_weight']}) on the IoU head"
            f"{', ' + ', '.join(aux) if aux else ''}; AdamW lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
            f"{cfg['warmup_steps']} warm-up steps then cosine decay (by elapsed time: {cfg['time_limit_min']} min "
            f"budget); {cfg['images_per_batch']} scenes x {cfg['prompts_per_image']} expressions per step; "
            f"curriculum {json.dumps(cfg['curriculum'])} (first number: fraction of the stage); seed {cfg['seed']}; "
            f"CPU, {cfg['num_threads']} thread(s).")


def _card(stages: list[_Stage], res: dict, gated: dict, mc, n_params: int, size_bytes: int, vocab: int,
          notes: str | pathlib.Path | None = None) -> str:
    from .evaluate import format_report
    notes_text = pathlib.Path(notes).read_text().strip() if notes else ''
    notes_block = f'\n{notes_text}\n' if notes_text else ''
    total_min = res['train_time_s'] / 60
    total_steps = res['steps']
    rows, offset = [], 0.0
    for i, stage in enumerate(stages, 1):
        for v in stage.vals:
            rows.append(f'| {i} | {v["step"]} | {(offset + v["elapsed_s"]) / 60:.1f} | {v["scores"]["all"]["gIoU"]:.3f} | '
                        f'{v["scores"].get("colour_shape", {}).get("gIoU", float("nan")):.3f} |')
        offset += stage.seconds
    aux = [f'* **{label}** {text}' for key, label, text in AUX_LOSSES if any(st.config.get(key) for st in stages)]
    aux_text = ('Training-only auxiliary losses (heads not exported):\n' + '\n'.join(aux)) if aux else ''
    verdict = []
    for kind, goal in GOALS.items():
        got = res['scores'][kind]['gIoU']
        name = 'colour+shape' if kind == 'colour_shape' else 'overall'
        verdict.append(f'{name} {got:.2f} (goal {goal:.2f}: {"reached" if got >= goal else "**not reached**"})')
    b, v = mc.beit3, mc.vit
    stage_lines = '\n'.join(_stage_text(i, stage) for i, stage in enumerate(stages, 1))
    commands = '\n'.join(f'    python -m evf_sam_ros.training.train --config {st.config_path or "CONFIG"} --out {st.run}'
                         for st in stages)
    runs = ' '.join(f'--run {st.run}' for st in stages) + ''.join(
        f' --config {st.config_path}' for st in stages if st.config_path) + (f' --notes {notes}' if notes else '')
    return f"""# evf-sam-ros synthetic tabletop model

**This is a demo model.** It was trained from scratch, here, on synthetic tabletop scenes (coloured
boxes, cylinders, balls, rings and pyramids on a table, rendered by `evf_sam_ros.synthetic`). It knows
the words of that grammar and nothing else: on real camera images it will not work. For real scenes
load a real EVF-SAM checkpoint (`model_path`, e.g. `YxZhang/evf-sam2`).

## Architecture
EVF-SAM (SAM-1 layout) in the official checkpoint format, {n_params / 1e6:.2f} M parameters,
`model.safetensors` {size_bytes / 1e6:.1f} MB (float16 on disk, float32 when loaded).
* SAM image size {mc.sam_image_size} ({mc.image_embedding_size}x{mc.image_embedding_size} image embedding), ViT image encoder
  {v.embed_dim} wide x {v.depth} blocks (window {v.window_size}, global blocks {list(v.global_attn_indexes)}),
  mask decoder width {mc.out_dim}, {mc.mask_decoder.depth} layers;
* BEiT-3 {b.embed_dim} wide x {b.num_layers} layers, image input {b.img_size}x{b.img_size}
  ({b.img_size // b.patch_size}x{b.img_size // b.patch_size} patches);
* its own sentencepiece vocabulary ({vocab} tokens: one piece per grammar word, capitalised words,
  characters and a few sub-words) in the XLM-R id layout (`<s>`=0, `<pad>`=1, `</s>`=2).

## Data
On-the-fly synthetic scenes, 256x192, 3-6 objects, seeds drawn below 1,000,000 (training);
validation seeds 1,000,000+, the scores below on seeds 2,000,000+ (never seen in training).
Expressions of eight kinds (see `evf_sam_ros/synthetic/grammar.py`): colour+shape, shape, colour,
size, position ("on the left"), ordinal ("the leftmost"), relation ("the cube next to the red ball")
and no-match (names nothing in the scene; the correct answer is an empty mask).

## Recipe
{len(stages)} stage(s), {total_steps} steps and {total_min:.1f} min in all on a shared 2-core CPU:

{stage_lines}

{aux_text}

Reproduce (each stage starts from the previous one's output):

{commands}
    python -m evf_sam_ros.training.ship {runs}

(On a loaded machine the time budget ends a stage earlier, in steps, so results vary a little.)

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
`score_threshold` ({gated['score_threshold']} by default); counting such masks as empty
(`--score-threshold {gated['score_threshold']}`) gives:

```
{format_report(gated)}
```

Goals of the issue (raw masks): {'; '.join(verdict)}.
{notes_block}
## Validation during training (30 validation scenes)

| stage | step | minutes (cumulative) | gIoU all | gIoU colour+shape |
|---|---|---|---|---|
{chr(10).join(rows)}
"""


def _log(run: pathlib.Path) -> list[dict]:
    p = run / 'train_log.jsonl'
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def _stage(run: pathlib.Path, config_path: str | None = None) -> _Stage:
    log = _log(run)
    end = next((r for r in reversed(log) if r.get('event') == 'end'), {})
    if not end:   # a run still in progress: take the last save
        last = [r for r in log if r.get('event') in ('train', 'val')]
        end = {'step': last[-1]['step'] if last else 0, 'train_time_s': last[-1].get('elapsed_s', 0) if last else 0}
    cfg = json.loads((run / 'train_config.json').read_text())
    return _Stage(run, cfg, end, [r for r in log if r.get('event') == 'val'], config_path)


def ship(runs: str | pathlib.Path | list, dest: pathlib.Path = DEFAULT_DIR, scenes: int = 200,
         configs: list[str] | None = None, notes: str | pathlib.Path | None = None) -> dict:
    """Install the last of ``runs`` (training stages, in order) and write the card covering all of them;
    the markdown file ``notes`` goes into the card after the scores."""
    from evf_sam_ros.model import load_model
    from .datasets import SyntheticDataset
    from .evaluate import evaluate_predictor
    from evf_sam_ros.synthetic.splits import TEST_SEED
    runs = [pathlib.Path(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(runs[-1] / name, dest / name)
        os.chmod(dest / name, 0o644)
    predictor = load_model(dest)
    res = evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, scenes), also_gated=0.5)
    gated = res.pop('gated')
    stages = [_stage(r, path) for r, path in zip(runs, configs or [None] * len(runs))]
    n_params = sum(p.numel() for p in predictor.model.parameters())
    size = (dest / 'model.safetensors').stat().st_size
    res.update(steps=sum(st.steps for st in stages), train_time_s=sum(st.seconds for st in stages),
               parameters=n_params, size_bytes=size, gated_score_threshold_0_5=gated)
    (dest / 'MODEL_CARD.md').write_text(_card(stages, res, gated, predictor.model.config, n_params, size,
                                              len(predictor.tokenizer), notes))
    (dest / 'eval.json').write_text(json.dumps(res, indent=2) + '\n')
    return res


def main(argv: list[str] | None = None) -> int:
    from .evaluate import format_report
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.ship', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True, action='append',
                    help='training output directory; repeat for a multi-stage recipe (earlier stages first, the '
                         'last one is installed)')
    ap.add_argument('--config', action='append', default=None,
                    help='the JSON config of each stage, in the same order (shown in the card\'s reproduce commands)')
    ap.add_argument('--dest', default=str(DEFAULT_DIR))
    ap.add_argument('--scenes', type=int, default=200)
    ap.add_argument('--notes', help='a markdown file whose text goes into the card after the scores '
                                    '(observations the numbers alone do not say)')
    args = ap.parse_args(argv)
    if args.config and len(args.config) != len(args.run):
        ap.error(f'{len(args.config)} --config for {len(args.run)} --run: give one config per stage, or none')
    res = ship(args.run, pathlib.Path(args.dest), args.scenes, args.config, args.notes)
    print(format_report(res))
    print(f'installed in {args.dest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
