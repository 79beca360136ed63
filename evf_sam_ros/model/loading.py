"""Loading and saving checkpoints in the released EVF-SAM layout.

A checkpoint directory holds ``config.json``, the weights (``model.safetensors``, a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin``) and the tokenizer files. ``load_model`` accepts
such a directory, or a Hugging Face id (``YxZhang/evf-sam2``) that is already in the local HF cache; it
downloads only with ``allow_download=True``.

dtype policy: fp32 is the reference and the default on CPU ("auto"); on CUDA "auto" means fp16 (bf16 also fast). On CPU,
bf16 works and is tested; fp16 runs too (torch >= 2.1 has CPU fp16 kernels for everything used here) but it
is usually slower than fp32 on CPUs without native fp16, so a warning is logged. Post-processing is always
fp32, and the SAM-1 neck stays fp32 (spec 7.1).
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import zipfile
from typing import Any, Mapping

import torch

from .config import EvfSamBehaviour, EvfSamConfig
from ..errors import EvfSamOutOfMemoryError, ModelLoadError
from .modeling import EvfSamModel
from .predictor import EvfSamPredictor
from .tokenizer import SEMANTIC_TOKEN, load_tokenizer, save_tokenizer

__all__ = ['load_model', 'save_checkpoint', 'resolve_checkpoint_dir', 'resolve_device', 'resolve_dtype',
           'read_weights', 'DEFAULT_MODEL_DIR']

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = pathlib.Path(__file__).resolve().parent / 'default_model'
SAFETENSORS_FILE = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'
BIN_FILE = 'pytorch_model.bin'
_HF_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')
_DTYPES = {
    'fp32': torch.float32, 'float32': torch.float32, 'float': torch.float32, 'f32': torch.float32,
    'fp16': torch.float16, 'float16': torch.float16, 'half': torch.float16, 'f16': torch.float16,
    'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
}


# ---- device / dtype ----------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``auto`` (CUDA if available) or a torch.device."""
    if device is None or (isinstance(device, str) and device.strip().lower() == 'auto'):
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f'unknown device {device!r}; use "cpu", "cuda", "cuda:N" or "auto"') from exc
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ModelLoadError(f'device {device!r} requested but CUDA is not available (torch {torch.__version__}, '
                                 f'CUDA build: {torch.version.cuda or "none"}). Set device to "cpu" or "auto", or '
                                 'install a CUDA build of torch and check the NVIDIA driver (nvidia-smi).')
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f'device {device!r} requested but only {count} CUDA device(s) exist '
                                 f'(cuda:0..cuda:{count - 1}); check CUDA_VISIBLE_DEVICES')
        if dev.index is None:
            dev = torch.device('cuda', torch.cuda.current_device())
    elif dev.type not in ('cpu', 'mps'):
        raise ModelLoadError(f'unsupported device {device!r}; use "cpu", "cuda", "cuda:N" or "auto"')
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``fp32``/``fp16``/``bf16`` (or the torch dtype), or ``auto``: fp16 on CUDA, fp32 elsewhere."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str) and dtype.strip().lower() == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if isinstance(dtype, str):
        key = dtype.strip().lower().replace('torch.', '')
        if key not in _DTYPES:
            raise ModelLoadError(f'unknown dtype {dtype!r}; use "fp32", "fp16", "bf16" or "auto"')
        dtype = _DTYPES[key]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ModelLoadError(f'unsupported dtype {dtype}; use torch.float32, torch.float16 or torch.bfloat16')
    if device.type == 'cpu' and dtype == torch.float16:
        log.warning('fp16 on CPU works but is usually slower than fp32; prefer dtype="fp32" (or "bf16") on CPU')
    if device.type == 'cuda' and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ModelLoadError(f'bf16 requested but {torch.cuda.get_device_name(device)} does not support it; '
                             'use dtype="fp16"')
    return dtype


# ---- where the checkpoint is -------------------------------------------------------------------------
def resolve_checkpoint_dir(path: str | os.PathLike | None, *,
                           allow_download: bool = False) -> tuple[pathlib.Path, bool]:
    """Local directory of a checkpoint given as a directory, a HF id, or None (the embedded default model).

    Returns ``(directory, is_default_model)``.
    """
    if path is None:
        if not (DEFAULT_MODEL_DIR / 'config.json').is_file():
            raise ModelLoadError(f'no model path given and the embedded default model is not installed '
                                 f'({DEFAULT_MODEL_DIR} has no config.json). Pass a checkpoint directory or a '
                                 'Hugging Face id, e.g. load_model("YxZhang/evf-sam2"), or install the default model.')
        return DEFAULT_MODEL_DIR, True
    text = os.fspath(path)
    local = pathlib.Path(text).expanduser()
    if local.is_dir():
        return local, local.resolve() == DEFAULT_MODEL_DIR.resolve()
    if local.exists():
        raise ModelLoadError(f'{local} is a file; pass the checkpoint directory that holds config.json, the '
                             'weights and the tokenizer files')
    if isinstance(path, str) and _HF_ID.match(text) and not text.startswith(('.', '/')):
        return _hf_snapshot(text, allow_download), False
    raise ModelLoadError(f'checkpoint directory {text!r} does not exist. Pass an existing directory (config.json, '
                         'model.safetensors or pytorch_model.bin, tokenizer files) or a Hugging Face id such as '
                         '"YxZhang/evf-sam2" that is in the local cache.')


def _hf_snapshot(repo_id: str, allow_download: bool) -> pathlib.Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ['*.json', '*.model', '*.safetensors', '*.bin', '*.txt']
    # read at call time (huggingface_hub fixes its default when imported): HF_HUB_CACHE, then HF_HOME/hub
    cache_dir = os.environ.get('HF_HUB_CACHE') or (os.path.join(os.environ['HF_HOME'], 'hub')
                                                    if os.environ.get('HF_HOME') else None)
    try:
        return pathlib.Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns,
                                              cache_dir=cache_dir))
    except LocalEntryNotFoundError as exc:
        if not allow_download:
            raise ModelLoadError(
                f'{repo_id!r} is not in the local Hugging Face cache ({cache_dir or _hf_cache_dir()}). '
                f'Download it once with `hf download {repo_id}` (huggingface_hub), or point model_path at a '
                'local checkpoint directory (from Python: load_model(..., allow_download=True))') from exc
    except (OSError, ValueError) as exc:
        if not allow_download:
            raise ModelLoadError(f'{repo_id!r}: the local Hugging Face cache could not be read ({exc})') from exc
    try:
        return pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir))
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(f'{repo_id!r}: download failed ({type(exc).__name__}: {exc}). Check the id, the network '
                             'and HF_HUB_OFFLINE (it must be unset or 0 to download).') from exc


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - informational only
        return '~/.cache/huggingface/hub'


# ---- weights -----------------------------------------------------------------------------------------
def _weight_files(directory: pathlib.Path) -> tuple[str, list[pathlib.Path]]:
    if (directory / SAFETENSORS_FILE).is_file():
        return 'safetensors', [directory / SAFETENSORS_FILE]
    if (directory / SAFETENSORS_INDEX).is_file():
        try:
            index = json.loads((directory / SAFETENSORS_INDEX).read_text())
            shards = sorted(set(index['weight_map'].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f'{directory / SAFETENSORS_INDEX}: unreadable shard index ({exc}); re-download '
                                 'the checkpoint') from exc
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise ModelLoadError(f'{directory}: weight shard(s) missing: {missing}; re-download the checkpoint')
        return 'safetensors', [directory / s for s in shards]
    if (directory / BIN_FILE).is_file():
        return 'bin', [directory / BIN_FILE]
    present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    raise ModelLoadError(f'{directory}: no weights: expected {SAFETENSORS_FILE} or {BIN_FILE} (found: '
                         f'{", ".join(present) or "nothing"}). Copy the weight file of the checkpoint into the '
                         'directory.')


def _target_dtype(key: str, tensor: torch.Tensor, dtype: torch.dtype, config: EvfSamConfig) -> torch.dtype:
    if not tensor.is_floating_point():
        return tensor.dtype
    if not config.is_sam2 and key.startswith('visual_model.image_encoder.neck.'):
        return torch.float32  # the SAM-1 neck stays fp32
    return dtype


def read_weights(directory: pathlib.Path, config: EvfSamConfig, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = 'cpu') -> dict[str, torch.Tensor]:
    """Read the official-layout state dict, casting each floating tensor to ``dtype`` on ``device`` as it is read
    (files may mix dtypes: evf-sam2 stores BEiT-3 in fp32 and SAM-2 in fp16)."""
    kind, files = _weight_files(directory)
    out: dict[str, torch.Tensor] = {}
    for path in files:
        if kind == 'safetensors':
            out.update(_read_safetensors(path, config, dtype, device))
        else:
            out.update(_read_bin(path, config, dtype, device))
    return out


def _corrupt(path: pathlib.Path, exc: BaseException) -> ModelLoadError:
    size = path.stat().st_size if path.exists() else 0
    return ModelLoadError(f'{path}: the weight file is truncated or corrupt ({type(exc).__name__}: {exc}; '
                          f'{size} bytes on disk). Re-download or re-copy it (an interrupted download leaves a '
                          'partial file).')


def _read_safetensors(path: pathlib.Path, config: EvfSamConfig, dtype: torch.dtype,
                      device: torch.device | str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    out = {}
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                out[key] = tensor.to(device=device, dtype=_target_dtype(key, tensor, dtype, config))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise _corrupt(path, exc) from exc
    return out


def _read_bin(path: pathlib.Path, config: EvfSamConfig, dtype: torch.dtype,
              device: torch.device | str) -> dict[str, torch.Tensor]:
    import pickle

    try:
        try:  # mmap reads tensors lazily (peak memory ~ one tensor); needs the zip format of torch >= 1.6
            state = torch.load(str(path), map_location='cpu', weights_only=True, mmap=True)
        except (RuntimeError, ValueError) as exc:
            if 'zip' not in str(exc).lower() and 'mmap' not in str(exc).lower():
                raise
            state = torch.load(str(path), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names the blocked import: "Unsupported global: GLOBAL x.y" / "unsupported GLOBAL x.y whose ..."
        found = re.search(r'unsupported (?:global: )?GLOBAL (\S+)', str(exc), re.IGNORECASE)
        if found:
            what = f' ({found.group(1)})'
            raise ModelLoadError(f'{path}: REFUSED for safety: it holds Python objects other than tensors{what} or '
                                 'code to run, which torch.load(weights_only=True) does not execute. Use a checkpoint '
                                 'from a trusted source, saved as a plain state dict or as model.safetensors') from exc
        raise _corrupt(path, exc) from exc
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise _corrupt(path, exc) from exc
    if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for nested in ('state_dict', 'model', 'module'):
            if isinstance(state.get(nested), Mapping):
                state = state[nested]
                break
    if not isinstance(state, Mapping):
        raise ModelLoadError(f'{path}: expected a state dict (a mapping of names to tensors), got '
                             f'{type(state).__name__}')
    out = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ModelLoadError(f'{path}: entry {key!r} is a {type(tensor).__name__}, not a tensor')
        out[key] = tensor.to(device=device, dtype=_target_dtype(key, tensor, dtype, config))
    return out


# ---- load_model ----------------------------------------------------------------------------------------
def load_checkpoint_tokenizer(directory: pathlib.Path, config: EvfSamConfig):
    """The checkpoint's tokenizer, checked against its BEiT-3 embedding table (shared by every backend).

    BEiT-3 keeps a few spare rows (64,010 for XLM-R's 64,002 tokens). A larger tokenizer indexes past the
    table: refused. One that leaves most rows unused is most likely another model's, which would make every
    prompt silently misread; tables padded for speed are legal, so that only gets a warning.
    """
    tokenizer = load_tokenizer(directory)
    rows, tokens = config.beit3.vocab_size, len(tokenizer)
    if tokens > rows:
        raise ModelLoadError(f'{directory}: the tokenizer has {tokens} tokens but the BEiT-3 embedding only {rows} '
                             'rows; the tokenizer files belong to another model (restore the checkpoint\'s own '
                             'sentencepiece.bpe.model)')
    if tokens < rows // 2:
        log.warning('%s: the tokenizer has %d tokens but the BEiT-3 embedding %d rows; if these tokenizer files '
                    "are not the checkpoint's own, every prompt is misread (restore its sentencepiece.bpe.model)",
                    directory, tokens, rows)
    if config.behaviour.multitask and SEMANTIC_TOKEN not in tokenizer.get_vocab():
        log.warning('%s: multitask behaviour but the tokenizer has no %s token', directory, SEMANTIC_TOKEN)
    return tokenizer


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = 'cpu',
               dtype: str | torch.dtype = 'auto', *, allow_download: bool = False,
               behaviour: Mapping[str, Any] | EvfSamBehaviour | None = None, backend: str = 'torch',
               backend_options: Mapping[str, Any] | None = None) -> EvfSamPredictor:
    """Load an EVF-SAM / EVF-SAM2 checkpoint for inference.

    path: checkpoint directory, Hugging Face id in the local cache, or None for the embedded default model.
    device: "cpu", "cuda", "cuda:N" or "auto". dtype: torch dtype or "fp32"/"fp16"/"bf16"/"auto" (default: fp16
    on CUDA, fp32 elsewhere; exported backends: the export's dtype). allow_download: fetch a Hugging Face id that is not cached. behaviour: overrides
    of the inferred/declared behaviour, e.g. ``{"mask_selection": "best_of_3", "sam_resize": "square"}``.
    backend: "torch" (default), or "onnxruntime" / "openvino", which run graphs written by ``evf-sam export``
    (path: the export directory, or a checkpoint with them in ``onnx/``); backend_options: see runtimes.py.
    """
    if backend != 'torch':
        from .runtimes import BACKENDS, load_exported

        if backend not in BACKENDS:
            raise ModelLoadError(f'unknown backend {backend!r}; use one of {", ".join(BACKENDS)}')
        directory, is_default = resolve_checkpoint_dir(path, allow_download=allow_download)
        name = 'default' if is_default else os.fspath(path)
        return load_exported(directory, backend=backend, device=device, dtype=dtype, is_default=is_default,
                             name=name, behaviour=behaviour, backend_options=backend_options)
    if backend_options:
        raise ModelLoadError(f'backend_options {sorted(backend_options)} apply to the onnxruntime/openvino '
                             'backends only')
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    directory, is_default = resolve_checkpoint_dir(path, allow_download=allow_download)
    config = read_config(directory, behaviour)
    tokenizer = load_checkpoint_tokenizer(directory, config)
    try:
        state = read_weights(directory, config, torch_dtype, dev)
        # Build on the meta device and adopt the loaded tensors: no random init, no second copy.
        with torch.device('meta'):
            model = EvfSamModel(config)
        model.to_inference_dtype(torch_dtype)
        model.load_official_state_dict(state, strict=True, assign=True, source=str(directory))
        del state
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise EvfSamOutOfMemoryError(f'out of GPU memory while loading {directory} in {torch_dtype} on {dev}: {exc}. '
                                     'Use dtype="fp16", another GPU (device="cuda:N"), or free GPU memory.') from exc
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:  # pragma: no cover - would mean a module grew a non-persistent buffer
        raise ModelLoadError(f'internal error: tensors left uninitialised after loading: {leftover[:5]}')
    bad = [n for n, t in model.named_parameters() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelLoadError(f'{directory}: {len(bad)} weight tensor(s) hold NaN or inf (e.g. {", ".join(bad[:3])}): the '
                             'checkpoint is corrupt or comes from a diverged training run; use another checkpoint')
    model.eval()
    name = 'default' if is_default else (os.fspath(path) if path is not None else str(directory))
    log.info('loaded %s (%s) on %s in %s', name, config.architecture_name, dev, torch_dtype)
    return EvfSamPredictor(model, tokenizer, device=dev, dtype=torch_dtype, name=name, is_default_model=is_default)


def read_config(directory: pathlib.Path, behaviour: Mapping[str, Any] | EvfSamBehaviour | None = None) -> EvfSamConfig:
    """The checkpoint's config with ``behaviour`` overrides applied (shared by every backend)."""
    config = EvfSamConfig.from_checkpoint_dir(directory)
    if behaviour is not None:
        try:
            config.behaviour = config.behaviour.replace(behaviour)
        except ValueError as exc:
            raise ModelLoadError(f'invalid behaviour override: {exc}') from exc
    return config


# ---- save_checkpoint -----------------------------------------------------------------------------------
def save_checkpoint(model: EvfSamModel, tokenizer_dir_or_tokenizer, out_dir: str | os.PathLike, *,
                    weights_format: str = 'safetensors', dtype: torch.dtype | None = None) -> pathlib.Path:
    """Write a checkpoint directory that ``load_model`` (and the official code) can read.

    Files: ``config.json`` (official fields + our explicit ``evf_sam_ros`` section), ``model.safetensors`` or
    ``pytorch_model.bin`` in the official key layout (SAM-2: image-path keys only, no memory modules), and the
    tokenizer files. ``dtype`` casts floating tensors on the way out (default: as in the model).
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if weights_format not in ('safetensors', 'bin'):
        raise ValueError(f"weights_format must be 'safetensors' or 'bin', got {weights_format!r}")
    save_tokenizer(tokenizer_dir_or_tokenizer, out)
    config = model.config
    has_semantic = (out / 'added_tokens.json').is_file() and SEMANTIC_TOKEN in (out / 'added_tokens.json').read_text()
    if has_semantic != config.behaviour.multitask:
        log.warning('saving %s: behaviour.multitask=%s but the tokenizer %s the %s token', out,
                    config.behaviour.multitask, 'has' if has_semantic else 'lacks', SEMANTIC_TOKEN)
    state = {}
    for key, tensor in sorted(model.official_state_dict().items()):
        tensor = tensor.detach().to('cpu')
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous().clone()  # no shared storage (safetensors refuses it)
    stored = {t.dtype for t in state.values() if t.is_floating_point()}
    torch_dtype = str(stored.pop()).replace('torch.', '') if len(stored) == 1 else 'float32'
    config.to_json(out / 'config.json', torch_dtype=torch_dtype)
    for stale in (SAFETENSORS_FILE, BIN_FILE, SAFETENSORS_INDEX):
        (out / stale).unlink(missing_ok=True)
    if weights_format == 'safetensors':
        from safetensors.torch import save_file
        save_file(state, str(out / SAFETENSORS_FILE), metadata={'format': 'pt'})
    else:
        torch.save(state, str(out / BIN_FILE))
    return out
