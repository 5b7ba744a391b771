"""NFA helpers shared by the NFA-level tests (charset, regex, formats, numbers): a reference
byte-by-byte matcher and a reachability walk."""

from __future__ import annotations

from exl2_enforcer.compile.nfa import NFA, Frag


def coreachable(nfa: NFA, frag: Frag) -> set[int]:
    """States reachable from ``frag.start`` that can still reach ``frag.end``."""
    seen, todo = {frag.start}, [frag.start]
    while todo:
        q = todo.pop()
        for t in list(nfa.eps[q]) + [d for _, _, d in nfa.edges[q]]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    rev: dict[int, list[int]] = {}
    for q in seen:
        for t in list(nfa.eps[q]) + [d for _, _, d in nfa.edges[q]]:
            rev.setdefault(t, []).append(q)
    live, todo = {frag.end}, [frag.end]
    while todo:
        for p in rev.get(todo.pop(), []):
            if p not in live:
                live.add(p)
                todo.append(p)
    return live & seen


def plain_matches(nfa: NFA, frag: Frag, data: bytes) -> bool:
    """Reference matcher for call-free, loop-free fragments (slow, test-only: the engine matches through the lazy DFA).

    Walks ``data`` through ``frag`` one byte at a time with epsilon closure.
    """

    def closure(states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            q = todo.pop()
            if q in nfa.calls or q in nfa.loop_of:
                raise ValueError(f"state {q} is a call or loop; plain_matches handles plain fragments only")
            for t in nfa.eps[q]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    cur = closure({frag.start})
    for b in data:
        cur = closure({dst for q in cur for lo, hi, dst in nfa.edges[q] if lo <= b <= hi})
        if not cur:
            return False
    return frag.end in cur
