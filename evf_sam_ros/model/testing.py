"""Tiny random-weight EVF-SAM checkpoints for tests, demos and synthetic training (a few hundred kB).

    from evf_sam_ros.model.testing import make_tiny_checkpoint
    ckpt = make_tiny_checkpoint(tmp_dir, sam="sam2", multitask=True, seed=0, sam_image_size=256)
    predictor = load_model(ckpt)

The checkpoint has the released file layout (``config.json`` with our explicit section, ``model.safetensors``
or ``pytorch_model.bin`` with official key names, XLM-R style tokenizer files) and is deterministic for a seed.
Its weights are random but perturbed away from identity-like initialisations, so masks depend on the image and
the prompt.
"""
from __future__ import annotations

import math
import pathlib
import re
import shutil
import zlib
from typing import Iterable, Iterator

import torch

from .config import Beit3Config, EvfSamConfig, HieraConfig, MaskDecoderConfig, ViTConfig, default_behaviour
from .loading import save_checkpoint
from .modeling import EvfSamModel
from .tokenizer import make_tiny_tokenizer

__all__ = ['tiny_config', 'make_tiny_model', 'make_tiny_checkpoint', 'make_tiny_tokenizer', 'randomize_weights',
           'fixture_weight', 'read_key_list', 'make_fullsize_checkpoint', 'FULLSIZE_CASES']


def tiny_config(sam: str = 'sam1', *, multitask: bool = False, sam_image_size: int = 1024,
                vocab_size: int = 300) -> EvfSamConfig:
    """A tiny architecture: BEiT-3 32-dim x 2 layers, ViT 32-dim x 2 layers or Hiera 8..64-dim, decoder 32-dim."""
    if sam not in ('sam1', 'sam2'):
        raise ValueError(f"sam must be 'sam1' or 'sam2', got {sam!r}")
    tokens = sam_image_size // 16
    beit3 = Beit3Config(embed_dim=32, num_layers=2, num_heads=2, ffn_dim=64, vocab_size=vocab_size)
    decoder = MaskDecoderConfig(depth=2, num_heads=4, mlp_dim=64, iou_head_hidden_dim=32, mask_in_chans=16)
    vit = hiera = None
    if sam == 'sam1':
        vit = ViTConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=min(14, tokens))
    else:
        hiera = HieraConfig(embed_dim_per_stage=(8, 16, 32, 64), num_heads_per_stage=(1, 2, 4, 8),
                            blocks_per_stage=(1, 1, 2, 1), global_att_blocks=(3,), window_spec=(8, 4, 14, 7),
                            window_pos_embed_bkg_spatial_size=(7, 7))
    return EvfSamConfig(sam_kind=sam, beit3=beit3, vit=vit, hiera=hiera, mask_decoder=decoder, out_dim=32,
                        sam_image_size=sam_image_size, behaviour=default_behaviour(sam, multitask),
                        name=f'tiny-{sam}{"-multitask" if multitask else ""}')


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, seed: int) -> None:
    """Deterministic weights with no identity-like layers: scaled-normal matrices, LayerNorm scales around 1,
    biases/embeddings/position tables around 0 (zero-initialised tables would make positions invisible)."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not param.is_floating_point():
            continue
        shape = param.shape
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        leaf = name.rsplit('.', 1)[-1]
        if param.dim() >= 2 and leaf == 'weight' and 'embed' not in name and 'token' not in name:
            fan_in = max(1, param[0].numel())
            value = noise / fan_in ** 0.5
        elif leaf == 'weight' and param.dim() == 1:  # LayerNorm scale
            value = 1.0 + 0.1 * noise
        elif leaf == 'bias':
            value = 0.05 * noise
        else:  # embeddings, tokens, position tables, relative positions, gaussian matrix, no-mem embedding
            value = (1.0 if 'positional_embedding' in name else 0.2) * noise
        param.copy_(value.to(param.dtype))


def make_tiny_model(sam: str = 'sam1', *, multitask: bool = False, seed: int = 0, sam_image_size: int = 1024,
                    vocab_size: int = 300) -> EvfSamModel:
    """A random tiny :class:`EvfSamModel` (fp32, eval mode)."""
    config = tiny_config(sam, multitask=multitask, sam_image_size=sam_image_size, vocab_size=vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EvfSamModel(config)
    randomize_weights(model, seed)
    return model.eval()


def make_tiny_checkpoint(out_dir: str | pathlib.Path, sam: str = 'sam1', *, multitask: bool = False, seed: int = 0,
                         sam_image_size: int = 1024, weights_format: str = 'safetensors',
                         sentences: Iterable[str] | None = None) -> pathlib.Path:
    """Write a tiny random checkpoint directory and return its path (see the module docstring)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    make_tiny_tokenizer(out_dir, sentences, multitask=multitask)
    from .tokenizer import load_tokenizer

    vocab = len(load_tokenizer(out_dir)) + 8  # like BEiT-3: 64,010 rows for 64,002 tokens
    model = make_tiny_model(sam, multitask=multitask, seed=seed, sam_image_size=sam_image_size, vocab_size=vocab)
    return save_checkpoint(model, out_dir, out_dir, weights_format=weights_format)


# ---- full-size random weights (../shared/fixtures/evf_fullsize) ------------------------------------------
FULLSIZE_CASES = {  # fixture case folder -> key list in ../shared/reference/keys
    'evf_sam_vith': 'keys_sam.txt',
    'evf_sam2_hieral': 'keys_sam2.txt',
    'evf_sam2_hieral_multitask': 'keys_sam2.txt',
}


def fixture_weight(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The fixture's weight rule: seeded by crc32(key); 1-D norm scales ~1, other 1-D ~0, matrices / sqrt(fan_in)."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode('utf-8')))
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    if len(shape) == 1:
        return 1.0 + 0.1 * noise if key.endswith('.weight') else 0.02 * noise
    return noise / math.sqrt(math.prod(shape[1:]))


def read_key_list(path: pathlib.Path) -> Iterator[tuple[str, tuple[int, ...]]]:
    for line in pathlib.Path(path).read_text(encoding='utf-8').splitlines():
        if line.strip() and not line.startswith('#'):
            key, shape = line.split('\t')[:2]
            yield key, tuple(int(d) for d in re.findall(r'\d+', shape))


def make_fullsize_checkpoint(fullsize_dir: str | pathlib.Path, case: str, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Assemble a full-size checkpoint of a fixture case (config, tokenizer, regenerated weights; several GB)."""
    from safetensors.torch import save_file

    fullsize_dir, out = pathlib.Path(fullsize_dir), pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(fullsize_dir / case / 'config.json', out)
    for f in (fullsize_dir / 'tokenizer').iterdir():
        shutil.copy(f, out)
    if (fullsize_dir / case / 'added_tokens.json').exists():
        shutil.copy(fullsize_dir / case / 'added_tokens.json', out)
    keys = fullsize_dir.parent.parent / 'reference' / 'keys' / FULLSIZE_CASES[case]
    save_file({k: fixture_weight(k, s) for k, s in read_key_list(keys)}, str(out / 'model.safetensors'))
    return out
