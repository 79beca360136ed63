"""Model benchmark: per-stage latency, prompts/s at 1/4/16 prompts per frame, peak memory.

    python bench/bench_model.py                                   # tiny models on CPU (seconds)
    python bench/bench_model.py --models evf-sam2,evf-sam --device cuda --dtype bf16 --repeats 20
    python bench/bench_model.py --models evf-sam2 --device cpu --repeats 1 --prompts 1,4

Full-size models use random weights (same architecture and cost as the released checkpoints).
Stages are timed separately with device synchronisation: preprocess (BEiT-3 224 input + SAM
resize/normalise), SAM image encoder, BEiT-3 + projection, mask decoder + selection, post-process
(upsample to the frame, threshold, copy to host). "frame" is encode_image + segment end to end.
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from evf_sam_ros.model import EvfSamConfig, EvfSamModel, EvfSamPredictor
from evf_sam_ros.model.loading import resolve_device, resolve_dtype
from evf_sam_ros.model.preprocessing import beit3_pixel_values, postprocess_logits, sam_pixel_values
from evf_sam_ros.model.testing import make_tiny_model
from evf_sam_ros.model.tokenizer import load_tokenizer, make_tiny_tokenizer

PROMPTS = ['the red mug on the left', 'the robot gripper', 'a green apple next to the bowl',
           'the cardboard box', '[semantic] table', 'the person in a blue shirt', 'the door handle',
           'the screwdriver on the bench']
MODELS = ('tiny-sam1', 'tiny-sam2', 'evf-sam2', 'evf-sam2-multitask', 'evf-sam', 'evf-sam-multitask')


def build_predictor(name: str, device: torch.device, dtype: torch.dtype, tok_dir: str) -> EvfSamPredictor:
    tokenizer = load_tokenizer(tok_dir)
    if name.startswith('tiny-'):
        model = make_tiny_model(name.split('-')[1], vocab_size=len(tokenizer) + 8)
    else:
        with torch.device('cpu'):
            model = EvfSamModel(EvfSamConfig.preset(name))
    model = model.to(device).to_inference_dtype(dtype).eval()
    return EvfSamPredictor(model, tokenizer, device=device, dtype=dtype, name=name)


class Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.samples.setdefault(stage, []).append((time.perf_counter() - start) * 1e3)

    def _sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def median(self, stage: str) -> float:
        return statistics.median(self.samples[stage])


def run_stages(predictor: EvfSamPredictor, rgb: np.ndarray, prompts: list[str], timer: Timer) -> None:
    """The predictor's pipeline, stage by stage (same calls as encode_image + segment)."""
    model, cfg = predictor.model, predictor.config
    with torch.inference_mode():
        with timer('preprocess'):
            beit = beit3_pixel_values(rgb, cfg.beit3.img_size, predictor.device).to(predictor.dtype)
            sam_input, info = sam_pixel_values(rgb, cfg.behaviour.sam_resize, cfg.sam_image_size, predictor.device)
        with timer('sam_image_encoder'):
            emb = model.encode_sam_image(sam_input.to(predictor.dtype))
        with timer('beit3'):
            ids, mask = predictor.tokenize(prompts)
            prompt_emb = model.prompt_embeddings(beit, ids, mask)
        with timer('decoder'):
            selected = model.select(model.decode_all(emb, prompt_emb, predictor.dense_positional_embedding()))
        with timer('postprocess'):
            masks = (postprocess_logits(selected.logits, info)[:, 0] > 0).cpu().numpy()
    assert masks.shape == (len(prompts), *rgb.shape[:2])


def compile_networks(model: EvfSamModel, mode: str) -> None:
    """torch.compile the SAM image encoder, BEiT-3 and the decoder's two-way transformer in place."""
    mode = None if mode == 'default' else mode
    model.sam.vision_encoder = torch.compile(model.sam.vision_encoder, mode=mode)
    model.beit3 = torch.compile(model.beit3, mode=mode, dynamic=True)
    model.sam.mask_decoder.transformer = torch.compile(model.sam.mask_decoder.transformer, mode=mode, dynamic=True)


def bench_model(name, device, dtype, rgb, prompt_counts, repeats, warmup, tok_dir, compile_mode=None) -> list[dict]:
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    predictor = build_predictor(name, device, dtype, tok_dir)
    if compile_mode:
        compile_networks(predictor.model, compile_mode)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in predictor.model.parameters())
    rows = []
    for n in prompt_counts:
        prompts = (PROMPTS * (n // len(PROMPTS) + 1))[:n]
        timer = Timer(device)
        for i in range(warmup + repeats):
            if i == warmup:
                timer.samples.clear()
            run_stages(predictor, rgb, prompts, timer)
            with timer('frame'):
                predictor.segment(predictor.encode_image(rgb), prompts)
            features = predictor.encode_image(rgb)
            with timer('segment'):
                predictor.segment(features, prompts)
        row = {'model': name, 'params_M': n_params / 1e6, 'prompts': n, 'build_s': build_s}
        for stage in ('preprocess', 'sam_image_encoder', 'beit3', 'decoder', 'postprocess', 'segment', 'frame'):
            row[stage] = timer.median(stage)
        row['prompts_per_s'] = n / (row['segment'] / 1e3)
        rows.append(row)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda'
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    for row in rows:
        row['peak_GiB'] = peak
    del predictor
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--models', default='tiny-sam1,tiny-sam2', help=f'comma list of {", ".join(MODELS)}')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--dtype', default=None, help='fp32 | fp16 | bf16 (default: fp32 on CPU, bf16 on CUDA)')
    parser.add_argument('--height', type=int, default=720)
    parser.add_argument('--width', type=int, default=1280)
    parser.add_argument('--prompts', default='1,4,16', help='prompts per frame, comma list')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    parser.add_argument('--compile', default=None, choices=['default', 'reduce-overhead', 'max-autotune'],
                        help='torch.compile the networks with this mode (warm-up includes compilation; '
                             'reduce-overhead uses CUDA graphs)')
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype or ('bf16' if device.type == 'cuda' else 'fp32'), device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    rgb = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    counts = [int(c) for c in args.prompts.split(',')]
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
    print(f'# {where}; torch {torch.__version__}; {dtype}; compile {args.compile or "off"}; '
          f'frame {args.width}x{args.height}; '
          f'median of {args.repeats} after {args.warmup} warm-up')
    header = ('model', 'params M', 'prompts', 'preproc', 'SAM enc', 'BEiT-3', 'decoder', 'postproc',
              'segment', 'frame', 'prompts/s', 'peak GiB')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    with tempfile.TemporaryDirectory() as tok_dir:
        make_tiny_tokenizer(tok_dir, PROMPTS)
        for name in args.models.split(','):
            if name not in MODELS:
                parser.error(f'unknown model {name!r}; choose from {", ".join(MODELS)}')
            for r in bench_model(name, device, dtype, rgb, counts, args.repeats, args.warmup, tok_dir,
                                 args.compile):
                print(f"| {r['model']} | {r['params_M']:.1f} | {r['prompts']} | {r['preprocess']:.1f} | "
                      f"{r['sam_image_encoder']:.1f} | {r['beit3']:.1f} | {r['decoder']:.1f} | "
                      f"{r['postprocess']:.1f} | {r['segment']:.1f} | {r['frame']:.1f} | "
                      f"{r['prompts_per_s']:.1f} | {r['peak_GiB']:.2f} |", flush=True)
    print('(times in ms; peak = max allocated GPU memory on CUDA, max RSS of the process on CPU)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
