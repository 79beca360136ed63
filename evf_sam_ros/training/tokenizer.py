"""A small sentencepiece vocabulary for the synthetic grammar, in the XLM-R id layout EVF-SAM uses.

The released checkpoints use BEiT-3's 64k-piece ``sentencepiece.bpe.model`` through
``XLMRobertaTokenizer`` (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, spm piece k -> k+1).
A model trained here from scratch only needs the grammar's words, so it gets its own tiny spm
model with the same layout (and the same file names), which keeps the embedding table small.
"""
from __future__ import annotations

import io
import pathlib
from typing import Iterable

__all__ = ['train_sentencepiece', 'build_tokenizer']

SPM_FILE = 'sentencepiece.bpe.model'


def train_sentencepiece(lines: Iterable[str], out_dir: str | pathlib.Path, vocab_size: int = 160) -> pathlib.Path:
    """Train a BPE sentencepiece model on ``lines``; writes ``out_dir/sentencepiece.bpe.model``."""
    import sentencepiece as spm
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = list(lines)
    # The grammar has only a few dozen words and unigram EM on so small a corpus keeps odd fragments;
    # making every corpus word a user-defined piece gives one piece per word (unknown words still
    # fall back to characters and sub-words).
    words = sorted({'\u2581' + w for line in lines for w in line.split() if w.isalpha()})
    # Spelled-out words keep characters and sub-words in the vocabulary too (for words outside the grammar).
    lines += [' '.join(w[1:]) for w in words] + [w[1:] + 's' for w in words] + ['x' + w[1:] for w in words]
    model = io.BytesIO()
    # BEiT-3's spm has <unk>=0, <s>=1, </s>=2 and no pad piece; mirror that so the XLM-R mapping holds.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=max(vocab_size, len(words) + 100),
                                   user_defined_symbols=words,
                                   model_type='unigram', character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1, hard_vocab_limit=False, normalization_rule_name='identity', num_threads=1, minloglevel=2)
    path = out_dir / SPM_FILE
    path.write_bytes(model.getvalue())
    return path


def build_tokenizer(out_dir: str | pathlib.Path, lines: Iterable[str] | None = None, vocab_size: int = 160):
    """Train the grammar vocabulary (or the given lines) and write the XLM-R style tokenizer files in out_dir."""
    from evf_sam_ros.model.tokenizer import load_tokenizer, make_tokenizer_dir

    if lines is None:
        from evf_sam_ros.synthetic.grammar import vocabulary_corpus
        lines = vocabulary_corpus()
    out_dir = pathlib.Path(out_dir)
    make_tokenizer_dir(out_dir, train_sentencepiece(lines, out_dir, vocab_size))
    return load_tokenizer(out_dir)
