"""Install a trained run as the embedded default model and write its model card.

    python -m evf_sam_ros.training.ship --run out/train_default [--run out/train_stage2 ...] [--scenes 200]
    python -m evf_sam_ros.training.ship --append --run out/train_stage4 --config CONFIG   # one more stage

Copies the official-layout files of the last run into ``evf_sam_ros/model/default_model/``, evaluates
the installed copy with the public loader on held-out synthetic scenes (seeds from 2,000,000; training
uses seeds below 1,000,000, validation 1,000,000+), and writes ``MODEL_CARD.md``, ``eval.json`` and
``recipe.json`` (each stage's config, steps, time, validation curve and held-out gIoU per kind).

``--append`` continues the shipped recipe: the earlier stages' records are read from the installed
``recipe.json`` (or, for a card written before there was one, from ``MODEL_CARD.md`` and ``eval.json``),
so their run directories are not needed; the given runs become the next stages.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import shutil
import sys
from dataclasses import dataclass

__all__ = ['ship', 'main']

FILES = ('config.json', 'model.safetensors', 'sentencepiece.bpe.model', 'special_tokens_map.json',
         'tokenizer_config.json')
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[1] / 'model' / 'default_model'


GOALS = {'colour_shape': 0.80, 'all': 0.60}   # the gIoU goals for the embedded model
RECIPE = 'recipe.json'
# expression kinds in the card's tables, with their column names
KINDS = (('all', 'all'), ('colour', 'colour'), ('colour_shape', 'colour+shape'), ('shape', 'shape'),
         ('size', 'size'), ('position', 'position'), ('ordinal', 'ordinal'), ('relation', 'relation'),
         ('no_match', 'no-match'))

# (training option, name in the card, what it is): the training-only auxiliary losses
AUX_LOSSES = (
    ('text_aux_weight', 'word probe', """(`objectives.TextProbe`): a cosine classifier must recognise the prompt's words from the
  *direction* of the projected [CLS] prompt token. Without it, training from scratch collapsed: the prompt
  token became text-independent and the model segmented the same objects whatever the text."""),
    ('referent_aux_weight', 'referent probe', """(`objectives.ReferentProbe`): from each BEiT-3 vision patch, the share of it covered by the
  target; from the prompt token, whether a target exists and where its mask centre is. The mask loss
  reaches BEiT-3 only through one token and the decoder, which is too weak a signal for words that need
  BEiT-3 to look at the image (shapes, left/right, leftmost, next to, not there)."""),
    ('attribute_aux_weight', 'attribute probe', """(`objectives.AttributeProbe`): at every SAM image-embedding cell and every BEiT-3 patch,
  which shape and which colour of object covers it. From the mask loss alone the SAM encoder learns few
  shape features, so shape words have nothing to match; dense shape labels supervise those features
  directly (`python -m evf_sam_ros.training.diagnose --run RUN` says how far they got)."""),
)


@dataclass
class _Stage:
    """One training run of a (multi-stage) recipe, read from its output directory or from the record an
    earlier ``ship`` kept in ``recipe.json``."""
    run: pathlib.Path | str
    config: dict
    end: dict                 # the log's 'end' record (or the last one of a run still in progress)
    vals: list[dict]          # the log's validation records
    config_path: str | None = None
    heldout: dict | None = None   # {kind: gIoU} on the held-out scenes after this stage
    carried: bool = False         # from an earlier ship's record (the run directory may be gone)

    @property
    def steps(self) -> int:
        return self.end.get('step', 0) or 0

    @property
    def seconds(self) -> float:
        return self.end.get('train_time_s', 0)

    def record(self) -> dict:
        """What ``recipe.json`` keeps of this stage (enough to write the card again without the run)."""
        return {'run': str(self.run), 'config_path': self.config_path, 'config': self.config,
                'steps': self.steps, 'train_time_s': self.seconds,
                'heldout_gIoU': self.heldout,
                'vals': [{'step': v['step'], 'elapsed_s': v['elapsed_s'],
                          'gIoU': {k: round(sc['gIoU'], 4) for k, sc in v['scores'].items()}} for v in self.vals]}

    @classmethod
    def from_record(cls, r: dict) -> '_Stage':
        vals = [{'step': v['step'], 'elapsed_s': v['elapsed_s'],
                 'scores': {k: {'gIoU': g} for k, g in v['gIoU'].items()}} for v in r['vals']]
        return cls(r['run'], r['config'], {'step': r['steps'], 'train_time_s': r['train_time_s']}, vals,
                   r.get('config_path'), r.get('heldout_gIoU'), carried=True)


def _stage_text(i: int, stage: _Stage) -> str:
    cfg = stage.config
    init = f'from `{cfg["init"]}`' if cfg.get('init') else 'from random weights'
    resize = (f', BEiT-3 input enlarged to {cfg["init_beit3_img_size"]} px (position table interpolated)'
              if cfg.get('init') and cfg.get('init_beit3_img_size') else '')
    aux = [f'{label} x{cfg[key]}' for key, label, _ in AUX_LOSSES if cfg.get(key)]
    heads = (f"the probe heads alone for the first {cfg['head_warmup_steps']} steps (model lr 0), then "
             if cfg.get('head_warmup_steps') else '')
    return (f"{i}. `{stage.run}`: {init}{resize}; {stage.end.get('step', '?')} steps in "
            f"{stage.seconds / 60:.1f} min; BCE (x{cfg['bce_weight']}) + Dice (x{cfg['dice_weight']}) "
            f"on token 0's mask at {cfg['loss_size']}x{cfg['loss_size']}, MSE (x{cfg['iou_weight']}) on the IoU head"
            f"{', ' + ', '.join(aux) if aux else ''}; AdamW lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
            f"{heads}{cfg['warmup_steps']} warm-up steps then cosine decay (by elapsed time: {cfg['time_limit_min']} min "
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
    def cells(scores: dict) -> str:
        return ' | '.join(f'{scores[k]:.3f}' if scores.get(k) is not None else '-' for k, _ in KINDS)

    header = ' | '.join(name for _, name in KINDS)
    rows, curve, offset = [], [], 0.0
    for i, stage in enumerate(stages, 1):
        for v in stage.vals:
            rows.append(f'| {i} | {v["step"]} | {(offset + v["elapsed_s"]) / 60:.1f} | '
                        f'{cells({k: sc.get("gIoU") for k, sc in v["scores"].items()})} |')
        offset += stage.seconds
        curve.append(f'| {i} | {stage.steps} | {offset / 60:.1f} | {offset / 3600:.2f} | '
                     f'{cells(stage.heldout or {})} |')
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
    new = [st for st in stages if not st.carried]
    appended = ''
    if new and len(new) < len(stages):   # shipped by appending to an earlier recipe: say how, too
        numbers = ', '.join(str(stages.index(st) + 1) for st in new)
        appended = (f'\n\n{"Stages " + numbers + " were" if len(new) > 1 else "Stage " + numbers + " was"} shipped on '
                    'top of the previous default model (the earlier stages\' records carried over from its '
                    '`recipe.json`, or from its card and `eval.json` where it had none, so their run directories '
                    'were not needed):\n\n    python -m evf_sam_ros.training.ship --append '
                    + ' '.join(f'--run {st.run}' for st in new)
                    + ''.join(f' --config {st.config_path}' for st in new if st.config_path)
                    + (f' --notes {notes}' if notes else ''))
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
    python -m evf_sam_ros.training.ship {runs}{appended}

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
`score_threshold` ({gated['score_threshold']} by default), its SAM-2 object score is not above
`object_score_threshold` or its mask is smaller than `min_mask_area`; counting such masks as empty
(`--score-threshold {gated['score_threshold']}`, the node's gating) gives:

```
{format_report(gated)}
```

Goals of the issue (raw masks): {'; '.join(verdict)}.

**Learning curve.** gIoU on the same {res['images']} held-out scenes (raw masks) after each stage, against
the CPU time spent so far:

| stage | steps | CPU min (cumulative) | CPU h | {header} |
|---|---|---|---|{'---|' * len(KINDS)}
{chr(10).join(curve)}
{notes_block}
## Validation during training (30 validation scenes, gIoU; "-": not kept for that stage)

| stage | step | minutes (cumulative) | {header} |
|---|---|---|{'---|' * len(KINDS)}
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


def _kind(column: str) -> str | None:
    """A card table's column name ('gIoU colour+shape', 'no-match', ...) -> the expression kind."""
    name = column.strip().removeprefix('gIoU ').strip()
    return next((k for k, n in KINDS if n == name), None)


def _table(text: str, first_header_cell: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table whose header row starts with ``first_header_cell``: (header cells, body rows)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if line.startswith('|') and cells[0] == first_header_cell:
            body = []
            for row in lines[i + 2:]:
                if not row.startswith('|'):
                    break
                body.append([c.strip() for c in row.strip().strip('|').split('|')])
            return cells, body
    return [], []


def _stages_from_card(card: str, evaluation: dict) -> list[_Stage]:
    """Rebuild the stage records from a model card written before ``recipe.json`` existed: the recipe
    lines (run, steps, minutes), the reproduce commands (each stage's config file, read again), the
    validation table and the notes' table of held-out gIoU after each stage (the last stage's from
    ``eval.json``). Minutes in the card are rounded to 0.1."""
    from .train import TrainConfig
    configs = dict((run, path) for path, run in re.findall(r'train --config (\S+) --out (\S+)', card))
    recipe = re.findall(r'^(\d+)\. `([^`]+)`: .*?; (\d+) steps in ([\d.]+) min;', card, re.M)
    if not recipe:
        raise ValueError('the model card has no recipe lines ("1. `RUN`: ...; N steps in M min; ...")')
    stages = []
    for number, run, steps, minutes in recipe:
        path = configs.get(run)
        cfg = dataclasses.asdict(TrainConfig.from_json(path)) if path else {}
        stages.append(_Stage(run, cfg, {'step': int(steps), 'train_time_s': round(float(minutes) * 60, 1)}, [],
                             path, None, carried=True))
    header, body = _table(card, 'stage')
    kinds = [_kind(c) for c in header[3:]]
    offsets = [sum(st.seconds for st in stages[:i]) for i in range(len(stages))]
    for row in body:
        i = int(row[0]) - 1
        scores = {k: {'gIoU': float(v)} for k, v in zip(kinds, row[3:]) if k and v not in ('-', 'nan')}
        stages[i].vals.append({'step': int(row[1]), 'elapsed_s': round(float(row[2]) * 60 - offsets[i], 1),
                               'scores': scores})
    header, body = _table(card, 'gIoU')
    kinds = [_kind(c) for c in header[1:]]
    for row in body:
        m = re.match(r'stage (\d+)', row[0])
        if m and int(m.group(1)) <= len(stages):
            stages[int(m.group(1)) - 1].heldout = {k: float(v) for k, v in zip(kinds, row[1:]) if k and v != '-'}
    stages[-1].heldout = {k: round(sc['gIoU'], 6) for k, sc in evaluation['scores'].items()}
    return stages


def carried_stages(dest: pathlib.Path = DEFAULT_DIR) -> list[_Stage]:
    """The stages of the model installed in ``dest``, from its ``recipe.json`` (or its card)."""
    if (dest / RECIPE).is_file():
        return [_Stage.from_record(r) for r in json.loads((dest / RECIPE).read_text())['stages']]
    if (dest / 'MODEL_CARD.md').is_file() and (dest / 'eval.json').is_file():
        return _stages_from_card((dest / 'MODEL_CARD.md').read_text(), json.loads((dest / 'eval.json').read_text()))
    raise FileNotFoundError(f'{dest} has no {RECIPE} (nor MODEL_CARD.md and eval.json): nothing to append to')


def ship(runs: str | pathlib.Path | list, dest: pathlib.Path = DEFAULT_DIR, scenes: int = 200,
         configs: list[str] | None = None, notes: str | pathlib.Path | None = None,
         append: bool = False) -> dict:
    """Install the last of ``runs`` (training stages, in order) and write the card covering all of them;
    the markdown file ``notes`` goes into the card after the scores. ``append``: the runs continue the
    recipe of the model installed in ``dest`` (its stage records are carried over)."""
    from evf_sam_ros.model import load_model
    from .datasets import SyntheticDataset
    from .evaluate import evaluate_predictor
    from evf_sam_ros.synthetic.splits import TEST_SEED
    runs = [pathlib.Path(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]
    earlier = carried_stages(dest) if append else []   # read before the files are replaced
    stages = [_stage(r, path) for r, path in zip(runs, configs or [None] * len(runs))]
    for st in stages[:-1]:   # the held-out score of every intermediate stage (the learning curve)
        st.heldout = _heldout(evaluate_predictor(load_model(st.run), SyntheticDataset(TEST_SEED, scenes),
                                                 with_centroids=False))
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(runs[-1] / name, dest / name)
        os.chmod(dest / name, 0o644)
    predictor = load_model(dest)
    res = evaluate_predictor(predictor, SyntheticDataset(TEST_SEED, scenes), also_gated=0.5)
    gated = res.pop('gated')
    stages[-1].heldout = _heldout(res)
    stages = earlier + stages
    n_params = sum(p.numel() for p in predictor.model.parameters())
    size = (dest / 'model.safetensors').stat().st_size
    res.update(steps=sum(st.steps for st in stages), train_time_s=round(sum(st.seconds for st in stages), 1),
               parameters=n_params, size_bytes=size, gated_score_threshold_0_5=gated)
    (dest / 'MODEL_CARD.md').write_text(_card(stages, res, gated, predictor.model.config, n_params, size,
                                              len(predictor.tokenizer), notes))
    (dest / 'eval.json').write_text(json.dumps(res, indent=2) + '\n')
    (dest / RECIPE).write_text(json.dumps({'scenes': scenes, 'stages': [st.record() for st in stages]}, indent=1) + '\n')
    return res


def _heldout(res: dict) -> dict:
    return {k: round(sc['gIoU'], 6) for k, sc in res['scores'].items()}


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
    ap.add_argument('--append', action='store_true',
                    help='the runs continue the recipe of the model installed in --dest: its stages are carried '
                         f'over from its {RECIPE} (or its card), so their run directories are not needed')
    args = ap.parse_args(argv)
    if args.config and len(args.config) != len(args.run):
        ap.error(f'{len(args.config)} --config for {len(args.run)} --run: give one config per stage, or none')
    try:
        res = ship(args.run, pathlib.Path(args.dest), args.scenes, args.config, args.notes, args.append)
    except (FileNotFoundError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(format_report(res))
    print(f'installed in {args.dest}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
