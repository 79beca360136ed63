"""`evf-sam`: segment an image file with text prompts, without ROS.

    evf-sam segment photo.jpg "the red cup" "[semantic] table" --model DIR --device cuda --dtype bf16 --out out/
    evf-sam info --model DIR
    evf-sam export MODEL_DIR [OUT_DIR]         # ONNX graphs for --backend onnxruntime / openvino

Writes one mask PNG per prompt (0/255), an overlay PNG and summary.json (score, bbox, centroid,
area, timings). Without --model, the embedded synthetic tabletop demo model is used.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import time

import numpy as np

__all__ = ['main']


def _slug(text: str, max_len: int = 40) -> str:
    return re.sub(r'[^a-z0-9]+', '_', text.lower()).strip('_')[:max_len] or 'prompt'


def _read_rgb(path: pathlib.Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise SystemExit(f'evf-sam: error: image {path} does not exist')
    try:
        with Image.open(path) as image:
            # Camera JPEGs often carry the orientation in EXIF only.
            return np.asarray(ImageOps.exif_transpose(image).convert('RGB'))
    except (UnidentifiedImageError, OSError) as exc:
        raise SystemExit(f'evf-sam: error: cannot read {path} as an image ({exc}); '
                         'use a PNG or JPEG file') from None


def _load(args):
    from evf_sam_ros.model import load_model

    start = time.perf_counter()
    options = {'threads': args.threads} if args.threads and args.backend != 'torch' else None
    if args.threads and args.backend == 'torch':
        import torch
        torch.set_num_threads(args.threads)
    predictor = load_model(args.model, device=args.device, dtype=args.dtype, allow_download=args.allow_download,
                           backend=args.backend, backend_options=options)
    if predictor.is_default_model:
        print('evf-sam: using the embedded synthetic tabletop demo model (real scenes need a real '
              'checkpoint: --model YxZhang/evf-sam2 or a local directory)', file=sys.stderr)
    return predictor, time.perf_counter() - start


def _cmd_segment(args) -> int:
    from PIL import Image

    from evf_sam_ros.pipeline import PipelineSettings, SegmentationPipeline
    from evf_sam_ros.visualization import draw_overlay

    rgb = _read_rgb(pathlib.Path(args.image))
    predictor, load_s = _load(args)
    # the node's pipeline: the same gating (detected / reason); every mask is written regardless
    pipeline = SegmentationPipeline(predictor, PipelineSettings(score_threshold=args.score_threshold,
                                                                min_mask_area=args.min_mask_area))
    result = pipeline.run(rgb, list(args.prompts))
    encode_s, segment_s = result.encode_s, result.segment_s

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for t in result.targets:
        mask_file = f'mask_{t.label:02d}_{_slug(t.prompt)}.png'
        Image.fromarray(t.mask.astype(np.uint8) * 255).save(out / mask_file)
        entries.append({
            'prompt': t.prompt,
            'label': t.label,
            'detected': t.detected,
            'reason': t.reason,
            'score': round(float(t.score), 5),
            'object_score': None if t.object_score is None else round(float(t.object_score), 5),
            'area': t.area,
            'bbox_xywh': t.bbox,
            'centroid_xy': None if t.centroid is None else [round(c, 2) for c in t.centroid],
            'mask_file': mask_file,
        })
    texts = [f'{t.label}: {t.prompt} {t.score:.2f}' for t in result.targets]
    Image.fromarray(draw_overlay(rgb, [t.mask for t in result.targets], texts)).save(out / 'overlay.png')
    summary = {
        'image': str(args.image),
        'image_size_hw': list(rgb.shape[:2]),
        'model': predictor.name,
        'device': str(predictor.device),
        'dtype': str(predictor.dtype).replace('torch.', ''),
        'backend': predictor.backend,
        'results': entries,
        'timings_ms': {'load': round(load_s * 1e3, 1), 'encode_image': round(encode_s * 1e3, 1),
                       'segment_all_prompts': round(segment_s * 1e3, 1)},
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    for entry in entries:
        print(f"{entry['label']:>2}  {entry['prompt']!r:40}  score {entry['score']:+.3f}  "
              f"area {entry['area']:>8}  bbox {entry['bbox_xywh']}  "
              + ('detected' if entry['detected'] else f"not detected: {entry['reason']}"))
    print(f'evf-sam: wrote {len(entries)} mask(s), overlay.png and summary.json to {out}')
    return 0


def _cmd_info(args) -> int:
    predictor, load_s = _load(args)
    if predictor.model is not None:
        n_params = sum(p.numel() for p in predictor.model.parameters())
    else:  # exported graphs: the parameters are inside the ONNX files
        n_params = None
    print(json.dumps({
        'model': predictor.name,
        'backend': predictor.backend,
        'default_model': predictor.is_default_model,
        'device': str(predictor.device),
        'dtype': str(predictor.dtype).replace('torch.', ''),
        'parameters': n_params,
        'has_object_score': predictor.has_object_score,
        'load_s': round(load_s, 2),
    }, indent=2))
    return 0


def _cmd_export(args) -> int:
    import pathlib

    from evf_sam_ros.model import load_model
    from evf_sam_ros.model.export import export_onnx
    from evf_sam_ros.model.loading import resolve_checkpoint_dir
    from evf_sam_ros.model.runtimes import default_model_export_dir

    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model = None if args.model == 'default' else args.model
    directory, is_default = resolve_checkpoint_dir(model, allow_download=args.allow_download)
    if args.out_dir:
        out = pathlib.Path(args.out_dir)
    else:
        out = default_model_export_dir(directory) if is_default else directory / 'onnx'
    start = time.perf_counter()
    predictor = load_model(model, device='cpu', dtype='fp32', allow_download=args.allow_download)
    if args.int8:
        import shutil
        import tempfile

        from evf_sam_ros.model.quantize import quantize_export

        if args.dtype != 'fp32':
            raise SystemExit('evf-sam: error: --int8 quantises an fp32 export; drop --dtype fp16')
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
            export_onnx(predictor.model, directory, tmp, opset=args.opset, source=str(directory))
            shutil.rmtree(out, ignore_errors=True)
            quantize_export(tmp, out)
    else:
        export_onnx(predictor.model, directory, out, dtype=args.dtype, opset=args.opset, source=str(directory))
    print(f'evf-sam: exported {predictor.config.architecture_name} ({"int8 weights" if args.int8 else args.dtype}) '
          f'to {out} in '
          f'{time.perf_counter() - start:.1f} s; use it with --backend onnxruntime|openvino '
          f'(load_model({str(out)!r}, backend="onnxruntime"))')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='evf-sam', description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    def model_args(p):
        p.add_argument('--model', default=None,
                       help='checkpoint directory or Hugging Face id in the local cache '
                            '(default: the embedded synthetic tabletop demo model)')
        p.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda, cuda:N')
        p.add_argument('--dtype', default='auto', choices=['auto', 'fp32', 'fp16', 'bf16'],
                       help='compute precision (auto: fp16 on CUDA, fp32 on CPU; fp16/bf16 are meant for CUDA)')
        p.add_argument('--allow-download', action='store_true',
                       help='let huggingface_hub download a model id that is not in the local cache')
        p.add_argument('--backend', default='torch', choices=['torch', 'onnxruntime', 'openvino'],
                       help='torch, or exported ONNX graphs (evf-sam export) run by onnxruntime / OpenVINO')
        p.add_argument('--threads', type=int, default=0, help='CPU threads (0: the runtime default)')

    seg = sub.add_parser('segment', help='segment an image with one or more prompts')
    seg.add_argument('--score-threshold', type=float, default=0.5,
                     help='min predicted IoU for "detected" (as the node; masks are written regardless)')
    seg.add_argument('--min-mask-area', type=int, default=50, help='min mask area [px] for "detected"')
    seg.add_argument('image', help='image file (PNG, JPEG, ...)')
    seg.add_argument('prompts', nargs='+', help='referring expressions; "[semantic] x" for multitask checkpoints')
    seg.add_argument('--out', default='out', help='output directory (default: out/)')
    model_args(seg)
    seg.set_defaults(func=_cmd_segment)

    info = sub.add_parser('info', help='load a model and print what it is')
    model_args(info)
    info.set_defaults(func=_cmd_info)

    exp = sub.add_parser('export', help='export the three networks to ONNX (for --backend onnxruntime/openvino)')
    exp.add_argument('model', help='checkpoint directory, Hugging Face id in the local cache, or "default" '
                                   '(the embedded demo model)')
    exp.add_argument('out_dir', nargs='?', default=None,
                     help='output directory (default: MODEL/onnx, found there by load_model; for "default" a '
                          'user-cache folder)')
    exp.add_argument('--dtype', default='fp32', choices=['fp32', 'fp16'], help='graph precision (fp16: GPUs)')
    exp.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18)')
    exp.add_argument('--int8', action='store_true',
                     help='int8 weights in the image encoder and text branch (faster on CPUs with VNNI; changes '
                          'masks slightly, see the README; off by default)')
    exp.add_argument('--threads', type=int, default=0, help='torch CPU threads while exporting')
    exp.add_argument('--allow-download', action='store_true', help='download a Hugging Face id if not cached')
    exp.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evf_sam_ros.model import EvfSamError

    try:
        return args.func(args)
    except EvfSamError as exc:
        print(f'evf-sam: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
