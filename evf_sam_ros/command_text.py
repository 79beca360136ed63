"""Token-level cleaning for the spoken-command interpreter (:mod:`evf_sam_ros.commands`): tokenising,
fillers, repeats, homophones, and stripping politeness, command verbs and closers off a clause."""
from __future__ import annotations

import re

from . import command_words as W

TOKEN = re.compile(r"[a-z0-9]+(?:['][a-z]+)*(?:-[a-z0-9]+)*|[,.!?]|&")


def tokens(text: str) -> list[str]:
    text = text.lower().replace('\u2019', "'").replace('`', "'")
    toks = ['.' if t in '.!?' else ('and' if t == '&' else t) for t in TOKEN.findall(text)]
    return [W.APOSTROPHE_LESS.get(t, t) for t in toks]


def match(toks: list[str], at: int, table) -> int:
    """Length of the longest phrase of ``table`` matching toks[at:], 0 if none."""
    for ph in table:
        if tuple(toks[at:at + len(ph)]) == ph:
            return len(ph)
    return 0


def is_whole(toks: list[str], table) -> bool:
    return bool(toks) and match(toks, 0, table) == len(toks)


def drop_fillers(toks: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(toks):
        n = match(toks, i, W.FILLER_PHRASES)
        if n:
            i += n
        elif toks[i] in W.FILLERS:
            i += 1
        else:
            out.append(toks[i])
            i += 1
    return out


def collapse_repeats(toks: list[str]) -> list[str]:
    """'the the red cube' -> 'the red cube'; 'pick up pick up' -> 'pick up' (n-grams up to 3)."""
    out: list[str] = []
    for t in toks:
        out.append(t)
        for n in (1, 2, 3):
            if len(out) >= 2 * n and out[-n:] == out[-2 * n:-n] and out[-1] not in (',', '.'):
                del out[-n:]
                break
    return out


def fix_homophones(toks: list[str]) -> list[str]:
    out = list(toks)
    for i, t in enumerate(toks):
        if t not in W.HOMOPHONES:
            continue
        word, context = W.HOMOPHONES[t]
        nxt = toks[i + 1:i + 3]
        if context == 'before_noun':
            ok = bool(nxt) and (nxt[0] in W.OBJECT_NOUNS or (nxt[0] in W.ADJECTIVES and nxt[1:2] and
                                                               nxt[1] in W.OBJECT_NOUNS))
        else:
            ok = i > 0 and (out[i - 1] in W.DETERMINERS or out[i - 1] in W.ADJECTIVES)
        if ok:
            out[i] = word
    return out


def strip_trailing(toks: list[str]) -> tuple[list[str], bool]:
    """Remove trailing closers/punctuation; True if an add marker ("too", "as well") was among them."""
    added = False
    changed = True
    while toks and changed:
        changed = False
        if toks[-1] in (',', '.', 'and', 'the', 'a', 'an'):   # also what a cut-off transcript leaves
            toks, changed = toks[:-1], True
            continue
        for table, is_add in ((W.TRAILING_CLOSERS, False), (W.ADD_TRAILING, True)):
            for ph in table:
                if len(toks) > len(ph) and tuple(toks[-len(ph):]) == ph:
                    toks, changed, added = toks[:-len(ph)], True, added or is_add
                    break
            if changed:
                break
    return toks, added


class Lead:
    """What was stripped off the front of a clause."""

    def __init__(self):
        self.intent = ''
        self.verb = ''
        self.add = False
        self.negated = False


def strip_leading(toks: list[str], lead: Lead) -> list[str]:
    """Remove politeness, add markers, negations and the command verb from the front (repeatedly)."""
    while toks:
        if toks[0] in (',', '.'):
            toks = toks[1:]
            continue
        n = match(toks, 0, W.LEADING_POLITENESS)
        if n and n < len(toks):
            toks = toks[n:]
            continue
        n = match(toks, 0, W.ADD_LEADING)
        if n and n < len(toks):
            lead.add, toks = True, toks[n:]
            continue
        n = match(toks, 0, W.NEGATIONS)
        if n and n < len(toks) and toks[n] not in (',', '.'):
            lead.negated, toks = True, toks[n:]
            continue
        n, intent = max((match(toks, 0, table), intent) for intent, table in W.VERBS.items())  # longest verb
        if not n or (n == len(toks) and lead.intent):
            return toks
        if not lead.intent:
            lead.intent, lead.verb = intent, ' '.join(toks[:n])
        toks = toks[n:]
    return toks


def strip_politeness(toks: list[str]) -> list[str]:
    while toks:
        n = match(toks, 0, W.LEADING_POLITENESS)
        if toks[0] in (',', '.') or (n and n < len(toks)):
            toks = toks[max(n, 1):]
        else:
            break
    return toks
