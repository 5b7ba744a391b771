"""``pattern``/``format`` together with ``minLength``/``maxLength``: a product with a length counter.

A pattern or format compiles into a call-free byte NFA over JSON string *content* (the bytes
between the quotes).  JSON Schema counts a string's length in code points of its decoded value,
so the counter reads the content bytes as JSON characters: a character starts at every byte that
is neither a UTF-8 continuation byte nor part of an escape's tail, and an escaped surrogate pair
(``\\ud83d\\ude00``) is one character.  The product explores only the states reachable from the
start, keeps those that can still reach an accepting one, and is refused past
:data:`MAX_PRODUCT_STATES` (with :class:`SchemaError` from the caller) rather than approximated.
"""

from __future__ import annotations

from typing import Any

from exl2_enforcer.compile.nfa import NFA, Frag, coreachable
from exl2_enforcer.errors import EnforcerError

#: the most product states one pattern/format x length bound may build
MAX_PRODUCT_STATES = 250_000

_HEX = [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]

# phases of the JSON-character reader: "N" between characters, "B" after a backslash,
# ("U", i, tag) inside a \u escape after i hex digits (tag: "d" first digit D, "hi" high
# surrogate, "" other), "H" after a high surrogate escape, "HB" after its backslash,
# ("L", i) inside the low surrogate escape (which does not count)
Phase = object


def _split(phase: Phase) -> list[tuple[int, int, Phase, int]]:
    """``(lo, hi, next phase, characters started)`` for every byte range, from ``phase``."""
    if phase == "N":
        return [(0x00, 0x5B, "N", 1), (0x5C, 0x5C, "B", 1), (0x5D, 0x7F, "N", 1), (0x80, 0xBF, "N", 0),
                (0xC0, 0xFF, "N", 1)]
    if phase == "B":
        return [(0x00, 0x74, "N", 0), (0x75, 0x75, ("U", 0, ""), 0), (0x76, 0xFF, "N", 0)]
    if phase == "H":
        return [(0x5C, 0x5C, "HB", 0)]
    if phase == "HB":
        return [(0x75, 0x75, ("L", 0), 0)]
    kind = phase[0]  # type: ignore[index]
    i = phase[1]  # type: ignore[index]
    if kind == "L":
        nxt = "N" if i == 3 else ("L", i + 1)
        return [(lo, hi, nxt, 0) for lo, hi in _HEX]
    tag = phase[2]  # type: ignore[index]
    out = []
    for lo, hi in _HEX:
        for b in range(lo, hi + 1):
            out.append((b, b, _u_next(i, tag, chr(b)), 0))
    return out


def _u_next(i: int, tag: str, digit: str) -> Phase:
    if i == 0:
        tag = "d" if digit in "dD" else ""
    elif i == 1:
        tag = "hi" if tag == "d" and digit in "89abAB" else ""
    if i == 3:
        return "H" if tag == "hi" else "N"
    return ("U", i + 1, tag)


def length_product(src: NFA, frag: Frag, lo: int, hi: int | None, dst: NFA) -> Frag:
    """Emit into ``dst`` the strings of ``frag`` (in call-free ``src``) with ``lo``..``hi`` characters.

    Raises :class:`EnforcerError` past :data:`MAX_PRODUCT_STATES` states or when no string fits.
    """
    if src.calls or src.loop_of:
        raise ValueError("length_product needs a call-free template")
    cap = hi if hi is not None else lo
    splits: dict[str, Any] = {}
    start = (frag.start, "N", 0)
    ids = {start: 0}
    order = [start]
    moves: list[list[tuple[int, int, int]]] = [[]]
    eps: list[list[int]] = [[]]

    def node(key: tuple[Any, ...]) -> int:
        got = ids.get(key)
        if got is None:
            if len(order) >= MAX_PRODUCT_STATES:
                raise EnforcerError(f"the length bound needs more than {MAX_PRODUCT_STATES} automaton states")
            got = ids[key] = len(order)
            order.append(key)
            moves.append([])
            eps.append([])
        return got

    i = 0
    while i < len(order):
        q, phase, k = order[i]
        for t in src.eps[q]:
            eps[i].append(node((t, phase, k)))
        table = splits.get(phase)
        if table is None:
            table = splits[phase] = _split(phase)
        for elo, ehi, t in src.edges[q]:
            for plo, phi, nxt, inc in table:
                a, b = max(elo, plo), min(ehi, phi)
                if a > b:
                    continue
                k2 = k + inc
                if hi is None:
                    k2 = min(k2, cap)
                elif k2 > hi:
                    continue
                moves[i].append((a, b, node((t, nxt, k2))))
        i += 1
    accept = {j for j, (q, phase, k) in enumerate(order) if q == frag.end and phase == "N" and k >= lo}
    live = coreachable([[t for _a, _b, t in ms] + eps[j] for j, ms in enumerate(moves)], accept)
    if 0 not in live:
        raise EnforcerError(f"the string admits no value: none of {lo}..{'' if hi is None else hi} characters matches")
    base = {j: dst.state() for j in sorted(live)}
    end = dst.state()
    for j in live:
        for a, b, t in moves[j]:
            if t in live:
                dst.edge(base[j], a, b, base[t])
        for t in eps[j]:
            if t in live:
                dst.epsilon(base[j], base[t])
        if j in accept:
            dst.epsilon(base[j], end)
    return Frag(base[0], end)


def longest_bytes(src: NFA, frag: Frag) -> int | None:
    """The most bytes a string of ``frag`` can have; None if unbounded (a cycle reaches the end).

    A string never has more characters than bytes, so a bound that this already meets needs no
    product.
    """
    memo: dict[int, int] = {}
    done = -(1 << 60)
    on_path: set[int] = set()
    stack: list[tuple[int, int]] = [(frag.start, 0)]
    while stack:
        q, phase = stack.pop()
        if phase == 0:
            if q in memo:
                continue
            if q in on_path:
                return None
            on_path.add(q)
            stack.append((q, 1))
            for t in src.eps[q]:
                stack.append((t, 0))
            for _a, _b, t in src.edges[q]:
                stack.append((t, 0))
            continue
        on_path.discard(q)
        best = 0 if q == frag.end else done
        for t in src.eps[q]:
            if t in on_path:
                return None
            best = max(best, memo.get(t, done))
        for _a, _b, t in src.edges[q]:
            if t in on_path:
                return None
            best = max(best, memo.get(t, done) + 1)
        memo[q] = best
    got = memo.get(frag.start, done)
    return max(got, 0)
