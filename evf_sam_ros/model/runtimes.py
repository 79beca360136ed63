"""The onnxruntime and OpenVINO backends: the exported graphs (export.py) behind the predictor API.

    predictor = load_model(EXPORT_DIR, backend="onnxruntime")      # or backend="openvino"
    predictor = load_model(MODEL_DIR, backend="openvino")         # finds MODEL_DIR/onnx

Only the three networks differ from the torch backend: pre-processing, tokenisation and prompt checks, the
mask-selection rule and post-processing are the package's torch code (on the CPU). ``backend_options``:

* onnxruntime: ``threads`` (intra-op, 0 = runtime default), ``optimization`` (``disable``, ``basic``,
  ``extended``, ``all``; default ``all``), ``spinning`` (thread spin-waiting, default off), ``providers``
  (list, overrides the device's choice), ``tensorrt`` (True: TensorRT EP before CUDA EP), ``trt_cache_dir``
  (engine cache of the TensorRT EP).
* openvino: ``threads``, ``hint`` (``LATENCY`` default, ``THROUGHPUT``), ``ov_device`` (``CPU``, ``GPU``,
  ``AUTO``), ``precision`` (``f32`` default for parity; ``bf16``/``f16`` where the device has it),
  ``cache_dir`` (compiled-model cache).
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from typing import Any, Mapping

import numpy as np
import torch

from .config import EvfSamConfig
from ..errors import ModelLoadError
from .export import EXPORT_MANIFEST, read_manifest
from .modeling import DecoderOutput, SamImageEmbeddings
from .predictor import EvfSamPredictor

__all__ = ['BACKENDS', 'ExportedGraphPredictor', 'find_export_dir', 'load_exported', 'default_model_export_dir']

log = logging.getLogger(__name__)

BACKENDS = ('torch', 'onnxruntime', 'openvino')
_NP_FLOAT = {'fp32': np.float32, 'fp16': np.float16}


# ---- where the graphs are ---------------------------------------------------------------------------------
def default_model_export_dir(default_model_dir: pathlib.Path) -> pathlib.Path:
    """User-cache folder for the embedded model's export, keyed by its weights (the package dir may be read-only)."""
    digest = hashlib.sha256((default_model_dir / 'model.safetensors').read_bytes()).hexdigest()[:12]
    cache = pathlib.Path(os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache')
    return cache / 'evf_sam_ros' / f'default_model_onnx-{digest}'


def find_export_dir(directory: pathlib.Path, *, is_default: bool = False) -> pathlib.Path:
    """``directory`` itself when it holds export.json, else ``directory/onnx`` (the embedded model: a user cache)."""
    candidates = [directory, directory / 'onnx']
    if is_default:
        candidates.append(default_model_export_dir(directory))
    for candidate in candidates:
        if (candidate / EXPORT_MANIFEST).is_file():
            return candidate
    how = ('`evf-sam export default` (writes to ' + str(candidates[-1]) + ')' if is_default
           else f'`evf-sam export {directory} {directory / "onnx"}`')
    raise ModelLoadError(f'{directory}: no exported graphs ({EXPORT_MANIFEST} neither there nor in '
                         f'{", ".join(str(c) for c in candidates[1:])}). The onnxruntime/openvino backends run '
                         f'exported graphs: run {how} first, or pass the export directory as the model path.')


# ---- one graph, one runtime -------------------------------------------------------------------------------
class _OrtGraph:
    """An onnxruntime session: ``graph(feeds) -> list of outputs`` (numpy, in the manifest's order)."""

    def __init__(self, path: pathlib.Path, device: str, options: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        levels = {'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        so = ort.SessionOptions()
        level = options.get('optimization', 'all')
        if level not in levels:
            raise ModelLoadError(f'onnxruntime optimization {level!r}: use one of {", ".join(levels)}')
        so.graph_optimization_level = levels[level]
        so.intra_op_num_threads = int(options.get('threads', 0))
        so.inter_op_num_threads = 1
        # no spin-waiting between calls by default: it keeps cores busy that pre/post-processing (and the rest
        # of a robot's processes) need; backend_options={"spinning": True} turns it back on
        spin = '1' if options.get('spinning', False) else '0'
        so.add_session_config_entry('session.intra_op.allow_spinning', spin)
        so.log_severity_level = 3
        providers = options.get('providers') or _ort_providers(device, options, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelLoadError(f'{path}: onnxruntime could not load the graph ({type(exc).__name__}: {exc}). '
                                 'Re-export it with this package version (`evf-sam export`).') from exc
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)


def _ort_providers(device: str, options: Mapping[str, Any], available: list[str]) -> list:
    if device == 'cpu':
        return ['CPUExecutionProvider']
    index = int(device.split(':')[1]) if ':' in device else 0
    if 'CUDAExecutionProvider' not in available:
        raise ModelLoadError(f'device {device!r} with backend onnxruntime needs the CUDA execution provider, but '
                             f'this onnxruntime has only {available}. Install onnxruntime-gpu (same version) '
                             'instead of onnxruntime, or use device="cpu".')
    providers: list = []
    if options.get('tensorrt'):
        trt = {'device_id': index, 'trt_fp16_enable': True, 'trt_engine_cache_enable': True,
               'trt_engine_cache_path': str(options.get('trt_cache_dir', 'trt_cache'))}
        providers.append(('TensorrtExecutionProvider', trt))
    providers += [('CUDAExecutionProvider', {'device_id': index}), 'CPUExecutionProvider']
    return providers


class _OpenVinoGraph:
    """An OpenVINO compiled model read from the ONNX file: ``graph(feeds) -> list of outputs``."""

    def __init__(self, path: pathlib.Path, device: str, options: Mapping[str, Any]) -> None:
        import openvino as ov

        core = ov.Core()
        if options.get('cache_dir'):
            core.set_property({'CACHE_DIR': str(options['cache_dir'])})
        config = {'PERFORMANCE_HINT': str(options.get('hint', 'LATENCY')).upper()}
        if device in ('CPU', 'AUTO') or device.startswith('GPU'):
            config['INFERENCE_PRECISION_HINT'] = str(options.get('precision', 'f32'))
        if options.get('threads') and device == 'CPU':
            config['INFERENCE_NUM_THREADS'] = int(options['threads'])
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError/GeneralFailure subclasses
            raise ModelLoadError(f'{path}: OpenVINO could not compile the graph for {device} '
                                 f'({type(exc).__name__}: {exc}). Check the device (core.available_devices: '
                                 f'{core.available_devices}) or re-export the graph.') from exc
        self.outputs = list(self.compiled.outputs)
        self.request = self.compiled.create_infer_request()

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feeds, share_inputs=True)
        return [np.array(result[o]) for o in self.outputs]  # copies: the request reuses its buffers


# ---- the predictor ----------------------------------------------------------------------------------------
class ExportedGraphPredictor(EvfSamPredictor):
    """:class:`EvfSamPredictor` whose three networks are exported graphs run by onnxruntime or OpenVINO."""

    def __init__(self, graphs: Mapping[str, Any], manifest: dict, tokenizer, config: EvfSamConfig, *,
                 backend: str, export_dir: pathlib.Path, name: str = '', is_default_model: bool = False) -> None:
        dtype = torch.float16 if manifest['dtype'] == 'fp16' else torch.float32
        super().__init__(None, tokenizer, device=torch.device('cpu'), dtype=dtype, name=name,
                         is_default_model=is_default_model, config=config)
        self.backend = backend
        self.graphs = dict(graphs)
        self.manifest = manifest
        self.export_dir = export_dir
        self._float = _NP_FLOAT[manifest['dtype']]

    def _floats(self, tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy().astype(self._float, copy=False)

    def _run_sam_encoder(self, sam_pixel_values: torch.Tensor) -> SamImageEmbeddings:
        levels = [torch.from_numpy(x) for x in self.graphs['image_encoder'](
            {'sam_pixel_values': self._floats(sam_pixel_values)})]
        return levels if self.config.is_sam2 else levels[0]

    def _run_prompt_embeddings(self, beit3_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor) -> torch.Tensor:
        (prompt,) = self.graphs['text_encoder']({
            'beit3_pixel_values': self._floats(beit3_pixel_values),
            'input_ids': input_ids.cpu().numpy().astype(np.int64, copy=False),
            'attention_mask': attention_mask.cpu().numpy().astype(np.int64, copy=False)})
        return torch.from_numpy(prompt)  # [B, 1, C]

    def _run_decoder(self, sam_embeddings: SamImageEmbeddings, prompt_embeddings: torch.Tensor) -> DecoderOutput:
        feeds = {'prompt_embeddings': self._floats(prompt_embeddings)}
        if self.config.is_sam2:
            s0, s1, emb = sam_embeddings
            feeds.update(high_res_feat_s0=self._floats(s0), high_res_feat_s1=self._floats(s1),
                         image_embeddings=self._floats(emb))
        else:
            feeds['image_embeddings'] = self._floats(sam_embeddings)
        outs = [torch.from_numpy(x) for x in self.graphs['mask_decoder'](feeds)]
        return DecoderOutput(outs[0], outs[1], outs[2] if len(outs) > 2 else None)

    def dense_positional_embedding(self) -> torch.Tensor:
        raise NotImplementedError('the dense positional embedding is a constant inside mask_decoder.onnx')


def _runtime_device(backend: str, device: Any, options: Mapping[str, Any]) -> str:
    text = str(device or 'auto').strip().lower()
    if backend == 'openvino':
        if text in ('auto', 'cpu'):
            return str(options.get('ov_device', 'CPU')).upper()
        raise ModelLoadError(f'device {device!r} with backend openvino: use device="cpu" (or "auto") and pick an '
                             'OpenVINO device with backend_options={"ov_device": "GPU"}')
    import onnxruntime as ort

    if text == 'auto':
        return 'cuda' if 'CUDAExecutionProvider' in ort.get_available_providers() else 'cpu'
    if text == 'cpu' or text == 'cuda' or (text.startswith('cuda:') and text[5:].isdigit()):
        return text
    raise ModelLoadError(f'device {device!r} with backend onnxruntime: use "cpu", "cuda", "cuda:N" or "auto"')


def load_exported(directory: pathlib.Path, *, backend: str, device: Any = 'auto', dtype: Any = 'auto',
                  is_default: bool = False, name: str = '', behaviour: Any = None,
                  backend_options: Mapping[str, Any] | None = None) -> ExportedGraphPredictor:
    """Load the exported graphs for ``backend`` (see the module docstring for ``backend_options``)."""
    if backend not in ('onnxruntime', 'openvino'):
        raise ModelLoadError(f'unknown backend {backend!r}; use one of {", ".join(BACKENDS)}')
    module = 'onnxruntime' if backend == 'onnxruntime' else 'openvino'
    try:
        __import__(module)
    except ImportError as exc:
        raise ModelLoadError(f'backend {backend!r} needs the {module} package, which is not installed: '
                             'pip install -r requirements/deploy.txt') from exc
    options = dict(backend_options or {})
    export_dir = find_export_dir(directory, is_default=is_default)
    manifest = read_manifest(export_dir)
    wanted = str(dtype).replace('torch.', '').lower() if dtype is not None else 'auto'
    aliases = {'float32': 'fp32', 'float': 'fp32', 'float16': 'fp16', 'half': 'fp16'}
    wanted = aliases.get(wanted, wanted)
    if wanted not in ('auto', manifest['dtype']):
        raise ModelLoadError(f'{export_dir}: the graphs were exported in {manifest["dtype"]}, not {wanted}; pass '
                             f'dtype="auto" or re-export with `evf-sam export ... --dtype {wanted}`')
    from .loading import load_checkpoint_tokenizer, read_config
    config = read_config(export_dir, behaviour)
    tokenizer = load_checkpoint_tokenizer(export_dir, config)
    runtime_device = _runtime_device(backend, device, options)
    graph_cls = _OrtGraph if backend == 'onnxruntime' else _OpenVinoGraph
    graphs = {key: graph_cls(export_dir / g['file'], runtime_device, options) for key, g in manifest['graphs'].items()}
    log.info('loaded %s graphs from %s with %s on %s', manifest['dtype'], export_dir, backend, runtime_device)
    return ExportedGraphPredictor(graphs, manifest, tokenizer, config, backend=backend, export_dir=export_dir,
                                  name=name or str(directory), is_default_model=is_default)
