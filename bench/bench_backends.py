"""Backend benchmark: torch eager vs onnxruntime vs OpenVINO, per stage, 1 and 4 prompts, peak RSS.

    python bench/bench_backends.py                                   # embedded model, 2 threads
    python bench/bench_backends.py --models default,evf_sam2_hieral,evf_sam_vith --repeats 2
    python bench/bench_backends.py --models default --variants ort:all,ort:basic,ov:LATENCY,ov:THROUGHPUT

Each (model, variant) runs in its own process, one after the other, so peak RSS is that backend's alone
(loading included). Full-size models (``evf_sam2_hieral``, ``evf_sam_vith``, ...) use the fixture's
deterministic random weights (../shared/fixtures/evf_fullsize); checkpoints and exports are cached in
--work-dir. Variants: ``torch``, ``ort:<optimization>``, ``ort-spin:<optimization>`` (thread spin-waiting
on), ``ort-int8:<optimization>`` (dynamic int8 weights), ``ov:<hint>``, ``ov-bf16:<hint>`` (OpenVINO
bf16 inference precision, CPUs with AVX512-BF16/AMX); on a GPU machine ``ort-cuda``
and ``ort-trt`` (onnxruntime-gpu's CUDA / TensorRT execution providers; CPU pre/post-processing).
Stages: preprocess, SAM image encoder, BEiT-3 (+ tokenizer), decoder + selection, post-process; ``frame`` =
their sum for one frame; exported variants also report their worst mask IoU against torch (what int8 or
bf16 costs in accuracy).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPTS = ['the red mug on the left', 'the robot gripper', 'a green apple next to the bowl', 'the cardboard box']
DEFAULT_VARIANTS = 'torch,ort:all,ov:LATENCY'
STAGES = ('preprocess', 'sam_image_encoder', 'beit3', 'decoder', 'postprocess')


# ---- checkpoints and exports (parent process) ---------------------------------------------------------------
def shared_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get('EVF_SAM_SHARED_DIR') or ROOT.parent / 'shared')


def checkpoint_dir(model: str, work: pathlib.Path) -> pathlib.Path:
    from evf_sam_ros.model.loading import DEFAULT_MODEL_DIR
    from evf_sam_ros.model.testing import make_fullsize_checkpoint

    if model == 'default':
        return DEFAULT_MODEL_DIR
    out = work / model
    if not (out / 'model.safetensors').is_file():
        print(f'# writing full-size random weights for {model} to {out}', file=sys.stderr, flush=True)
        make_fullsize_checkpoint(shared_dir() / 'fixtures' / 'evf_fullsize', model, out)
    return out


def export_dir(model: str, ckpt: pathlib.Path, work: pathlib.Path, int8: bool, threads: int) -> pathlib.Path:
    out = work / f'{model}-onnx'
    if not (out / 'export.json').is_file():
        print(f'# exporting {model} to {out}', file=sys.stderr, flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'evf_sam_ros.cli', 'export', 'default' if model == 'default' else
                        str(ckpt), str(out), '--threads', str(threads)], check=True, stdout=subprocess.DEVNULL)
        print(f'# export took {time.perf_counter() - start:.0f} s', file=sys.stderr, flush=True)
    if not int8:
        return out
    quantised = work / f'{model}-onnx-int8'
    if not (quantised / 'export.json').is_file():
        from evf_sam_ros.model.quantize import quantize_export

        quantize_export(out, quantised)
    return quantised


# ---- one measurement (worker process) -----------------------------------------------------------------------
def load(variant: str, path: str, threads: int):
    import torch

    from evf_sam_ros.model import load_model

    kind, _, option = variant.partition(':')
    if kind == 'torch':
        torch.set_num_threads(threads)
        return load_model(None if path == 'default' else path, device='cpu', dtype='fp32')
    torch.set_num_threads(1)  # pre/post-processing only
    if kind in ('ort-cuda', 'ort-trt'):
        return load_model(path, backend='onnxruntime', device='cuda', backend_options={
            'tensorrt': kind == 'ort-trt', 'trt_cache_dir': str(pathlib.Path(path) / 'trt_cache')})
    if kind in ('ort', 'ort-int8', 'ort-spin'):
        return load_model(path, backend='onnxruntime', backend_options={
            'threads': threads, 'optimization': option or 'all', 'spinning': kind == 'ort-spin'})
    precision = 'bf16' if kind == 'ov-bf16' else 'f32'
    return load_model(path, backend='openvino', backend_options={'threads': threads, 'hint': option or 'LATENCY',
                                                                 'precision': precision})


def run_stages(predictor, rgb, prompts, times: dict) -> list:
    """encode_image + segment, stage by stage, with the predictor's own calls."""
    import torch

    from evf_sam_ros.model.preprocessing import beit3_pixel_values, postprocess_logits, sam_pixel_values

    cfg = predictor.config

    def timed(stage, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        times.setdefault(stage, []).append((time.perf_counter() - start) * 1e3)
        return value

    with torch.inference_mode():
        beit, (sam_input, info) = timed('preprocess', lambda: (
            beit3_pixel_values(rgb, cfg.beit3.img_size, predictor.device).to(predictor.dtype),
            sam_pixel_values(rgb, cfg.behaviour.sam_resize, cfg.sam_image_size, predictor.device)))
        emb = timed('sam_image_encoder', predictor._run_sam_encoder, sam_input)
        prompt_emb = timed('beit3', lambda: predictor._run_prompt_embeddings(beit, *predictor.tokenize(prompts)))
        selected = timed('decoder', lambda: predictor.select(predictor._run_decoder(emb, prompt_emb)))
        masks = timed('postprocess', lambda: (postprocess_logits(selected.logits, info)[:, 0] > 0).cpu().numpy())
    return list(masks)


def test_frame(height: int, width: int) -> np.ndarray:
    """The full-size fixture's landscape image stretched to the frame size (random pixels if it is missing)."""
    from PIL import Image

    path = shared_dir() / 'fixtures' / 'evf_fullsize' / 'landscape.png'
    if not path.is_file():
        return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.asarray(Image.open(path).convert('RGB').resize((width, height), Image.BILINEAR))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def worker(spec: dict) -> dict:
    start = time.perf_counter()
    predictor = load(spec['variant'], spec['path'], spec['threads'])
    load_s = time.perf_counter() - start
    rgb = test_frame(spec['height'], spec['width'])
    rows, masks = [], {}
    for n in spec['prompts']:
        prompts = (PROMPTS * n)[:n]
        times: dict = {}
        for i in range(spec['warmup'] + spec['repeats']):
            if i == spec['warmup']:
                times.clear()
            masks[n] = run_stages(predictor, rgb, prompts, times)
        row = {stage: statistics.median(times[stage]) for stage in STAGES}
        row.update(prompts=n, frame=sum(row.values()), load_s=load_s)
        rows.append(row)
    reference = spec.get('reference_masks')
    if reference:
        ref = np.load(reference)
        ious = [mask_iou(m, r) for m, r in zip(masks[max(masks)], ref, strict=True)]
        for row in rows:
            row['iou_vs_torch'] = float(min(ious))
    if spec.get('save_masks'):
        np.save(spec['save_masks'], np.stack(masks[max(masks)]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {'rows': rows, 'peak_rss_GiB': peak}


# ---- parent ---------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', default='default',
                        help='comma list: default, evf_sam2_hieral, evf_sam2_hieral_multitask, evf_sam_vith')
    parser.add_argument('--variants', default=DEFAULT_VARIANTS, help=f'comma list (default {DEFAULT_VARIANTS})')
    parser.add_argument('--prompts', default='1,4')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--height', type=int, default=720)
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--work-dir', default=os.environ.get('EVF_SAM_BENCH_DIR', '/tmp/evf_sam_bench'))
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print('RESULT ' + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    work = pathlib.Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(',')
    print(f'# CPU, {args.threads} threads; frame {args.width}x{args.height}; fp32; median of {args.repeats} after '
          f'{args.warmup} warm-up; one process per row')
    header = ('model', 'backend', 'prompts', 'preproc', 'SAM enc', 'BEiT-3', 'decoder', 'postproc', 'frame',
              'vs torch', 'load s', 'peak RSS GiB', 'IoU vs torch')
    print('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header), flush=True)
    for model in args.models.split(','):
        ckpt = checkpoint_dir(model, work)
        torch_frame: dict[int, float] = {}
        ref_masks = work / f'{model}-torch-masks.npy'
        for variant in variants:
            kind = variant.split(':')[0]
            path = ('default' if model == 'default' else str(ckpt)) if kind == 'torch' else \
                str(export_dir(model, ckpt, work, kind == 'ort-int8', args.threads))
            spec = dict(variant=variant, path=path, threads=args.threads, prompts=[int(p) for p in
                        args.prompts.split(',')], repeats=args.repeats, warmup=args.warmup, height=args.height,
                        width=args.width)
            if kind == 'torch':
                spec['save_masks'] = str(ref_masks)
            elif ref_masks.is_file():
                spec['reference_masks'] = str(ref_masks)
            proc = subprocess.run([sys.executable, __file__, '--worker', json.dumps(spec)], capture_output=True,
                                  text=True, env={**os.environ, 'OMP_NUM_THREADS': str(args.threads)})
            lines = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
            if proc.returncode or not lines:
                print(f'| {model} | {variant} | failed: {proc.stderr.strip().splitlines()[-1:]} |', flush=True)
                continue
            result = json.loads(lines[0][7:])
            for r in result['rows']:
                if kind == 'torch':
                    torch_frame[r['prompts']] = r['frame']
                speedup = torch_frame.get(r['prompts'], float('nan')) / r['frame']
                iou = f"{r['iou_vs_torch']:.4f}" if 'iou_vs_torch' in r else ''
                print(f"| {model} | {variant} | {r['prompts']} | {r['preprocess']:.1f} | "
                      f"{r['sam_image_encoder']:.1f} | {r['beit3']:.1f} | {r['decoder']:.1f} | "
                      f"{r['postprocess']:.1f} | {r['frame']:.1f} | "
                      f"{speedup:.2f}x | {r['load_s']:.1f} | {result['peak_rss_GiB']:.2f} | {iou} |", flush=True)
    print('(times in ms; "vs torch" = torch eager frame time / this frame time; IoU: worst mask IoU of the '
          'largest prompt count against torch)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
