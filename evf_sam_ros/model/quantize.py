"""Optional int8 weights for an export (onnxruntime dynamic quantisation of MatMul/Gemm weights).

    evf-sam export MODEL_DIR OUT_DIR --int8        # or quantize_export(FP32_EXPORT_DIR, INT8_DIR)

Off by default: it changes the masks (the README's backend table gives the measured IoU against fp32).
The image encoder and the text branch are quantised; the mask decoder (small, and where the logits are
formed) stays fp32. Activations are quantised per call (dynamic), so no calibration data is needed.
"""
from __future__ import annotations

import json
import pathlib
import shutil

from .export import EXPORT_MANIFEST, read_manifest

__all__ = ['quantize_export', 'QUANTIZED_GRAPHS']

QUANTIZED_GRAPHS = ('image_encoder', 'text_encoder')
_LARGE_BYTES = 1 << 30


def quantize_export(src: str | pathlib.Path, dst: str | pathlib.Path) -> pathlib.Path:
    """Copy the fp32 export ``src`` to ``dst`` with int8 weights in the image encoder and the text branch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = pathlib.Path(src), pathlib.Path(dst)
    manifest = read_manifest(src)
    if manifest['dtype'] != 'fp32':
        raise ValueError(f'{src}: int8 weights need an fp32 export, this one is {manifest["dtype"]}')
    dst.mkdir(parents=True, exist_ok=True)
    graph_files = {g['file'] for g in manifest['graphs'].values()}
    for path in src.iterdir():
        if path.is_file() and path.name not in graph_files and not path.name.endswith('.onnx.data') \
                and path.name != EXPORT_MANIFEST:
            shutil.copy(path, dst / path.name)
    for name, graph in manifest['graphs'].items():
        source = src / graph['file']
        if name not in QUANTIZED_GRAPHS:
            shutil.copy(source, dst / graph['file'])
            if source.with_name(source.name + '.data').is_file():
                shutil.copy(source.with_name(source.name + '.data'), dst / (graph['file'] + '.data'))
            continue
        data = source.with_name(source.name + '.data')
        size = source.stat().st_size + (data.stat().st_size if data.is_file() else 0)
        quantize_dynamic(str(source), str(dst / graph['file']), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=['MatMul', 'Gemm'], use_external_data_format=size > 4 * _LARGE_BYTES)
    manifest['weights'] = {'int8_dynamic': list(QUANTIZED_GRAPHS)}
    (dst / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n')
    return dst
