"""Prompt commands: the text of the ``prompt`` topic (or a service request) -> the active prompt set.

Only the syntax is checked here (empty pieces, invisible characters, counts, characters). Whether a
prompt fits the text encoder is decided by the loaded model's own tokenizer
(``SegmentationPipeline.check_prompts``), never by a copy of its limits.
"""
from __future__ import annotations

import unicodedata

from evf_sam_ros.errors import InvalidPromptError

__all__ = ['SEMANTIC_PREFIX', 'clean_prompt', 'parse_prompt_command', 'validate_prompts']

SEMANTIC_PREFIX = '[semantic]'


def clean_prompt(text: str) -> str:
    """Drop invisible format/control characters (zero-width spaces, BOMs, direction marks) and
    surrounding whitespace; inner whitespace runs become one space."""
    kept = ''.join(' ' if ch.isspace() else ch for ch in text
                   if unicodedata.category(ch) not in ('Cf', 'Cc') or ch.isspace())
    return ' '.join(kept.split())


def validate_prompts(prompts, *, max_prompts: int, max_chars: int) -> list[str]:
    """Clean and check a list of prompts; raises InvalidPromptError saying what to do."""
    out = []
    for i, raw in enumerate(prompts, start=1):
        if not isinstance(raw, str):
            raise InvalidPromptError(f'prompt {i} is a {type(raw).__name__}, not a string')
        p = clean_prompt(raw)
        if not p:
            raise InvalidPromptError(f'prompt {i} is empty or only whitespace/invisible characters; '
                                     'remove it')
        body = p[len(SEMANTIC_PREFIX):].strip() if p.lower().startswith(SEMANTIC_PREFIX) else p
        if not body:
            raise InvalidPromptError(f"prompt {i} is only the '{SEMANTIC_PREFIX}' prefix; add the class "
                                     "after it, e.g. '[semantic] table'")
        if len(p) > max_chars:
            raise InvalidPromptError(f'prompt {i} has {len(p)} characters, more than max_prompt_chars='
                                     f'{max_chars}; shorten it')
        out.append(p)
    if len(out) > max_prompts:
        raise InvalidPromptError(f'{len(out)} prompts, more than max_prompts={max_prompts}; send fewer '
                                 'targets or raise max_prompts (at most 255: labels are mono8)')
    return out


def parse_prompt_command(text: str, *, delimiter: str = ';', max_prompts: int = 8,
                         max_chars: int = 1000) -> list[str]:
    """Parse a prompt string into the new active prompt set.

    * ``""`` clears the set (returns ``[]``);
    * targets are separated by ``delimiter``; empty pieces (``"a;;b"``, a trailing ``;``) are ignored;
    * a ``[semantic] `` prefix is kept (multitask checkpoints interpret it);
    * a string of only whitespace/delimiters/invisible characters, a too long prompt or too many
      prompts raise ``InvalidPromptError`` (the caller keeps the previous set).
    """
    if text is None or text == '':
        return []
    if not delimiter:
        raise InvalidPromptError('prompt_delimiter is empty')
    pieces = [p for p in (clean_prompt(p) for p in text.split(delimiter)) if p]
    if not pieces:
        raise InvalidPromptError(f'the prompt {text!r} contains only whitespace, delimiters or invisible '
                                 'characters; publish an empty string to clear the prompts')
    return validate_prompts(pieces, max_prompts=max_prompts, max_chars=max_chars)
