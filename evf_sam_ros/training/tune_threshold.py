"""Choose the demo's ``score_threshold`` on validation scenes (never on the demo's own scenes).

    python -m evf_sam_ros.training.tune_threshold [--model DIR] [--scenes 100]

The scenes and spoken commands are drawn exactly as ``make demo`` draws them (``demo.build_script``:
640x480 scenes, two colour+shape commands, a position, a no-match and a relation per scene), but from
the validation seeds (1,000,000+) instead of the demo's (3,000,000+). Each command goes the node's way:
the spoken-command interpreter, the model, then the node's gating (``pipeline.gate``: predicted IoU >=
threshold, the SAM-2 object score, ``min_mask_area``). A command is right as in the demo: an object detected with IoU >= 0.5, or nothing
detected when the command names nothing in the scene. Prints the share of right commands per
threshold (overall and per kind) and the threshold with the most right commands (the lowest on ties).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from evf_sam_ros.pipeline import PipelineSettings, gate   # the node's own gating

__all__ = ['command_outcomes', 'sweep', 'main']

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(19))   # 0.0 .. 0.9


def command_outcomes(predictor, n_scenes: int, width: int = 640, height: int = 480,
                     min_mask_area: int = 50) -> list[dict]:
    """Per validation command: kind, whether it names an object, the model's score, mask area and IoU.
    ``predictor`` may be a list of predictors (the scenes are rendered once): then one list per predictor."""
    from evf_sam_ros.commands import interpret
    from evf_sam_ros.demo import build_script
    from evf_sam_ros.synthetic.splits import VAL_SEED
    from evf_sam_ros.training.metrics import mask_iou
    predictors = predictor if isinstance(predictor, (list, tuple)) else [predictor]
    outs: list[list[dict]] = [[] for _ in predictors]
    for scene, commands in build_script(n_scenes, seed_base=VAL_SEED, width=width, height=height):
        prompts = [interpret(c.text).targets[0] for c in commands]
        for pred, out in zip(predictors, outs):
            results = pred.segment(pred.encode_image(scene.rgb), prompts)
            for c, r in zip(commands, results):
                mask = np.asarray(r.mask) != 0
                obj = getattr(r, 'object_score', None)
                out.append({'seed': c.scene_seed, 'text': c.text, 'kind': c.kind, 'has_target': c.target is not None,
                            'score': float(r.score), 'object_score': None if obj is None else float(obj),
                            'has_object_score': bool(getattr(pred, 'has_object_score', False)),
                            'area': int(mask.sum()), 'min_mask_area': min_mask_area,
                            'iou': mask_iou(mask, scene.mask(c.target))})
    return outs if isinstance(predictor, (list, tuple)) else outs[0]


def _right(o: dict, threshold: float) -> bool:
    settings = PipelineSettings(score_threshold=threshold, min_mask_area=o['min_mask_area'])
    detected = not gate(o['score'], o.get('object_score'), o['area'], settings, o.get('has_object_score', False))
    return (detected and o['iou'] >= 0.5) if o['has_target'] else not detected


def sweep(outcomes: list[dict], thresholds=THRESHOLDS) -> dict:
    """Share of right commands per threshold, overall and per kind, and the best threshold."""
    kinds = sorted({o['kind'] for o in outcomes})
    table = {}
    for t in thresholds:
        row = {'all': float(np.mean([_right(o, t) for o in outcomes]))}
        row.update({k: float(np.mean([_right(o, t) for o in outcomes if o['kind'] == k])) for k in kinds})
        table[t] = row
    best = max(thresholds, key=lambda t: (table[t]['all'], -t))
    return {'commands': len(outcomes), 'table': table, 'best': best}


def main(argv: list[str] | None = None) -> int:
    from evf_sam_ros.model import load_model
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.tune_threshold', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', action='append', default=None,
                    help='checkpoint directory (default: the embedded default model); repeat to compare models '
                         'on the same scenes')
    ap.add_argument('--scenes', type=int, default=100, help='validation scenes (5 commands each)')
    ap.add_argument('--json', help='also write the sweeps (and every command\'s outcome) here')
    args = ap.parse_args(argv)
    models = args.model or [None]
    all_outcomes = command_outcomes([load_model(m, device='cpu') for m in models], args.scenes)
    report = {}
    for model, outcomes in zip(models, all_outcomes):
        res = sweep(outcomes)
        kinds = [k for k in next(iter(res['table'].values())) if k != 'all']
        print(f'\n{model or "default model"}: {res["commands"]} commands on {args.scenes} validation scenes '
              '(seeds from 1,000,000), share right:')
        print(f'{"threshold":>9} {"all":>6} ' + ' '.join(f'{k:>12}' for k in kinds))
        for t, row in res['table'].items():
            print(f'{t:>9.2f} {row["all"]:>6.3f} ' + ' '.join(f'{row[k]:>12.3f}' for k in kinds)
                  + ('   <- best' if t == res['best'] else ''))
        report[model or 'default'] = {**res, 'outcomes': outcomes}
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
