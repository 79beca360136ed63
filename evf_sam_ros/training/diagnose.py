"""What a run's training-only probes can read from the model, on validation scenes.

    python -m evf_sam_ros.training.diagnose --run out/train_stage2 [--scenes 30]

Answers "has the model learnt the features the words need?" where gIoU alone cannot:
* attribute probe: at the cell most covered by each object (SAM image embedding, BEiT-3 patch grid), is
  the object's shape / colour the probe's best class? (chance: 1/5 shapes, 1/7 colours)
* referent probe: for each expression with a target, does the BEiT-3 patch the probe rates highest
  overlap the target? (per expression kind; chance is roughly the target's share of the patches it covers)
Needs ``OUT/train_state.pt`` from a run with ``attribute_aux_weight`` / ``referent_aux_weight`` > 0.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

__all__ = ['diagnose', 'main']


def diagnose(run: str | pathlib.Path, scenes: int = 30) -> dict:
    from evf_sam_ros.model import load_model
    from evf_sam_ros.model.preprocessing import beit3_pixel_values, sam_pixel_values
    from evf_sam_ros.model.tokenizer import tokenize_prompts
    from evf_sam_ros.synthetic.grammar import generate_expressions
    from evf_sam_ros.synthetic.scene import SceneConfig, generate_scene
    from evf_sam_ros.synthetic.splits import VAL_SEED
    from .batches import mask_to_beit3_grid, mask_to_sam_frame
    from .objectives import AttributeProbe, ReferentProbe
    from .train import TrainConfig

    run = pathlib.Path(run)
    cfg = TrainConfig.from_json(run / 'train_config.json')
    state = torch.load(run / 'train_state.pt', map_location='cpu', weights_only=False)
    predictor = load_model(run)
    model = predictor.model.float().eval()
    mc = model.config
    grid = mc.beit3.img_size // mc.beit3.patch_size
    attribute = referent = None
    if 'attribute' in state:
        attribute = AttributeProbe(mc.out_dim, mc.beit3.embed_dim).eval()
        attribute.load_state_dict(state['attribute'])
    if 'referent' in state:
        referent = ReferentProbe(mc.beit3.embed_dim, mc.out_dim).eval()
        referent.load_state_dict(state['referent'])
    if attribute is None and referent is None:
        raise ValueError(f'{run / "train_state.pt"} has no attribute or referent probe: train with '
                         f'attribute_aux_weight / referent_aux_weight > 0 to diagnose with them')
    hits: dict[str, list[bool]] = {}

    def add(name: str, ok: bool) -> None:
        hits.setdefault(name, []).append(bool(ok))

    for seed in range(VAL_SEED, VAL_SEED + scenes):
        scene = generate_scene(seed, SceneConfig(**cfg.scene))
        exprs = generate_expressions(scene, seed=seed)
        sam_px, info = sam_pixel_values(scene.rgb, mc.behaviour.sam_resize, mc.sam_image_size)
        ids, am = tokenize_prompts(predictor.tokenizer, [e.text for e in exprs], mc.beit3.max_text_tokens, 'cpu')
        beit = beit3_pixel_values(scene.rgb, mc.beit3.img_size).expand(len(exprs), -1, -1, -1)
        with torch.no_grad():
            features = model.beit3_features(beit, ids, am)                               # [E, 1 + g*g + T, D]
            patches = features[:, 1:1 + grid * grid]
            if attribute is not None:
                sam_logits = attribute.sam_head(model.encode_sam_image(sam_px))[0]        # [N, h, w]
                beit_logits = attribute.beit_head(patches[0]).T.reshape(-1, grid, grid)    # [N, g, g]
            if referent is not None:
                patch_scores = referent.patch_head(patches)[..., 0]                        # [E, g*g]
        if attribute is not None:
            for o in scene.objects:
                mask = scene.mask(o.index)
                for where, logits, cover in (
                        ('sam', sam_logits, mask_to_sam_frame(mask, info, mc.image_embedding_size)),
                        ('beit3', beit_logits, mask_to_beit3_grid(mask, grid))):
                    if cover.max() < 0.25:
                        continue
                    y, x = np.unravel_index(int(cover.argmax()), cover.shape)
                    for attr in ('shape', 'colour'):
                        add(f'{where} {attr}', attribute.best_class(logits[:, y, x], attr) == getattr(o, attr))
        if referent is not None:
            for i, e in enumerate(exprs):
                if e.target is None:
                    continue
                cover = mask_to_beit3_grid(scene.mask(e.target), grid).ravel()
                add(f'referent {e.kind}', cover[int(patch_scores[i].argmax())] > 0.05)
    return {name: {'accuracy': float(np.mean(v)), 'n': len(v)} for name, v in sorted(hits.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m evf_sam_ros.training.diagnose', description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run', required=True, help='training output directory (with train_state.pt)')
    ap.add_argument('--scenes', type=int, default=30, help='validation scenes (seeds from 1,000,000)')
    ap.add_argument('--json', help='also write the results here')
    args = ap.parse_args(argv)
    try:
        res = diagnose(args.run, args.scenes)
    except (ValueError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    for name, r in res.items():
        print(f'{name:<22} {r["accuracy"]:.2f}  (n={r["n"]})')
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
