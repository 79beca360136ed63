"""Evaluate a checkpoint: cIoU / gIoU (the EVF-SAM paper's definitions), per expression kind.

    python -m evf_sam_ros.training.evaluate --model DIR --data synthetic            # held-out scenes
    python -m evf_sam_ros.training.evaluate --data synthetic:2000000:200            # default model, 200 scenes
    python -m evf_sam_ros.training.evaluate --model /ckpt/evf-sam --data "refcoco:/data/refer_seg:refcoco|unc|val"

Protocol (EVF eval.py): one image at a time, all its expressions in one padded batch, masks at the
original resolution (``logits > 0``); gIoU = mean per-expression IoU (empty union counts as 1),
cIoU = sum(intersection) / sum(union). RefCOCO sentences are stripped and lower-cased.
Every image goes through ``SegmentationPipeline`` (what the node, its service and the CLI run), so the
masks, the gating and the 3D centroids are the node's own. With ``score_threshold=None`` nothing is gated
(the paper's protocol); with a threshold, a mask counts as empty when the node would not report it
(predicted IoU, SAM-2 object score and ``min_mask_area``, at the node's defaults).
For synthetic data the 3D centroid error is reported too: the node's robust depth centroid of the
predicted mask against the same centroid of the ground-truth mask ("surface") and against the object's
true 3D centre ("centre").
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from typing import Any, Iterable

import numpy as np
import torch

from evf_sam_ros.pipeline import DepthFrame, PipelineSettings, SegmentationPipeline, Target, gate, mask_centroid_3d

from .metrics import IoUAccumulator

__all__ = ['evaluate_predictor', 'evaluate_model', 'evaluation_settings', 'main', 'centroid_errors']


def evaluation_settings(score_threshold: float | None) -> PipelineSettings:
    """The node's default settings (depth range, mask erosion, gating); ``None``: gate nothing."""
    if score_threshold is None:
        return PipelineSettings(score_threshold=-math.inf, object_score_threshold=-math.inf, min_mask_area=0)
    return PipelineSettings(score_threshold=score_threshold)


def centroid_errors(target: Target, scene, index: int, depth: DepthFrame, settings: PipelineSettings
                    ) -> tuple[float | None, float | None]:
    """(error vs GT-mask surface centroid, error vs true object centre) in metres; None if no centroid."""
    if not target.has_position:
        return None, None
    p = np.array(target.centroid3d.position)
    g = mask_centroid_3d(scene.mask(index), depth, scene.intrinsics, settings)
    surface = float(np.linalg.norm(p - np.array(g.position))) if g.ok else None
    centre = float(np.linalg.norm(p - scene.objects[index].center_cam))
    return surface, centre


def evaluate_predictor(predictor, dataset: Iterable, *, limit: int | None = None, progress: bool = False,
                       with_centroids: bool = True, score_threshold: float | None = None,
                       also_gated: float | None = None) -> dict[str, Any]:
    """Run ``predictor`` (an EvfSamPredictor) over a dataset of Samples; returns scores per kind.

    ``score_threshold``: count a mask the node would not report as empty (see the module docstring);
    None = the paper's protocol (raw masks). ``also_gated``: in the same pass, also score with that
    threshold (``result['gated']``).
    """
    settings = evaluation_settings(score_threshold)
    pipeline = SegmentationPipeline(predictor, settings)
    gated_settings = evaluation_settings(also_gated) if also_gated is not None else None
    acc = IoUAccumulator()
    acc_gated = IoUAccumulator()
    cerr: dict[str, list[float]] = defaultdict(list)
    cerr_centre: dict[str, list[float]] = defaultdict(list)
    n_img = 0
    t0 = time.time()
    for sample in dataset:
        if limit is not None and n_img >= limit:
            break
        n_img += 1
        if not sample.exprs:
            continue
        scene = sample.scene if with_centroids else None
        depth = DepthFrame(scene.depth, 1.0) if scene is not None else None   # metric float depth
        result = pipeline.run(sample.image, [e.text for e in sample.exprs],
                              depth=(lambda: (depth, scene.intrinsics, '')) if scene is not None else None)
        for e, t in zip(sample.exprs, result.targets):
            mask = t.mask if score_threshold is None or t.detected else np.zeros_like(t.mask)   # raw: every mask
            acc.add(mask, e.mask, e.kind)
            if gated_settings is not None:
                shown = not gate(t.score, t.object_score, t.area, gated_settings, pipeline.has_object_score)
                acc_gated.add(mask if shown else np.zeros_like(mask), e.mask, e.kind)
            if scene is not None and e.target is not None:
                s, c = centroid_errors(t, scene, e.target, depth, settings)
                if s is not None:
                    cerr[e.kind].append(s)
                    cerr_centre[e.kind].append(c)
        if progress and n_img % 20 == 0:
            print(f'  {n_img} images, {len(acc)} expressions, {time.time() - t0:.0f} s', file=sys.stderr, flush=True)
    out: dict[str, Any] = {'images': n_img, 'expressions': len(acc), 'scores': acc.summary(),
                           'seconds': round(time.time() - t0, 1)}
    if also_gated is not None:
        out['gated'] = {'score_threshold': also_gated, 'images': n_img, 'expressions': len(acc_gated),
                        'scores': acc_gated.summary(), 'seconds': out['seconds']}
    if cerr:
        allv = [v for vs in cerr.values() for v in vs]
        allc = [v for vs in cerr_centre.values() for v in vs]
        out['centroid_error_m'] = {
            'all': {'median_surface': float(np.median(allv)), 'mean_surface': float(np.mean(allv)),
                    'median_centre': float(np.median(allc)), 'n': len(allv)},
            **{k: {'median_surface': float(np.median(v)), 'median_centre': float(np.median(cerr_centre[k])),
                   'n': len(v)} for k, v in sorted(cerr.items())}}
    return out


def evaluate_model(model, tokenizer, dataset, *, device: torch.device | str = 'cpu', **kwargs) -> dict[str, Any]:
    """Evaluate an in-memory EvfSamModel (e.g. during training) through the same predictor code path."""
    from evf_sam_ros.model.predictor import EvfSamPredictor
    predictor = EvfSamPredictor(model, tokenizer, device=torch.device(device), dtype=next(model.parameters()).dtype)
    try:
        return evaluate_predictor(predictor, dataset, **kwargs)
    finally:
        model.train()


def format_report(res: dict[str, Any]) -> str:
    lines = [f'{"kind":<14} {"n":>5} {"gIoU":>7} {"cIoU":>7} {"c.err surf":>11} {"c.err centre":>13}']
    cerr = res.get('centroid_error_m', {})
    for kind, s in res['scores'].items():
        ce = cerr.get(kind, {})
        surf = f'{100 * ce["median_surface"]:.1f} cm' if ce else '-'
        cen = f'{100 * ce["median_centre"]:.1f} cm' if ce else '-'
        lines.append(f'{kind:<14} {s["n"]:>5} {s["gIoU"]:>7.3f} {s["cIoU"]:>7.3f} {surf:>11} {cen:>13}')
    lines.append(f'{res["images"]} images, {res["expressions"]} expressions, {res["seconds"]} s '
                 '(centroid errors: medians over expressions with a target)')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    from evf_sam_ros.model import load_model
    from .datasets import open_dataset
    from evf_sam_ros.synthetic.splits import TEST_SEED
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.evaluate', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--model', default=None, help='checkpoint directory (default: the embedded default model)')
    ap.add_argument('--data', default='synthetic',
                    help='synthetic[:SEED:COUNT] (default: held-out test seeds) | user:DIR[:SPLIT] | '
                         'refcoco:ROOT[:refcoco|unc|val]')
    ap.add_argument('--scenes', type=int, default=100, help='number of synthetic scenes (synthetic only)')
    ap.add_argument('--limit', type=int, help='evaluate at most this many images')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--score-threshold', type=float, default=None,
                    help="count the masks the node would not report (its gating at this score_threshold) as "
                         'empty; default: raw masks')
    ap.add_argument('--json', help='also write the results to this JSON file')
    args = ap.parse_args(argv)
    predictor = load_model(args.model, device=args.device)   # 'auto' is resolved by load_model
    dataset = open_dataset(args.data, synthetic_seed=TEST_SEED, synthetic_count=args.scenes, default_split='val')
    res = evaluate_predictor(predictor, dataset, limit=args.limit, progress=True, score_threshold=args.score_threshold)
    res['model'] = args.model or 'default'
    res['data'] = args.data
    print(format_report(res))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
