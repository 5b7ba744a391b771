"""Shortest completions: how many bytes a state still needs before the value is complete.

Used by the watchdog's *salvage* mode: once a job trips, only tokens that bring
the automaton strictly closer to acceptance are allowed, then an end token.
Every step lowers the distance, so a salvaged job ends within ``distance``
bytes and its output is still a complete, valid value.

Per NFA state the distance to the end of its own sub-machine is a static
shortest path (byte edges weigh 1, epsilon edges 0, a call weighs its callee's
distance plus the return's, a lazy head asks its construct).  A configuration
(a state over a set of call stacks) needs its state's distance plus the
cheapest stack's sum over its frames, and a DFA state the minimum over its
configurations.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from exl2_enforcer.compile.nfa import NFA
from exl2_enforcer.engine.automaton import INF, Automaton, StackNode, predecessors


def completion_bytes(nfa: NFA, ends: Iterable[int]) -> list[int]:
    """Fewest bytes from each NFA state to the end of its machine (``INF`` if none)."""
    n = len(nfa)
    d = [INF] * n
    plain_preds, combo_preds = predecessors(nfa)

    def combo(q: int) -> int:
        call = nfa.calls.get(q)
        if call is not None:
            callee, r, _w = call
            return min(INF, d[callee.start] + d[r])
        obj, key = nfa.loop_of[q]
        return min(INF, obj.head_distance(key, d))

    heap = [(0, e) for e in set(ends)]
    for _, e in heap:
        d[e] = 0
    heapq.heapify(heap)
    done = [False] * n
    while heap:
        dist, t = heapq.heappop(heap)
        if done[t] or dist != d[t]:
            continue
        done[t] = True
        for q, w in plain_preds[t]:
            if dist + w < d[q]:
                d[q] = dist + w
                heapq.heappush(heap, (d[q], q))
        for q in combo_preds[t]:
            v = combo(q)
            if v < d[q]:
                d[q] = v
                heapq.heappush(heap, (v, q))
    return d


class Distances:
    """Completion distances of one automaton's DFA states (computed on demand, cached)."""

    def __init__(self, automaton: Automaton) -> None:
        self.automaton = automaton
        nfa = automaton.nfa
        ends = {automaton.root.end} | {c.end for c, _r, _w in nfa.calls.values()}
        ends |= {obj.callee_end for obj, _k in nfa.loop_of.values()}
        self._d = completion_bytes(nfa, ends)
        self._dfa: dict[int, int] = {}
        self._nodes: dict[StackNode, int] = {}

    def clear_states(self) -> None:
        """Forget the per-DFA-state and per-node answers (their automaton evicted its states)."""
        self._dfa = {}
        self._nodes = {}

    def _state(self, q: int) -> int:
        if q < len(self._d):
            return self._d[q]
        obj, key = self.automaton.nfa.loop_of[q]  # a head created after the computation
        return min(INF, obj.head_distance(key, self._d))

    def of_config(self, config: tuple[int, StackNode]) -> int:
        """Bytes a configuration ``(state, node)`` needs: its machine, then the cheapest callers' rest."""
        q, node = config
        return min(INF, self._state(q) + self.of_node(node))

    def of_node(self, node: StackNode) -> int:
        """Fewest bytes to unwind any stack of ``node``: the sum of its return states' distances."""
        got = self._nodes.get(node)
        if got is not None:
            return got
        # iterative post-order: stacks can be longer than Python's recursion limit
        todo = [node]
        while todo:
            n = todo[-1]
            missing = [p for _r, p in n.frames if p not in self._nodes]
            if missing:
                todo.extend(missing)
                continue
            todo.pop()
            self._nodes[n] = min((min(INF, self._state(r) + self._nodes[p]) for r, p in n.frames), default=0)
        return self._nodes[node]

    def of_state(self, sid: int) -> int:
        """Fewest bytes from DFA state ``sid`` to a complete value (0 when it accepts)."""
        got = self._dfa.get(sid)
        if got is None:
            st = self.automaton.states[sid]
            got = 0 if st.accepting else min((self.of_config(c) for c in st.configs), default=INF)
            self._dfa[sid] = got
        return got
