"""Lazy determinisation of a byte NFA with calls into a DFA over byte classes.

A *configuration* is a call stack: a tuple ``(r1, ..., rk, q)`` of return
states followed by the current NFA state ``q``.  A DFA state is the set of
configurations the input so far can be in, closed under epsilon moves, calls,
returns and loop steps.  DFA states and their transition rows are created only
when something reaches them, so compile time stays proportional to the schema
and not to the (possibly huge) set of reachable stacks.

**No dead ends.**  Before determinising, :func:`completion_depth` computes for
every NFA state the nesting depth still needed to finish its sub-machine (or
"never").  A configuration is only created when it can still reach acceptance
within ``max_depth``; so every DFA state has a path to an accepting state and
an empty byte continuation set can only occur in a state that is already
accepting.  A schema whose root cannot finish at all is rejected at compile
time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag, Loop
from exl2_enforcer.errors import EnforcerError

INF = 1 << 30
DEAD = -1
UNKNOWN = -2

Config = tuple[int, ...]


def predecessors(nfa: NFA) -> tuple[list[list[tuple[int, int]]], list[list[int]]]:
    """Reverse edges for backward fixpoints: (plain predecessors with byte weight, combo predecessors).

    A plain predecessor reaches a state by a byte edge (weight 1) or an epsilon
    edge (weight 0).  A combo predecessor is a call or lazy-head state whose
    value depends on the state (callee start, return state, loop exit...).
    """
    n = len(nfa)
    plain: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    combo: list[list[int]] = [[] for _ in range(n)]
    for q in range(n):
        for _lo, _hi, t in nfa.edges[q]:
            plain[t].append((q, 1))
        for t in nfa.eps[q]:
            plain[t].append((q, 0))
    for q, (callee, r, _w) in nfa.calls.items():
        combo[r].append(q)
        combo[callee.start].append(q)
    for q, (obj, _k) in nfa.loop_of.items():
        for dep in obj.deps():
            combo[dep].append(q)
    return plain, combo


def completion_depth(nfa: NFA, ends: Iterable[int]) -> list[int]:
    """For each NFA state, the extra call depth needed to reach the end of its machine.

    ``INF`` means the state cannot finish at all.  Depth counts call weights
    (a ``$ref`` call weighs 1, loop iterations 0).  A bucket queue settles states
    in increasing depth (Knuth's generalisation of Dijkstra: a call's value is
    the max of its callee's and its return's), so each state is settled once.
    """
    n = len(nfa)
    h = [INF] * n
    plain_preds, combo_preds = predecessors(nfa)

    def combo_value(q: int) -> int:
        call = nfa.calls.get(q)
        if call is not None:
            callee, r, w = call
            return max(w + h[callee.start], h[r])
        obj, key = nfa.loop_of[q]
        return obj.head_depth(key, h)

    buckets: dict[int, list[int]] = {0: list(dict.fromkeys(ends))}
    for e in buckets[0]:
        h[e] = 0
    settled = [False] * n
    level = 0
    while buckets:
        todo = buckets.pop(level, None)
        if todo is None:
            level = min(buckets)
            continue
        while todo:
            t = todo.pop()
            if settled[t] or h[t] != level:
                continue
            settled[t] = True
            for q, _w in plain_preds[t]:
                if h[q] > level:
                    h[q] = level
                    todo.append(q)
            for q in combo_preds[t]:
                v = combo_value(q)
                if v < h[q]:
                    h[q] = v
                    if v == level:
                        todo.append(q)
                    else:
                        buckets.setdefault(v, []).append(q)
    return h


class DfaState:
    """One lazily built DFA state: its configurations and whether it accepts."""

    __slots__ = ("configs", "accepting")

    def __init__(self, configs: frozenset[Config], accepting: bool) -> None:
        self.configs = configs
        self.accepting = accepting


class Automaton:
    """A lazily determinised DFA over byte classes for one compiled constraint.

    ``table[s, c]`` is the next state from DFA state ``s`` on a byte of class
    ``c`` (``DEAD`` if refused, ``UNKNOWN`` if not computed yet).  All growth
    happens under ``lock``; a row, once computed, never changes, so readers
    of an already computed row need no lock.
    """

    def __init__(self, nfa: NFA, root: Frag, *, max_depth: int = 32) -> None:
        self.nfa = nfa
        self.root = root
        self.max_depth = max_depth
        self.lock = threading.RLock()
        # Which machine a return state belongs to: return state -> (callee end, weight).
        self._ret_info: dict[int, tuple[int, int]] = {r: (callee.end, w) for callee, r, w in nfa.calls.values()}
        ends = {root.end} | {callee.end for callee, _r, _w in nfa.calls.values()}
        ends |= {obj.callee_end for obj, _k in nfa.loop_of.values()}
        self._h = completion_depth(nfa, ends)
        if self._h[root.start] > max_depth:
            raise EnforcerError("the constraint admits no value" if self._h[root.start] >= INF
                                else f"the constraint needs nesting deeper than max_depth={max_depth}")
        self.class_of_byte, self.n_classes, self.class_rep = _byte_classes(nfa)
        self.states: list[DfaState] = []
        self._index: dict[frozenset[Config], int] = {}
        self._closure_cache: dict[Config, tuple[frozenset[Config], bool]] = {}
        self._body_tops_cache: dict[int, frozenset[int]] = {}
        self._starts_cache: dict[tuple[int, str], bool] = {}
        self._eps_cache: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._special = frozenset(ends)
        self.table = np.full((64, self.n_classes), UNKNOWN, dtype=np.int32)
        configs, acc = self._closure((root.start,))
        self.start = self._intern(configs, acc)

    # -- configuration closure ---------------------------------------------------
    def _depth(self, stack: Config) -> int:
        return sum(self._ret_info[r][1] if r in self._ret_info else 0 for r in stack[:-1])

    def _return_end(self, r: int) -> int:
        """The end state of the machine whose caller waits at return state ``r``."""
        info = self._ret_info.get(r)
        if info is not None:
            return info[0]
        obj, _k = self.nfa.loop_of[r]
        return obj.callee_end

    def _eps_reach(self, q: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """States reachable from ``q`` by epsilon edges: (those with byte edges, special ones).

        Special states (calls, loop heads, machine ends) need the stack and are
        handled by :meth:`_closure`; everything else is a static graph search,
        cached per state.
        """
        got = self._eps_cache.get(q)
        if got is not None:
            return got
        nfa, special = self.nfa, self._special
        seen, todo = {q}, [q]
        with_edges: list[int] = []
        specials: list[int] = []
        while todo:
            x = todo.pop()
            if nfa.edges[x]:
                with_edges.append(x)
            if x in special or x in nfa.calls or x in nfa.loop_of:
                specials.append(x)
            for t in nfa.eps[x]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        got = (tuple(with_edges), tuple(specials))
        self._eps_cache[q] = got
        return got

    def _closure(self, config: Config) -> tuple[frozenset[Config], bool]:
        cached = self._closure_cache.get(config)
        if cached is not None:
            return cached
        nfa, limit, hd = self.nfa, self.max_depth, self._state_depth
        out: set[Config] = set()
        accepting = False
        depth0 = self._depth(config)
        seen = {config}
        todo = [(config, depth0)] if depth0 + hd(config[-1]) <= limit else []
        while todo:
            stack, depth = todo.pop()
            base = stack[:-1]
            with_edges, specials = self._eps_reach(stack[-1])
            for e in with_edges:
                if depth + hd(e) <= limit:
                    out.add(base + (e,))
            for q in specials:
                if depth + hd(q) > limit:
                    continue
                nexts: list[tuple[Config, int]] = []
                call = nfa.calls.get(q)
                if call is not None:
                    callee, r, w = call
                    # the caller's frame must also be able to finish after the return
                    if depth + hd(r) <= limit:
                        nexts.append((base + (r, callee.start), depth + w))
                head = nfa.loop_of.get(q)
                if head is not None:
                    obj, key = head
                    for callee, target in obj.moves(nfa, key):
                        if callee is None:
                            nexts.append((base + (target,), depth))
                        elif depth + hd(target) <= limit:
                            nexts.append((base + (target, callee), depth))
                if not base:
                    if q == self.root.end:
                        accepting = True
                elif q == self._return_end(base[-1]):
                    nexts.append((base, depth - self._ret_info.get(base[-1], (0, 0))[1]))
                for nxt, d in nexts:
                    if nxt in seen or d + hd(nxt[-1]) > limit:
                        continue
                    seen.add(nxt)
                    todo.append((nxt, d))
        result = (frozenset(out), accepting)
        self._closure_cache[config] = result
        return result

    def _state_depth(self, q: int) -> int:
        """Completion depth of ``q``; loop heads made after the fixpoint are derived."""
        if q < len(self._h):
            return self._h[q]
        obj, key = self.nfa.loop_of[q]
        return obj.head_depth(key, self._h)

    # -- DFA states --------------------------------------------------------------
    def _intern(self, configs: frozenset[Config], accepting: bool) -> int:
        sid = self._index.get(configs)
        if sid is not None:
            return sid
        sid = len(self.states)
        self.states.append(DfaState(configs, accepting))
        self._index[configs] = sid
        if sid >= self.table.shape[0]:
            grown = np.full((self.table.shape[0] * 2, self.n_classes), UNKNOWN, dtype=np.int32)
            grown[: self.table.shape[0]] = self.table
            self.table = grown
        return sid

    def ensure_rows(self, sids: Iterable[int]) -> None:
        """Compute the transition rows of the given DFA states if not done yet."""
        todo = [s for s in sids if self.table[s, 0] == UNKNOWN]
        if not todo:
            return
        with self.lock:
            for s in todo:
                if self.table[s, 0] == UNKNOWN:
                    self._compute_row(s)

    def _compute_row(self, sid: int) -> None:
        # Sweep over class boundaries instead of visiting every class: a row
        # changes target set only where some edge range starts or ends.
        cls = self.class_of_byte
        events: dict[int, list[tuple[int, Config]]] = {}
        for stack in self.states[sid].configs:
            base = stack[:-1]
            for lo, hi, t in self.nfa.edges[stack[-1]]:
                nxt = base + (t,)
                events.setdefault(int(cls[lo]), []).append((1, nxt))
                events.setdefault(int(cls[hi]) + 1, []).append((-1, nxt))
        row = np.full(self.n_classes, DEAD, dtype=np.int32)
        active: dict[Config, int] = {}
        points = sorted(events)
        memo: dict[frozenset[Config], int] = {}
        for a, b in zip(points, points[1:] + [self.n_classes]):
            for sign, cfg in events[a]:
                n = active.get(cfg, 0) + sign
                if n:
                    active[cfg] = n
                else:
                    active.pop(cfg, None)
            if not active or a >= self.n_classes:
                continue
            key = frozenset(active)
            nid = memo.get(key)
            if nid is None:
                nid = memo[key] = self._step_targets(key)
            row[a:b] = nid
        self.table[sid] = row

    def _step_targets(self, targets: frozenset[Config]) -> int:
        configs: set[Config] = set()
        accepting = False
        for t in targets:
            cs, acc = self._closure(t)
            configs |= cs
            accepting |= acc
        if not configs and not accepting:
            return DEAD
        return self._intern(frozenset(configs), accepting)

    # -- vocabulary-slice fast path ----------------------------------------------
    def slice_budget(self, sid: int) -> "tuple[str, int | None] | None":
        """Whether state ``sid`` can take a whole vocabulary slice at once.

        That holds when ``sid`` sits at an element boundary of exactly one
        slice loop (plain string characters, or whitespace bytes) and no other
        configuration can start on a byte of that slice.  Returns ``(kind,
        budget)`` -- ``budget`` is how many more elements the loop takes (None:
        unbounded) -- or None when the state needs a full walk.
        """
        frames: dict[Config, set[int]] = {}
        others: list[int] = []
        loop_of = self.nfa.loop_of
        for c in self.states[sid].configs:
            if len(c) >= 2 and c[-2] in loop_of and loop_of[c[-2]][0].slice_kind:
                frames.setdefault(c[:-1], set()).add(c[-1])
            else:
                others.append(c[-1])
        if len(frames) != 1:
            return None
        ((frame, tops),) = frames.items()
        lp, k_next = loop_of[frame[-1]]
        if tops != self._body_tops(lp):
            return None
        starts = _SLICE_LEADS[lp.slice_kind]
        if any(self._starts_with(q, lp.slice_kind, starts) for q in others):
            return None
        return lp.slice_kind, (None if lp.hi is None else lp.hi - (k_next - 1))

    def slice_need(self, sid: int) -> int:
        """For a slice state: elements still required before the loop may exit (minLength)."""
        for c in self.states[sid].configs:
            if len(c) >= 2 and c[-2] in self.nfa.loop_of:
                lp, k_next = self.nfa.loop_of[c[-2]]
                if not lp.slice_kind:
                    continue
                if lp.hi is None and k_next == lp.lo:
                    # an unbounded loop folds every count >= lo into one head, so the
                    # count is either lo-1 or enough; whether the loop may exit tells
                    return 0 if self.step(sid, 0x22) >= 0 else 1
                return max(0, lp.lo - (k_next - 1))
        return 0

    def others_only_on(self, sid: int, byte: int) -> bool:
        """Whether every configuration outside the slice loop reads only ``byte``."""
        loop_of = self.nfa.loop_of
        for c in self.states[sid].configs:
            if len(c) >= 2 and c[-2] in loop_of and loop_of[c[-2]][0].slice_kind:
                continue
            if any(lo != byte or hi != byte for lo, hi, _t in self.nfa.edges[c[-1]]):
                return False
        return True

    def _starts_with(self, q: int, kind: str, leads: tuple[tuple[int, int], ...]) -> bool:
        key = (q, kind)
        got = self._starts_cache.get(key)
        if got is None:
            got = any(lo <= b_hi and hi >= b_lo for lo, hi, _t in self.nfa.edges[q] for b_lo, b_hi in leads)
            self._starts_cache[key] = got
        return got

    def _body_tops(self, lp: Loop) -> frozenset[int]:
        tops = self._body_tops_cache.get(id(lp))
        if tops is None:
            seen, todo = {lp.body.start}, [lp.body.start]
            while todo:
                for t in self.nfa.eps[todo.pop()]:
                    if t not in seen:
                        seen.add(t)
                        todo.append(t)
            tops = frozenset(q for q in seen if self.nfa.edges[q])
            self._body_tops_cache[id(lp)] = tops
        return tops

    # -- stepping ----------------------------------------------------------------
    def step(self, sid: int, byte: int) -> int:
        """The DFA state after reading ``byte`` in state ``sid`` (``DEAD`` if refused)."""
        nxt = int(self.table[sid, self.class_of_byte[byte]])
        if nxt == UNKNOWN:
            self.ensure_rows([sid])
            nxt = int(self.table[sid, self.class_of_byte[byte]])
        return nxt

    def step_class(self, sid: int, c: int) -> int:
        """The DFA state after a byte of class ``c`` in state ``sid``."""
        nxt = self.table.item(sid, c)
        if nxt == UNKNOWN:
            self.ensure_rows([sid])
            nxt = self.table.item(sid, c)
        return nxt

    def walk(self, sid: int, data: bytes) -> int:
        """Feed ``data`` from state ``sid``; ``DEAD`` as soon as a byte is refused."""
        for b in data:
            sid = self.step(sid, b)
            if sid < 0:
                return DEAD
        return sid

    def is_accepting(self, sid: int) -> bool:
        """Whether the input that led to ``sid`` is a complete value."""
        return self.states[sid].accepting

    def has_continuation(self, sid: int) -> bool:
        """Whether any byte can follow in state ``sid``."""
        self.ensure_rows([sid])
        return bool((self.table[sid] >= 0).any())

    def matches(self, data: bytes) -> bool:
        """Whether ``data`` is a complete value (reference check, byte by byte)."""
        sid = self.walk(self.start, data)
        return sid >= 0 and self.is_accepting(sid)


#: first bytes of the tokens in each vocabulary slice (see mask.TokenIndex)
_SLICE_LEADS: dict[str, tuple[tuple[int, int], ...]] = {
    # printable ASCII but '"' and backslash, and the UTF-8 lead bytes
    "plain": ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7F), (0xC2, 0xF4)),
    "ws": ((0x09, 0x0A), (0x0D, 0x0D), (0x20, 0x20)),
}


def _byte_classes(nfa: NFA) -> tuple[np.ndarray, int, list[int]]:
    """Partition 0..255 into classes that no edge range splits.

    Rows then have one entry per class instead of 256; JSON grammars use
    a few dozen classes.
    """
    cuts = np.zeros(257, dtype=bool)
    cuts[0] = True
    for edges in nfa.edges:
        for lo, hi, _t in edges:
            cuts[lo] = True
            cuts[hi + 1] = True
    class_of = (np.cumsum(cuts[:256]) - 1).astype(np.int32)
    n = int(class_of[-1]) + 1
    reps = [int(np.argmax(class_of == c)) for c in range(n)]
    return class_of, n, reps
