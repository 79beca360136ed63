"""Referring expressions for synthetic scenes, built from a small grammar with ground truth.

Every expression names at most one object (``target`` is its index) or none (``target is None``,
kind ``no_match``: the ground-truth mask is empty). Kinds, in rising difficulty:

* ``colour_shape``  "the red cube"                      (unique colour+shape)
* ``shape``         "the ball"                          (unique shape)
* ``colour``        "the green object"                  (unique colour)
* ``size``          "the big blue cylinder"             (size word needed to disambiguate)
* ``position``      "the ball on the left"              (two candidates, absolute position)
* ``ordinal``       "the leftmost cube", "the closest object"
* ``relation``      "the cube next to the red ball", "the ring left of the green cylinder"
* ``no_match``      "the purple pyramid"                (nothing in the scene fits)

Spoken-style prefixes ("find the ...", "show me the ...") are added at random. Text is lower case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .scene import COLOURS, SHAPES, Scene, SceneObject

__all__ = ['Expression', 'KINDS', 'SHAPE_WORDS', 'generate_expressions', 'sample_expression', 'vocabulary_corpus',
           'describe']

KINDS = ('colour_shape', 'shape', 'colour', 'size', 'position', 'ordinal', 'relation', 'no_match')

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    'cube': ('cube', 'box', 'block'),
    'cylinder': ('cylinder', 'can'),
    'ball': ('ball', 'sphere'),
    'ring': ('ring', 'donut'),
    'pyramid': ('pyramid',),
}
GENERIC = ('object', 'one', 'thing')
SIZE_WORDS = {'small': ('small', 'little'), 'big': ('big', 'large')}
PREFIXES = ('', '', '', 'find ', 'segment ', 'show me ', 'where is ', 'pick up ', 'look at ', 'grab ',
            'point to ', 'please find ', 'can you find ', 'highlight ')
# Relations between a target and an anchor; the predicate says whether obj stands in it to anchor.
REL_WORDS = {
    'next_to': ('next to', 'near', 'beside', 'close to'),
    'left_of': ('left of', 'to the left of'),
    'right_of': ('right of', 'to the right of'),
    'in_front_of': ('in front of',),
    'behind': ('behind',),
}
# every absolute-position phrase the expressions use (also the speech grammar's)
POSITION_PHRASES = ('on the left', 'on the left side', 'at the left', 'on the right', 'on the right side',
                    'at the right', 'in the front', 'at the front', 'at the back', 'in the back')


@dataclass(frozen=True)
class Expression:
    text: str
    kind: str
    target: int | None


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[rng.integers(len(options))])


def describe(rng: np.random.Generator, colour: str | None, shape: str | None, size: str | None = None) -> str:
    """Noun phrase without article, e.g. 'big red cube', 'green object'."""
    words = []
    if size:
        words.append(_pick(rng, SIZE_WORDS[size]))
    if colour:
        words.append(colour)
    words.append(_pick(rng, SHAPE_WORDS[shape]) if shape else _pick(rng, GENERIC if colour else ('object',)))
    return ' '.join(words)


def _matches(objs: Sequence[SceneObject], colour=None, shape=None, size=None) -> list[SceneObject]:
    return [o for o in objs if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
            and (size is None or o.size == size)]


def _u(o: SceneObject) -> float:
    return o.pixel[0]


def _z(o: SceneObject) -> float:
    return float(o.center_cam[2])


def _finish(rng, phrase: str) -> str:
    return (_pick(rng, PREFIXES) + 'the ' + phrase).strip()


# ---- one generator per kind: return Expression or None when the scene offers none -------------

def _colour_shape(rng, scene: Scene):
    cands = [o for o in scene.objects if len(_matches(scene.objects, o.colour, o.shape)) == 1]
    if not cands:
        return None
    o = cands[rng.integers(len(cands))]
    return Expression(_finish(rng, describe(rng, o.colour, o.shape)), 'colour_shape', o.index)


def _shape(rng, scene):
    cands = [o for o in scene.objects if len(_matches(scene.objects, shape=o.shape)) == 1]
    if not cands:
        return None
    o = cands[rng.integers(len(cands))]
    return Expression(_finish(rng, describe(rng, None, o.shape)), 'shape', o.index)


def _colour(rng, scene):
    cands = [o for o in scene.objects if len(_matches(scene.objects, colour=o.colour)) == 1]
    if not cands:
        return None
    o = cands[rng.integers(len(cands))]
    return Expression(_finish(rng, describe(rng, o.colour, None)), 'colour', o.index)


def _size(rng, scene):
    # Needs a group (same shape, maybe same colour) with both sizes, and the target's size unique in it.
    opts = []
    for o in scene.objects:
        for colour in (o.colour, None):
            group = _matches(scene.objects, colour, o.shape)
            if len(group) >= 2 and len(_matches(group, size=o.size)) == 1:
                opts.append((o, colour))
    if not opts:
        return None
    o, colour = opts[rng.integers(len(opts))]
    return Expression(_finish(rng, describe(rng, colour, o.shape, o.size)), 'size', o.index)


def _groups(scene, min_size: int):
    """(colour, shape, members) descriptor groups with at least min_size members (shape or colour+shape)."""
    out = []
    for shape in SHAPES:
        g = _matches(scene.objects, shape=shape)
        if len(g) >= min_size:
            out.append((None, shape, g))
        for colour in COLOURS:
            g2 = _matches(g, colour=colour)
            if len(g2) >= min_size and len(g2) < len(g):
                out.append((colour, shape, g2))
    return out


def _position(rng, scene):
    # Exactly two candidates that are clearly apart left/right (or front/back).
    W = scene.intrinsics.width
    opts = []
    for colour, shape, g in _groups(scene, 2):
        if len(g) != 2:
            continue
        a, b = sorted(g, key=_u)
        if _u(b) - _u(a) > 0.12 * W:
            opts += [(colour, shape, a, _pick(rng, ('on the left', 'on the left side', 'at the left'))),
                     (colour, shape, b, _pick(rng, ('on the right', 'on the right side', 'at the right')))]
        n, f = sorted(g, key=_z)
        if _z(f) - _z(n) > 0.08:
            opts += [(colour, shape, n, _pick(rng, ('in the front', 'at the front'))),
                     (colour, shape, f, _pick(rng, ('at the back', 'in the back')))]
    if not opts:
        return None
    colour, shape, o, where = opts[rng.integers(len(opts))]
    return Expression(_finish(rng, f'{describe(rng, colour, shape)} {where}'), 'position', o.index)


def _ordinal(rng, scene):
    W = scene.intrinsics.width
    opts = []
    groups = _groups(scene, 2) + [(None, None, list(scene.objects))]
    for colour, shape, g in groups:
        by_u = sorted(g, key=_u)
        if _u(by_u[1]) - _u(by_u[0]) > 0.06 * W:
            opts.append((colour, shape, by_u[0], ('leftmost',)))
        if _u(by_u[-1]) - _u(by_u[-2]) > 0.06 * W:
            opts.append((colour, shape, by_u[-1], ('rightmost',)))
        by_z = sorted(g, key=_z)
        if _z(by_z[1]) - _z(by_z[0]) > 0.05:
            opts.append((colour, shape, by_z[0], ('closest', 'nearest')))
        if _z(by_z[-1]) - _z(by_z[-2]) > 0.05:
            opts.append((colour, shape, by_z[-1], ('farthest', 'furthest')))
    if not opts:
        return None
    colour, shape, o, words = opts[rng.integers(len(opts))]
    return Expression(_finish(rng, f'{_pick(rng, words)} {describe(rng, colour, shape)}'), 'ordinal', o.index)


def _relation_holds(rel: str, o: SceneObject, anchor: SceneObject, W: int) -> bool:
    if rel == 'left_of':
        return _u(o) < _u(anchor) - 0.05 * W
    if rel == 'right_of':
        return _u(o) > _u(anchor) + 0.05 * W
    if rel == 'in_front_of':
        return _z(o) < _z(anchor) - 0.04
    if rel == 'behind':
        return _z(o) > _z(anchor) + 0.04
    raise ValueError(rel)


def _relation(rng, scene):
    W = scene.intrinsics.width
    objs = scene.objects
    opts = []
    anchors = [a for a in objs if len(_matches(objs, a.colour, a.shape)) == 1]
    for anchor in anchors:
        for colour, shape, g in _groups(scene, 1):
            cands = [o for o in g if o.index != anchor.index]
            if not cands:
                continue
            # next to: the candidate clearly closest to the anchor (on the table plane).
            dist = sorted(cands, key=lambda o: np.linalg.norm(o.base_world[:2] - anchor.base_world[:2]))
            d0 = np.linalg.norm(dist[0].base_world[:2] - anchor.base_world[:2])
            if d0 < 0.16 and (len(dist) == 1 or
                              np.linalg.norm(dist[1].base_world[:2] - anchor.base_world[:2]) > 1.5 * d0):
                opts.append((colour, shape, dist[0], 'next_to', anchor))
            for rel in ('left_of', 'right_of', 'in_front_of', 'behind'):
                holding = [o for o in cands if _relation_holds(rel, o, anchor, W)]
                if len(holding) == 1:
                    opts.append((colour, shape, holding[0], rel, anchor))
    # Prefer relations that actually disambiguate (more than one candidate with the same description).
    strong = [x for x in opts if len(_matches(objs, x[0], x[1])) >= 2]
    pool = strong if strong and rng.random() < 0.8 else opts
    if not pool:
        return None
    colour, shape, o, rel, anchor = pool[rng.integers(len(pool))]
    text = (f'{describe(rng, colour, shape)} {_pick(rng, REL_WORDS[rel])} the '
            f'{describe(rng, anchor.colour, anchor.shape)}')
    return Expression(_finish(rng, text), 'relation', o.index)


def _no_match(rng, scene):
    present = {(o.colour, o.shape) for o in scene.objects}
    shapes_present = {o.shape for o in scene.objects}
    r = rng.random()
    if r < 0.15:
        absent = [s for s in SHAPES if s not in shapes_present]
        if absent:
            return Expression(_finish(rng, describe(rng, None, _pick(rng, absent))), 'no_match', None)
    # Mostly near misses: a colour that exists with a shape that exists, but not together.
    colours_present = sorted({o.colour for o in scene.objects})
    combos = [(c, s) for c in (colours_present if r < 0.8 else list(COLOURS)) for s in SHAPES
              if (c, s) not in present]
    if not combos:   # every shape of the present colours is there: use any other colour
        combos = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    c, s = combos[rng.integers(len(combos))]
    return Expression(_finish(rng, describe(rng, c, s)), 'no_match', None)


GENERATORS: dict[str, Callable[[np.random.Generator, Scene], Expression | None]] = {
    'colour_shape': _colour_shape, 'shape': _shape, 'colour': _colour, 'size': _size, 'position': _position,
    'ordinal': _ordinal, 'relation': _relation, 'no_match': _no_match,
}


def sample_expression(rng: np.random.Generator, scene: Scene, kind: str) -> Expression | None:
    """One expression of the given kind, or None if the scene has none of that kind."""
    return GENERATORS[kind](rng, scene)


def generate_expressions(scene: Scene, seed: int | None = None, kinds: Sequence[str] = KINDS,
                         per_kind: int = 1) -> list[Expression]:
    """Up to ``per_kind`` distinct expressions of each kind for a scene (deterministic in seed)."""
    rng = np.random.default_rng(np.random.SeedSequence([scene.seed if seed is None else seed, 0xE7]))
    out: list[Expression] = []
    for kind in kinds:
        seen: set[str] = set()
        for _ in range(per_kind * 3):
            e = sample_expression(rng, scene, kind)
            if e is None:
                break
            if e.text not in seen:
                seen.add(e.text)
                out.append(e)
            if len(seen) >= per_kind:
                break
    return out


def vocabulary_corpus() -> list[str]:
    """Sentences covering every word of the grammar (to train a small sentencepiece vocabulary)."""
    lines = []
    rng = np.random.default_rng(0)
    for prefix in PREFIXES:
        for c in list(COLOURS) + [None]:
            for s in list(SHAPES) + [None]:
                for size in (None, 'small', 'big'):
                    for _ in range(2):
                        lines.append(_finish_with(prefix, describe(rng, c, s, size)))
    for rel, words in REL_WORDS.items():
        for w in words:
            for c in COLOURS:
                lines.append(f'the {_pick(rng, GENERIC)} {w} the {c} {_pick(rng, SHAPE_WORDS[_pick(rng, SHAPES)])}')
    for w in POSITION_PHRASES:
        lines.append(f'the {_pick(rng, SHAPE_WORDS[_pick(rng, SHAPES)])} {w}')
    for w in ('leftmost', 'rightmost', 'closest', 'nearest', 'farthest', 'furthest'):
        for s in SHAPES:
            for syn in SHAPE_WORDS[s]:
                lines.append(f'the {w} {syn}')
    for s in SHAPES:
        for syn in SHAPE_WORDS[s]:
            for size in SIZE_WORDS.values():
                for sw in size:
                    lines.append(f'the {sw} {syn}')
            for c in COLOURS:
                lines.append(f'the {c} {syn}')
    # Spoken-style input may be capitalised or punctuated: keep those as pieces too.
    words = sorted({w for line in lines for w in line.split()})
    lines.append(' '.join(w.capitalize() for w in words))
    lines += ['find the red cube, please.', 'where is the ball?', 'the green one!', 'pick up the box; then stop.',
              "the cube's left side: 1 2 3 4 5 6 7 8 9 0 - ( ) '"]
    return lines


def _finish_with(prefix: str, phrase: str) -> str:
    return (prefix + 'the ' + phrase).strip()
