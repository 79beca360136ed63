"""Spoken commands -> segmentation targets (ROS-free, stdlib only, no model).

:func:`interpret` turns what a robot's speech-to-text hears into a :class:`Command`:

* ``clear``  - "stop", "cancel that please", "never mind", "nothing", "forget it", "that's all", "no", ...;
  also a clear verb with an object ("forget the red cube": removing one target is not supported, so all are
  dropped) and negated commands ("don't pick up the cube"). Command words never become object descriptions.
* ``ignore`` - empty, invisible characters only, fillers or chit-chat only ("um", "uh huh", "thanks"),
  a pronoun without description ("pick it up"), a question ("what is that"), confidence < min_confidence.
* ``add``    - "also the bottle", "and the cup too", "the plate as well", "add the blue ball".
* ``set``    - anything else that names something.

Cleaning: Unicode NFKC, invisible/control characters dropped, lower case, punctuation other than sentence
ends and commas dropped, fillers ("um", "uh", "you know"; "like" before the description) removed anywhere,
immediate repeats ("the the red cube", "pick up pick up") collapsed, leading politeness/address ("can you",
"please", "I want you to", "hey robot") and the command verb removed, trailing closers ("please", "thanks",
"now", "that's all") removed. Self-corrections keep what follows ("the red cube, I mean the blue cube").
Sentences are read in order: a later clear cancels, a later set replaces, a later add extends.

Intent (verb hint for planners): 'pick' (pick up, grab, grasp, take, get, lift), 'find' (find, locate,
look at/for, where is, show me, segment, highlight, is there, do you see), 'go_to' (go/move/drive/navigate
to, approach), 'point' (point at/to/out), 'bring' (bring me, fetch, give/hand/pass me), '' (no verb).
Speech-to-text without apostrophes ("thats enough", "dont") reads as the contraction.

Several targets (conservative by design: when unsure, one expression). An "and", "then", "plus" or ","
separates two targets only when all of these hold:

1. the left side ends like a complete noun phrase: its last word is not a colour/size/other adjective,
   article or relation word ("the black | and white mug" stays one);
2. the left side (since the previous split) holds no relation word ("between", "of", "next to", "on",
   "with", ...): "the cup between the plate and the bowl", "the box left of the ball and the cube" stay
   one. Absolute positions that close themselves ("on the left", "at the back") do not count;
3. the right side starts a new noun phrase: an article/determiner, or an adjective (colour, size) that is
   followed by a noun, optionally after a command verb ("and grab the blue ball"). A bare noun does not
   ("the salt and pepper shaker", "the cube and ball" stay one);
4. the two words around the separator are not a known compound ("salt and pepper", "fish and chips").

An explicit ``delimiter`` (";" by default) in the transcript always wins: split on it, clean each piece,
no "and" splitting; a piece that is a clear command clears everything ("the red cube; stop": safety first).
Safety words ("stop", "halt", "freeze", "pause", ...) clear wherever they are said ("the red cube and stop",
"I said stop"), unless they name a thing ("the stop sign", "the bus stop"); "don't!" clears. A "target" made
only of function words ("can you", "please do", "i want") is ignored: it never reaches the model. A
transcript starting with "[semantic]" (multitask checkpoints) passes untouched.
Homophones are fixed only in unambiguous context (table ``HOMOPHONES`` in :mod:`.command_words`):
"read"/"blew" before an object noun -> "red"/"blue"; "wring", "queue", "bawl" after an article, colour or
size -> "ring", "cube", "ball".
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import command_text as T
from . import command_words as W

__all__ = ['Command', 'interpret', 'ACTIONS', 'INTENTS']

ACTIONS = ('set', 'add', 'clear', 'ignore')
INTENTS = ('', 'pick', 'find', 'go_to', 'point', 'bring')
SEMANTIC_PREFIX = '[semantic]'


@dataclass(frozen=True)
class Command:
    """What a transcript asks for. ``targets`` are cleaned referring expressions (empty for clear/ignore)."""

    action: str
    targets: tuple[str, ...]
    intent: str
    raw: str
    reason: str


def interpret(transcript: str, *, delimiter: str = ';', confidence: float | None = None,
              min_confidence: float = 0.0) -> Command:
    """Interpret one speech-to-text transcript (see the module docstring for the rules)."""
    raw = transcript if isinstance(transcript, str) else ''
    text = visible_text(raw)
    if not text:
        why = 'empty transcript' if not raw.strip() else 'only invisible or control characters'
        return Command('ignore', (), '', raw, why)
    if confidence is not None and not confidence >= min_confidence:   # NaN counts as too low
        return Command('ignore', (), '', raw, f'confidence {confidence:.2f} below min_confidence {min_confidence:.2f}')
    if delimiter and delimiter in text:
        pieces = [_interpret_utterance(p, split=False) for p in text.split(delimiter) if p.strip()]
        return _without_empty_targets(_merge_pieces(pieces, raw))
    return _without_empty_targets(_finish(_interpret_utterance(text, split=True), raw))


def _without_empty_targets(cmd: Command) -> Command:
    """Drop "targets" that name nothing ("can you", "please do", "i want"); none left: ignore."""
    if cmd.action not in ('set', 'add'):
        return cmd
    kept = tuple(t for t in cmd.targets if t.startswith(SEMANTIC_PREFIX)
                 or any(w not in W.FUNCTION_WORDS for w in t.split()))
    if kept == cmd.targets:
        return cmd
    if not kept:
        words = {w for t in cmd.targets for w in t.split()}
        if words & W.NEGATION_WORDS:   # "don't!", "never": the safe reading is stop
            return Command('clear', (), '', cmd.raw, 'clear: a negation without an object')
        return Command('ignore', (), '', cmd.raw, 'names no object (only function words: '
                       + ', '.join(repr(t) for t in cmd.targets) + ')')
    return Command(cmd.action, kept, cmd.intent, cmd.raw, _describe(cmd.action, kept, cmd.intent))


def _safety_word(words: list[str]) -> str | None:
    """The first safety word that does not name a thing ("stop" in "the stop sign" names one), or None."""
    for i, w in enumerate(words):
        if w not in W.SAFETY_WORDS:
            continue
        j = i
        while j < len(words) and words[j] in W.SAFETY_WORDS:
            j += 1
        named = (j < len(words) and words[j] in W.SAFETY_NAMED_NOUNS) or \
            (w == 'stop' and i > 0 and words[i - 1] in W.SAFETY_NAMED_AFTER)
        if not named:
            return w
    return None


def visible_text(text: str) -> str:
    """NFKC text without invisible/control characters, whitespace collapsed."""
    text = unicodedata.normalize('NFKC', text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat == 'Zs':
            out.append(' ')
        elif cat[0] != 'C':
            out.append(ch)
    return ' '.join(''.join(out).split())


# ---- internal representation: (action, targets, intent, reason) ------------------------------------------

def _result(action, targets=(), intent='', reason=''):
    return action, tuple(targets), intent, reason


def _finish(result, raw: str) -> Command:
    action, targets, intent, reason = result
    return Command(action, targets, intent, raw, reason)


def _merge_pieces(pieces, raw: str) -> Command:
    """Delimiter-separated pieces name parallel targets; clear/ignore pieces add none."""
    if any(a == 'clear' for a, *_ in pieces):   # safety first: a clear piece clears everything
        return Command('clear', (), '', raw, 'clear: a piece is a clear command ('
                       + '; '.join(r for a, _, _, r in pieces if a == 'clear') + ')')
    targets = [t for a, ts, _, _ in pieces if a in ('set', 'add') for t in ts]
    intent = next((i for _, _, i, _ in pieces if i), '')
    if targets:
        action = 'add' if pieces[0][0] == 'add' else 'set'
        dropped = [r for a, _, _, r in pieces if a in ('clear', 'ignore')]
        note = f' (dropped: {"; ".join(dropped)})' if dropped else ''
        return Command(action, tuple(targets), intent, raw, _describe(action, targets, intent) + note)
    if any(a == 'clear' for a, *_ in pieces):
        return Command('clear', (), '', raw, 'clear: every piece is a clear command or empty')
    return Command('ignore', (), '', raw, '; '.join(r for *_, r in pieces) or 'nothing named')


def _describe(action: str, targets, intent: str) -> str:
    names = ', '.join(repr(t) for t in targets)
    verb = {'set': 'set', 'add': 'add'}[action]
    return f'{verb} {len(targets)} target{"s" if len(targets) != 1 else ""}: {names}' + \
        (f' (intent {intent})' if intent else '')


def _after_correction(toks: list[str]) -> list[str] | None:
    """Tokens after the last self-correction marker that follows some content, else None."""
    for i in range(len(toks) - 1, 0, -1):
        n = T.match(toks, i, W.CORRECTIONS)
        if n and i + n < len(toks) and any(t not in (',', '.') for t in toks[:i]):
            return toks[i + n:]
        if (toks[i] == 'no' and i + 1 < len(toks) and toks[i + 1] in W.DETERMINERS | {','}
                and toks[i - 1] not in W.RELATIONS | W.DETERMINERS | W.ADJECTIVES):
            return toks[i + 1:]
    return None


# ---- several targets --------------------------------------------------------------------------------------

_POSITION = re.compile(r"\b(?:on|at|in|to) (?:the )?(?:far |very )?(?:left|right|front|back|middle|center|centre|"
                       r"top|bottom)(?: hand)?(?: side| end| corner| edge)?"
                       r"(?: of the (?:table|image|picture|screen|scene|frame|view))?$")


def _can_split(left: list[str], right: list[str]) -> bool:
    """True if 'left SEPARATOR right' names two objects (rules 1-4 of the module docstring)."""
    left = [t for t in left if t != ',']
    if not left or not right:
        return False
    core = _POSITION.sub('', ' '.join(left)).split()
    if core == left and left[-1] in W.ADJECTIVES | W.DETERMINERS | W.RELATIONS:
        return False
    if not core or any(t in W.RELATIONS for t in core[1:]):
        return False
    r = T.strip_leading(list(right), T.Lead())
    if len(r) < 2:
        return False
    noun = r[1] if r[0] in W.DETERMINERS else r[0]
    if (left[-1], noun) in W.COMPOUNDS:
        return False
    if r[0] in W.DETERMINERS:
        return True
    return r[0] in W.ADJECTIVES and any(t not in W.ADJECTIVES | W.DETERMINERS for t in r[1:])


def _split_targets(toks: list[str]) -> list[list[str]]:
    pieces, start, i = [], 0, 0
    while i < len(toks):
        n = T.match(toks, i, W.SEPARATORS) if i > start else 0
        if n and _can_split(toks[start:i], toks[i + n:]):
            pieces.append(toks[start:i])
            start = i = i + n
            continue
        i += 1
    pieces.append(toks[start:])
    return pieces


def _clean_target(toks: list[str], lead: T.Lead) -> str:
    piece_lead = T.Lead()
    toks = T.strip_leading(toks, piece_lead)
    toks, _ = T.strip_trailing(toks)
    if not lead.intent:
        lead.intent = piece_lead.intent
    if not toks or T.is_whole(toks, W.PRONOUNS) or T.is_whole(toks, W.CLEAR_PHRASES):
        return ''
    return ' '.join(t for t in toks if t not in (',', '.'))


# ---- clauses and sentences --------------------------------------------------------------------------------

def _interpret_clause(toks: list[str], split: bool) -> list[tuple]:
    """One clause -> one result, or two when a clear phrase leads ("never mind, find the ball")."""
    toks = T.strip_politeness(toks)
    toks, add_tail = T.strip_trailing(toks)
    words = [t for t in toks if t not in (',', '.')]
    if not words:
        return [_result('ignore', reason='no words besides fillers and politeness')]
    if T.is_whole(words, W.CLEAR_PHRASES):
        return [_result('clear', reason=f'clear command {" ".join(words)!r}')]
    n = T.match(toks, 0, W.CLEAR_PHRASES)
    n_verb = T.match(toks, 0, W.CLEAR_VERBS)
    if n_verb and not (n and (toks[n] == ',' or _starts_command(toks[n:]))):
        return [_result('clear', reason=f'{" ".join(words)!r}: dropping one target is not supported, '
                                        'clearing all')]
    if n:
        rest = toks[n:]
        return [_result('clear', reason=f'clear command {" ".join(toks[:n])!r}')] + \
            _interpret_clause(rest, split)
    n = T.match(toks, 0, W.CORRECTIONS)
    if n and n < len(toks):
        toks = toks[n:]
    lead = T.Lead()
    toks = T.strip_leading(toks, lead)
    corrected = _after_correction(toks)
    if corrected is not None:
        lead2 = T.Lead()
        toks = T.strip_leading(corrected, lead2)
        lead.intent, lead.negated = lead2.intent or lead.intent, lead2.negated
    toks, add_tail2 = T.strip_trailing(toks)
    words = [t for t in toks if t not in (',', '.')]
    said = _safety_word(toks)   # on the tokens: a comma between "door" and "stop" breaks a name
    if said:
        return [_result('clear', reason=f'clear: {said!r} was said (safety words always clear)')]
    if lead.negated:
        return [_result('clear', reason='negated command: clearing targets rather than acting')]
    if not words:
        why = f'{lead.verb!r} without an object' if lead.verb else 'no object named'
        return [_result('ignore', intent=lead.intent, reason=why)]
    if T.is_whole(words, W.CLEAR_PHRASES):
        return [_result('clear', reason=f'clear command {" ".join(words)!r}')]
    if words[0] in W.QUESTION_WORDS:
        return [_result('ignore', reason='a question, not a command')]
    if T.is_whole(words, W.CHITCHAT):
        return [_result('ignore', reason=f'no command in {" ".join(words)!r}')]
    if T.is_whole(words, W.PRONOUNS):
        return [_result('ignore', intent=lead.intent, reason=f'{" ".join(words)!r} names no object')]
    pieces = _split_targets(toks) if split else [toks]
    targets = [t for t in (_clean_target(p, lead) for p in pieces) if t]
    if not targets:
        return [_result('ignore', intent=lead.intent, reason='no object named')]
    action = 'add' if lead.add or add_tail or add_tail2 else 'set'
    return [_result(action, targets, lead.intent, _describe(action, targets, lead.intent))]


def _starts_command(toks: list[str]) -> bool:
    lead = T.Lead()
    rest = T.strip_leading(list(toks), lead)
    return bool(lead.intent or lead.add) or len(rest) < len(toks) - 1


def _fold(results: list[tuple]) -> tuple:
    """Sentences in order: clear cancels, set replaces, add extends (after a clear it is a set)."""
    state = None
    for r in results:
        action = r[0]
        if action == 'ignore':
            continue
        if action == 'add' and state is not None:
            if state[0] == 'clear':
                state = _result('set', r[1], r[2], _describe('set', r[1], r[2]))
            else:
                targets = state[1] + tuple(t for t in r[1] if t not in state[1])
                intent = state[2] or r[2]
                state = _result(state[0], targets, intent, _describe(state[0], targets, intent))
        else:
            state = r
    if state is None:
        return next((r for r in results if r[0] == 'ignore'), _result('ignore', reason='nothing said'))
    return state


def _interpret_utterance(text: str, split: bool) -> tuple:
    text = text.strip()
    if text.lower().startswith(SEMANTIC_PREFIX):
        return _result('set', (text,), '', 'semantic prompt passed through untouched')
    toks = T.collapse_repeats(T.fix_homophones(T.drop_fillers(T.tokens(text))))
    if not any(t not in (',', '.') for t in toks):
        return _result('ignore', reason='fillers or punctuation only' if text else 'empty')
    sentences, cur = [], []
    for t in toks + ['.']:
        if t == '.':
            if cur:
                sentences.append(cur)
            cur = []
        else:
            cur.append(t)
    results = []
    for k, sentence in enumerate(sentences):
        words = T.strip_politeness(sentence)
        if k > 0 and T.is_whole(words, W.TRAILING_CLOSERS):
            continue   # "Pick up the red cube. That's all." - a closer, not a clear
        results += _interpret_clause(sentence, split)
    return _fold(results)
