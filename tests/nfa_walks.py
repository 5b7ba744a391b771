"""Graph helpers shared by the NFA-level tests (regex, formats)."""

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
