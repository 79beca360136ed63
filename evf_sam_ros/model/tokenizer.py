"""The XLM-R style tokenizer of EVF-SAM (BEiT-3's sentencepiece model) and a tiny one for tests.

Id layout (fairseq convention, spec 6.3): ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, sentencepiece piece
k -> k+1 (its own unk -> 3), ``<mask>`` = pieces + 1, added tokens after it (``[semantic]`` = 64002 in the
multitask checkpoints). Encoding is ``[0] + pieces + [2]``, no lower-casing, no truncation.
"""
from __future__ import annotations

import io
import json
import pathlib
import shutil
from typing import Iterable, Sequence

import torch

from ..errors import InvalidPromptError, ModelLoadError

__all__ = [
    'SEMANTIC_TOKEN',
    'TOKENIZER_FILES',
    'load_tokenizer',
    'tokenize_prompts',
    'make_tiny_tokenizer',
    'make_tokenizer_dir',
    'save_tokenizer',
]

SEMANTIC_TOKEN = '[semantic]'
SPM_FILE = 'sentencepiece.bpe.model'
TOKENIZER_FILES = (SPM_FILE, 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
                   'added_tokens.json')
PAD_ID = 1


def load_tokenizer(directory: str | pathlib.Path):
    """Load the checkpoint's tokenizer (``sentencepiece.bpe.model`` or ``tokenizer.json``), offline."""
    directory = pathlib.Path(directory)
    if not (directory / SPM_FILE).is_file() and not (directory / 'tokenizer.json').is_file():
        raise ModelLoadError(f'{directory}: tokenizer missing: neither {SPM_FILE} nor tokenizer.json is there. '
                             'Copy the tokenizer files of the checkpoint (sentencepiece.bpe.model, '
                             'tokenizer_config.json, special_tokens_map.json and, for multitask checkpoints, '
                             'added_tokens.json) into the directory.')
    from transformers import XLMRobertaTokenizer

    spm = directory / SPM_FILE
    if spm.is_file():   # check it ourselves: transformers' fallbacks blame missing packages (tiktoken, ...)
        import sentencepiece
        try:
            sentencepiece.SentencePieceProcessor(model_file=str(spm))
        except Exception as exc:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError/...
            raise ModelLoadError(f'{spm}: not a valid sentencepiece model ({exc}); the file is corrupt or truncated. '
                                 "Restore the checkpoint's own sentencepiece.bpe.model") from exc
    try:
        tokenizer = XLMRobertaTokenizer.from_pretrained(str(directory), local_files_only=True, padding_side='right')
    except Exception as exc:  # sentencepiece/protobuf missing, corrupt spm file, bad JSON ...
        raise ModelLoadError(f'{directory}: the tokenizer files could not be loaded ({type(exc).__name__}: {exc}). '
                             'Restore them from the checkpoint; converting sentencepiece.bpe.model needs the '
                             'sentencepiece and protobuf packages.') from exc
    if len(tokenizer) <= 4 or tokenizer.pad_token_id != PAD_ID or tokenizer.bos_token_id != 0 \
            or tokenizer.eos_token_id != 2:
        raise ModelLoadError(f'{directory}: the tokenizer does not have the XLM-R id layout EVF-SAM needs '
                             f'(<s>=0, <pad>=1, </s>=2; got {tokenizer.bos_token_id}, {tokenizer.pad_token_id}, '
                             f'{tokenizer.eos_token_id}, {len(tokenizer)} tokens). Use the checkpoint\'s own '
                             'sentencepiece.bpe.model (BEiT-3\'s beit3.spm), not another model\'s.')
    tokenizer.padding_side = 'right'
    return tokenizer


def tokenize_prompts(tokenizer, prompts: Sequence[str], max_tokens: int,
                     device: torch.device | str = 'cpu') -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids [B, T] long, attention_mask [B, T] long)``, pad id 1.

    Raises :class:`InvalidPromptError` for non-strings, empty prompts and prompts over ``max_tokens``.
    """
    if isinstance(prompts, str):
        raise InvalidPromptError('expected a sequence of prompts, got a single string; wrap it in a list')
    prompts = list(prompts)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InvalidPromptError(f'prompt {i} is a {type(prompt).__name__}, not a string')
        if not prompt.strip():
            raise InvalidPromptError(f'prompt {i} is empty; give a referring expression such as "the red cup"')
    if not prompts:
        empty = torch.zeros(0, 0, dtype=torch.long, device=device)
        return empty, empty.clone()
    encoded = tokenizer(prompts, padding=True, return_tensors='pt')
    input_ids = encoded['input_ids']
    attention_mask = encoded['attention_mask']
    lengths = attention_mask.sum(dim=1)
    too_long = (lengths > max_tokens).nonzero().flatten().tolist()
    if too_long:
        i = too_long[0]
        raise InvalidPromptError(f'prompt {i} is {int(lengths[i])} tokens long, but BEiT-3 takes at most {max_tokens} '
                                 f'text tokens (including <s> and </s>); shorten it (it starts with '
                                 f'{prompts[i][:40]!r})')
    return input_ids.to(device), attention_mask.to(device)


# ---- tiny tokenizer for tests and synthetic checkpoints ------------------------------------------------
DEFAULT_SENTENCES = (
    'the red cup on the table', 'a blue box near the left edge', 'the green ball in the middle',
    'person standing on the right', 'the yellow sign on top of it', 'a dog running on the grass',
    'the small white car behind the tree', 'two black chairs next to the window', 'the big orange square',
    'a purple circle at the bottom', 'the man in a red shirt', 'the woman holding an umbrella',
    'zebra top left', 'the broccoli closest to the ketchup bottle', 'bus going to south common',
    'sky', 'sea', 'hair', 'road', 'building', 'wall', 'floor', 'bottle', 'cat', 'robot arm', 'gripper',
    'the object on the far right', 'pick up the mug', 'the triangle below the star', 'brown wooden door',
    'a pink flower in a vase', 'the gray stone near the water', 'the cube', 'the sphere', 'the cylinder',
)


def make_tiny_tokenizer(out_dir: str | pathlib.Path, sentences: Iterable[str] | None = None, *,
                        multitask: bool = False, vocab_size: int = 256) -> pathlib.Path:
    """Train a small sentencepiece unigram model (XLM-R id layout) and write the tokenizer files.

    Deterministic for the same sentences. Writes ``sentencepiece.bpe.model``, ``tokenizer_config.json``,
    ``special_tokens_map.json`` and, with ``multitask``, ``added_tokens.json`` (``[semantic]`` right after
    ``<mask>``, as in the multitask checkpoints). Returns ``out_dir``.
    """
    import sentencepiece as spm

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = [s.strip() for s in (sentences if sentences is not None else DEFAULT_SENTENCES) if s.strip()]
    if not corpus:
        raise ValueError('make_tiny_tokenizer needs at least one non-empty sentence')
    buffer = io.BytesIO()
    # unk=0, bos=1, eos=2, no pad: the layout of XLM-R's / BEiT-3's spm, which the fairseq offset expects
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus * 20), model_writer=buffer, vocab_size=vocab_size,
                                   model_type='unigram', character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    return make_tokenizer_dir(out_dir, buffer.getvalue(), multitask=multitask)


def make_tokenizer_dir(out_dir: str | pathlib.Path, spm_model: str | pathlib.Path | bytes, *,
                       multitask: bool = False) -> pathlib.Path:
    """Write XLM-R style tokenizer files around an existing sentencepiece model (file path or bytes).

    The model must use sentencepiece's default ids (unk=0, bos=1, eos=2, no pad), as BEiT-3's ``beit3.spm``.
    """
    import sentencepiece as spm

    data = spm_model if isinstance(spm_model, bytes) else pathlib.Path(spm_model).read_bytes()
    proc = spm.SentencePieceProcessor(model_proto=data)
    if (proc.unk_id(), proc.bos_id(), proc.eos_id()) != (0, 1, 2):
        ids = (proc.unk_id(), proc.bos_id(), proc.eos_id())
        raise ValueError(f'the sentencepiece model has unk/bos/eos ids {ids}; '
                         'the XLM-R id layout needs (0, 1, 2): train with unk_id=0, bos_id=1, eos_id=2, pad_id=-1')
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPM_FILE).write_bytes(data)
    (out_dir / 'added_tokens.json').unlink(missing_ok=True)
    _write_tokenizer_json_files(out_dir, proc.get_piece_size() if multitask else None)
    return out_dir


def _write_tokenizer_json_files(out_dir: pathlib.Path, semantic_after_pieces: int | None) -> None:
    mask = {'content': '<mask>', 'lstrip': True, 'normalized': True, 'rstrip': False, 'single_word': False}
    special = {'bos_token': '<s>', 'cls_token': '<s>', 'eos_token': '</s>', 'mask_token': mask,
               'pad_token': '<pad>', 'sep_token': '</s>', 'unk_token': '<unk>'}
    config = {**special, 'mask_token': {'__type': 'AddedToken', **mask}, 'clean_up_tokenization_spaces': True,
              'model_max_length': 1000000000000000019884624838656, 'padding_side': 'right', 'sp_model_kwargs': {},
              'tokenizer_class': 'XLMRobertaTokenizer', 'use_fast': False}
    (out_dir / 'tokenizer_config.json').write_text(json.dumps(config, indent=2) + '\n')
    (out_dir / 'special_tokens_map.json').write_text(json.dumps(special, indent=2) + '\n')
    if semantic_after_pieces is not None:
        # ids: pieces k -> k+1, <mask> = pieces + 1, first added token = pieces + 2
        (out_dir / 'added_tokens.json').write_text(json.dumps({SEMANTIC_TOKEN: semantic_after_pieces + 2}) + '\n')


def save_tokenizer(tokenizer_or_dir, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Copy a tokenizer directory's files, or save a loaded tokenizer, into ``out_dir``."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer_or_dir, (str, pathlib.Path)):
        src = pathlib.Path(tokenizer_or_dir)
        copied = [name for name in TOKENIZER_FILES if (src / name).is_file()]
        if SPM_FILE not in copied and 'tokenizer.json' not in copied:
            raise ModelLoadError(f'{src}: tokenizer missing: neither {SPM_FILE} nor tokenizer.json is there')
        for name in copied:
            if src.resolve() != out_dir.resolve():
                shutil.copyfile(src / name, out_dir / name)
        return out_dir
    tokenizer = tokenizer_or_dir
    vocab_file = getattr(tokenizer, 'vocab_file', None)
    if vocab_file and pathlib.Path(vocab_file).is_file():
        # keep the sentencepiece model too: older transformers (and the official code) read it
        shutil.copyfile(vocab_file, out_dir / SPM_FILE)
        added = {t: i for t, i in tokenizer.get_added_vocab().items() if t == SEMANTIC_TOKEN}
        if added:
            (out_dir / 'added_tokens.json').write_text(json.dumps(added) + '\n')
        _write_tokenizer_json_files(out_dir, None)
    else:
        tokenizer.save_pretrained(str(out_dir))
    return out_dir
