"""Explicit DFAs over JSON string content, for object keys: intersection and complement.

``patternProperties`` splits the keys of an object into regions by the patterns they match (and
whether they are a declared name); each region needs the intersection of some pattern languages
with the complements of the others.  Those languages are small, so they are determinised here
explicitly (subset construction over byte ranges), combined as products, and emitted back into an
NFA.  Complements are taken within :func:`content_dfa`, the language of all valid JSON string
contents, so a complement never admits a broken escape.  Every construction is bounded by
:data:`MAX_KEY_DFA_STATES` and raises :class:`EnforcerError` beyond it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from exl2_enforcer.compile.charset import ANY_CP, json_char_fragment
from exl2_enforcer.compile.nfa import NFA, Frag, coreachable
from exl2_enforcer.errors import EnforcerError

#: the most states one key DFA (or product) may have
MAX_KEY_DFA_STATES = 20_000


@dataclass(frozen=True)
class DFA:
    """A complete-or-partial DFA: ``moves[s]`` lists disjoint ``(lo, hi, target)``; start is 0."""

    moves: tuple[tuple[tuple[int, int, int], ...], ...]
    accept: tuple[bool, ...]


def determinise(nfa: NFA, frag: Frag) -> DFA:
    """The DFA of a call-free fragment (subset construction over byte ranges)."""
    if nfa.calls or nfa.loop_of:
        raise ValueError("determinise needs a call-free fragment")
    start = frozenset(nfa.epsilon_closure({frag.start}))
    ids = {start: 0}
    order = [start]
    moves: list[tuple[tuple[int, int, int], ...]] = []
    i = 0
    while i < len(order):
        subset = order[i]
        edges = [e for q in subset for e in nfa.edges[q]]
        cuts = sorted({lo for lo, _h, _t in edges} | {hi + 1 for _l, hi, _t in edges})
        row: list[tuple[int, int, int]] = []
        for a, b in zip(cuts, cuts[1:]):
            targets = frozenset(t for lo, hi, t in edges if lo <= a and b - 1 <= hi)
            if not targets:
                continue
            nxt = frozenset(nfa.epsilon_closure(targets))
            if nxt not in ids:
                if len(order) >= MAX_KEY_DFA_STATES:
                    raise EnforcerError(f"a key pattern needs more than {MAX_KEY_DFA_STATES} DFA states")
                ids[nxt] = len(order)
                order.append(nxt)
            _append(row, a, b - 1, ids[nxt])
        moves.append(tuple(row))
        i += 1
    return DFA(tuple(moves), tuple(frag.end in s for s in order))


def _append(row: list[tuple[int, int, int]], lo: int, hi: int, target: int) -> None:
    if row and row[-1][2] == target and row[-1][1] + 1 == lo:
        row[-1] = (row[-1][0], hi, target)
    else:
        row.append((lo, hi, target))


@functools.lru_cache(maxsize=1)
def content_dfa() -> DFA:
    """All valid JSON string contents (any characters, any escape spellings)."""
    nfa = NFA()
    return determinise(nfa, nfa.star(json_char_fragment(nfa, ANY_CP)))


def product(a: DFA, b: DFA, accept: str) -> DFA:
    """The product of ``a`` and ``b``: ``accept`` is "and" (intersection) or "and-not"
    (``a`` minus ``b``; ``b`` may be partial, a missing move meaning rejection)."""
    ids = {(0, 0): 0}
    order = [(0, 0)]
    moves = []
    i = 0
    while i < len(order):
        x, y = order[i]
        row: list[tuple[int, int, int]] = []
        ymoves = b.moves[y] if y >= 0 else ()
        for lo, hi, tx in a.moves[x]:
            covered = lo
            for ylo, yhi, ty in ymoves:
                a2, b2 = max(lo, ylo), min(hi, yhi)
                if a2 > b2:
                    continue
                if accept == "and-not" and a2 > covered:
                    _append(row, covered, a2 - 1, _node(ids, order, (tx, -1)))
                _append(row, a2, b2, _node(ids, order, (tx, ty)))
                covered = b2 + 1
            if accept == "and-not" and covered <= hi:
                _append(row, covered, hi, _node(ids, order, (tx, -1)))
        moves.append(tuple(row))
        i += 1
    if accept == "and":
        acc = tuple(a.accept[x] and y >= 0 and b.accept[y] for x, y in order)
    else:
        acc = tuple(a.accept[x] and (y < 0 or not b.accept[y]) for x, y in order)
    return DFA(tuple(moves), acc)


def _node(ids: dict[tuple[int, int], int], order: list[tuple[int, int]], key: tuple[int, int]) -> int:
    got = ids.get(key)
    if got is None:
        if len(order) >= MAX_KEY_DFA_STATES:
            raise EnforcerError(f"a key region needs more than {MAX_KEY_DFA_STATES} DFA states")
        got = ids[key] = len(order)
        order.append(key)
    return got


def is_empty(d: DFA) -> bool:
    """Whether no accepting state is reachable (every state of a product is reachable)."""
    return not any(d.accept)


def emit(d: DFA, nfa: NFA) -> Frag:
    """The DFA as a fragment of ``nfa`` (only states that can still reach acceptance)."""
    live = _live(d)
    if 0 not in live:
        return nfa.nothing()
    states = {s: nfa.state() for s in sorted(live)}
    end = nfa.state()
    for s in live:
        for lo, hi, t in d.moves[s]:
            if t in live:
                nfa.edge(states[s], lo, hi, states[t])
        if d.accept[s]:
            nfa.epsilon(states[s], end)
    return Frag(states[0], end)


def _live(d: DFA) -> set[int]:
    return coreachable([[t for _lo, _hi, t in row] for row in d.moves], (s for s, a in enumerate(d.accept) if a))


def names_dfa(names: list[str]) -> DFA:
    """The contents whose decoded value is one of ``names`` (every escape spelling)."""
    nfa = NFA()
    alts = [nfa.seq([json_char_fragment(nfa, ((ord(ch), ord(ch)),)) for ch in name]) if name else nfa.empty()
            for name in names]
    return determinise(nfa, nfa.alt(alts) if alts else nfa.nothing())
