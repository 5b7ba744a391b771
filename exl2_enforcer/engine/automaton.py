"""Lazy determinisation of a byte NFA with calls into a DFA over byte classes.

A *configuration* is a pair ``(q, node)``: the current NFA state ``q`` and a
:class:`StackNode`, a hash-consed *set* of call stacks of one nesting depth
(a graph-structured stack).  A node maps each top return state to the node
of the stacks below it, so stacks that differ only deep down share their
tops, and ambiguity that stays open over many levels (``anyOf`` branches with
a common recursive field) costs one node per level instead of doubling the
stacks per level.  A DFA state is the set of configurations the input so far
can be in, closed under epsilon moves, calls, returns and loop steps, with at
most one configuration per ``(q, depth)``: nodes that meet there are merged.
The form is canonical (a node is the trie of its stacks read from the top),
so equal DFA states are equal sets and are interned once.  DFA states and
their transition rows are created only when something reaches them.

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
from collections.abc import Hashable, Iterable, Sequence
from itertools import chain
from typing import Any, cast

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag, LazyHeads, Loop
from exl2_enforcer.engine import native
from exl2_enforcer.errors import EnforcerError, SchemaError

INF = 1 << 30
DEAD = -1
UNKNOWN = -2

Config = tuple[int, "StackNode"]  # (NFA state, StackNode)
#: an NFA state's epsilon reach: (states with byte edges, special states), each without repeats
EpsReach = tuple[tuple[int, ...], tuple[int, ...]]
#: where one NFA state goes on each byte class: ``(target states, class mask, class ranges)`` per
#: distinct target set, by first class; ranges are ``[first, end)`` pairs, the mask has bit c for class c
EdgeGroups = tuple[tuple[frozenset[int], int, tuple[tuple[int, int], ...]], ...]
#: the byte targets of a row segment: ``(target states, node)`` when they share one node, else
#: the frozenset of such pairs (one per node); equal target configurations give equal keys
StepKey = tuple[frozenset[int], "StackNode"] | frozenset[tuple[frozenset[int], "StackNode"]]


class StackNode(int):
    """A set of call stacks, all of the same nesting ``depth``, as a shared trie.

    ``frames`` is a tuple of ``(return state, parent node)`` sorted by return
    state, one entry per distinct top frame; the parent holds the stacks below
    it.  ``EMPTY`` (no frames, depth 0) is the empty stack.  The int value is
    the node's id, unique within its automaton across generations, so hashing
    and equality are C-level: an automaton interns each structure once, and
    equal ids mean the same set of stacks.
    """

    frames: tuple[tuple[int, StackNode], ...]
    depth: int

    def __new__(cls, uid: int, frames: tuple[tuple[int, StackNode], ...], depth: int) -> StackNode:
        node = int.__new__(cls, uid)
        node.frames = frames
        node.depth = depth
        return node

    def __repr__(self) -> str:
        return f"StackNode({int(self)}, depth={self.depth}, tops={[r for r, _p in self.frames]})"


EMPTY = StackNode(0, (), 0)


def predecessors(nfa: NFA, *, sealed_as_edges: bool = False) -> tuple[list[list[tuple[int, int]]], list[list[int]]]:
    """Reverse edges for backward fixpoints: (plain predecessors with byte weight, combo predecessors).

    A plain predecessor reaches a state by a byte edge (weight 1) or an epsilon
    edge (weight 0).  A combo predecessor is a call or lazy-head state whose
    value depends on the state (callee start, return state, loop exit...).
    ``sealed_as_edges``: a sealed block (see :class:`~.nfa.Sealed`) counts as one
    weight-0 edge from its first state to its exit, and its interior states get no
    entries (right for completion depth, where bytes weigh nothing).
    """
    n = len(nfa)
    spans = nfa.open_spans() if sealed_as_edges else [(0, n)]
    if len(spans) == 1 and spans[0] == (0, n):
        plain: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        combo: list[list[int]] = [[] for _ in range(n)]
    else:
        # interior states get no entries: they share one empty tuple instead of a list each
        plain = cast("list[list[tuple[int, int]]]", [()] * n)
        combo = cast("list[list[int]]", [()] * n)
        for a, b in [*spans, *((lo, lo + 1) for lo in nfa.sealed)]:
            plain[a:b] = [[] for _ in range(b - a)]
            combo[a:b] = [[] for _ in range(b - a)]
    edges, eps = nfa.edges, nfa.eps
    for a, b in spans:
        for q in range(a, b):
            for _lo, _hi, t in edges[q]:
                plain[t].append((q, 1))
            for t in eps[q]:
                plain[t].append((q, 0))
    if sealed_as_edges:
        for lo, block in nfa.sealed.items():
            plain[block.exit].append((lo, 0))
    for q, (callee, r, _w) in nfa.calls.items():
        combo[r].append(q)
        combo[callee.start].append(q)
    for q, (obj, _k) in nfa.loop_of.items():
        for dep in obj.deps():
            combo[dep].append(q)
    return plain, combo


def completion_depth(nfa: NFA, ends: Iterable[int], flat: tuple[np.ndarray, ...] | None = None) -> list[int]:
    """For each NFA state, the extra call depth needed to reach the end of its machine.

    ``INF`` means the state cannot finish at all.  Depth counts call weights
    (a ``$ref`` call weighs 1, loop iterations 0).  A bucket queue settles states
    in increasing depth (Knuth's generalisation of Dijkstra: a call's value is
    the max of its callee's and its return's), so each state is settled once.
    ``flat``: :func:`native.flatten_nfa` of the whole NFA when the caller has it already.
    """
    n = len(nfa)
    if native.enabled:
        got = _native_completion_depth(nfa, ends, flat)
        if got is not None:
            return got
    h = [INF] * n
    plain_preds, combo_preds = predecessors(nfa, sealed_as_edges=True)

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
    for lo, block in nfa.sealed.items():  # a sealed interior finishes as its first state does
        h[lo + 1:block.exit] = [h[lo]] * (block.exit - lo - 1)
    return h


def _native_completion_depth(nfa: NFA, ends: Iterable[int],
                             flat: tuple[np.ndarray, ...] | None = None) -> list[int] | None:
    """:func:`completion_depth` by the extension (the same depths: the same least fixpoint, settled in C
    over the flattened NFA; 5-12 ms of Python per compile of a 2,000-5,000-state schema); None when it
    is not built.  Calls and counted loops are combined natively; other lazy heads (objects in any order)
    call their ``head_depth``, which reads the depths so far."""
    n = len(nfa)
    flat = flat or native.flatten_nfa(nfa.edges, nfa.eps, n)
    if flat is None:
        return None
    e_ptr, _lo, _hi, e_t, p_ptr, p_t = flat
    combo_q: list[int] = []
    dep_t: list[int] = []
    term_dep: list[int] = []
    term_w: list[int] = []
    dep_ptr, term_ptr, by_callback = [0], [0], []
    for q, (callee, r, w) in nfa.calls.items():
        combo_q.append(q)
        dep_t += (r, callee.start)
        term_dep += (callee.start, r)
        term_w += (w, 0)
        by_callback.append(0)
        dep_ptr.append(len(dep_t))
        term_ptr.append(len(term_dep))
    for q, (obj, key) in nfa.loop_of.items():
        combo_q.append(q)
        dep_t += obj.deps()
        if type(obj) is Loop:  # Loop.head_depth in closed form
            terms = (obj.exit,) if cast(int, key) >= obj.lo else (obj.body.start, obj.exit)
            term_dep += terms
            term_w += [0] * len(terms)
            by_callback.append(0)
        else:
            by_callback.append(1)
        dep_ptr.append(len(dep_t))
        term_ptr.append(len(term_dep))
    seal_lo = list(nfa.sealed)
    seal_exit = [block.exit for block in nfa.sealed.values()]
    h = np.empty(n, dtype=np.int32)
    loop_of = nfa.loop_of

    def value(q: int) -> int:
        obj, key = loop_of[q]
        return int(obj.head_depth(key, h))  # type: ignore[arg-type]  # reads h like a list

    def ints(xs: Iterable[int]) -> np.ndarray:
        return np.fromiter(xs, dtype=np.int32)

    native.completion_depth(n, e_ptr, e_t, p_ptr, p_t, ints(seal_lo), ints(seal_exit), ints(combo_q), ints(dep_ptr),
                            ints(dep_t), ints(term_ptr), ints(term_dep), ints(term_w),
                            np.asarray(by_callback, dtype=np.uint8), value, ints(dict.fromkeys(ends)), h)
    out: list[int] = h.tolist()
    return out


def zero_weight_cycle(nfa: NFA, root: Frag, flat: tuple[np.ndarray, ...] | None = None) -> int | None:
    """A machine on a cycle of calls that weighs 0 and is reachable from ``root``, or None.

    Such a cycle recurses without entering an object or array, so no depth
    bound could stop it; a machine is named by its start state.  ``flat``: as
    for :func:`completion_depth`.
    """
    if native.enabled:
        flat = flat or native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
        if flat is not None:
            return _native_zero_weight_cycle(nfa, root, flat)
    calls_of: dict[int, list[tuple[int, int]]] = {}

    def callees(start: int) -> list[tuple[int, int]]:
        got = calls_of.get(start)
        if got is not None:
            return got
        out: list[tuple[int, int]] = []
        seen, todo = {start}, [start]
        while todo:
            q = todo.pop()
            block = nfa.sealed.get(q)
            # a sealed block holds no call: only its exit leads on
            nxt = [block.exit] if block is not None else [*(t for _lo, _hi, t in nfa.edges[q]), *nfa.eps[q]]
            call = nfa.calls.get(q)
            if call is not None:
                out.append((call[0].start, call[2]))
                nxt.append(call[1])
            head = nfa.loop_of.get(q)
            if head is not None:
                obj = head[0]
                out += [(d, 0) for d in obj.deps() if d != obj.exit]
                nxt.append(obj.exit)
            for t in nxt:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        calls_of[start] = out
        return out

    # iterative depth-first search over weight-0 call edges; every machine is a root of it
    # once, reachable ones first (a machine no path calls cannot hang a closure)
    color: dict[int, int] = {}
    order = [root.start]
    seen_any = {root.start}
    i = 0
    while i < len(order):
        for c, _w in callees(order[i]):
            if c not in seen_any:
                seen_any.add(c)
                order.append(c)
        i += 1
    for top in order:
        if top in color:
            continue
        color[top] = 1
        stack = [(top, iter(callees(top)))]
        while stack:
            m, it = stack[-1]
            for c, w in it:
                if w:
                    continue
                if color.get(c) == 1:
                    return c
                if c not in color:
                    color[c] = 1
                    stack.append((c, iter(callees(c))))
                    break
            else:
                color[m] = 2
                stack.pop()
    return None


def _native_zero_weight_cycle(nfa: NFA, root: Frag, flat: tuple[np.ndarray, ...]) -> int | None:
    """:func:`zero_weight_cycle` by the extension: the same walks and search order, so the same machine
    (3-10 ms of Python per compile of a 2,000-5,000-state schema)."""
    e_ptr, _lo, _hi, e_t, p_ptr, p_t = flat
    # per special state, in the Python walk's order: the machines it calls, then where its walk goes on
    special: dict[int, tuple[list[tuple[int, int]], list[int]]] = {}
    for q, (callee, r, w) in nfa.calls.items():
        special[q] = ([(callee.start, w)], [r])
    for q, (obj, _key) in nfa.loop_of.items():
        outs, more = special.setdefault(q, ([], []))
        outs += [(d, 0) for d in obj.deps() if d != obj.exit]
        more.append(obj.exit)
    out_t: list[int] = []
    out_w: list[int] = []
    more_t: list[int] = []
    out_ptr, more_ptr = [0], [0]
    for outs, more in special.values():
        out_t += [c for c, _w in outs]
        out_w += [w for _c, w in outs]
        more_t += more
        out_ptr.append(len(out_t))
        more_ptr.append(len(more_t))

    def ints(xs: Iterable[int]) -> np.ndarray:
        return np.fromiter(xs, dtype=np.int32)

    return native.zero_weight_cycle(len(nfa), e_ptr, e_t, p_ptr, p_t, ints(nfa.sealed),
                                    ints(b.exit for b in nfa.sealed.values()), ints(special), ints(out_ptr),
                                    ints(out_t), ints(out_w), ints(more_ptr), ints(more_t), root.start)


class DfaState:
    """One lazily built DFA state: its configurations and whether it accepts."""

    __slots__ = ("accepting", "configs")

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
        #: bumped by :meth:`evict`; a state id is only meaningful within its generation
        self.generation = 0
        #: odd while :meth:`evict` runs, bumped twice per eviction: a reader that saw the same even
        #: value before and after reading ``table``/``states`` without the lock read one generation
        self.seq = 0
        self.lock = threading.RLock()
        # Which machine a return state belongs to: return state -> (callee end, weight).
        self._ret_info: dict[int, tuple[int, int]] = {r: (callee.end, w) for callee, r, w in nfa.calls.values()}
        ends = {root.end} | {callee.end for callee, _r, _w in nfa.calls.values()}
        ends |= {obj.callee_end for obj, _k in nfa.loop_of.values()}
        nfa.freeze()  # the automaton owns it from here: lists become tuples the collector skips
        # the NFA as arrays, once for the whole-NFA passes and the native tables (None: numpy walks)
        self._flat = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa)) if native.enabled else None
        looping = zero_weight_cycle(nfa, root, self._flat)
        if looping is not None:
            where = nfa.machine_names.get(looping, "")
            raise SchemaError("recursion through $ref reaches itself without entering an object or array"
                              " (it consumes no input)", where, keyword="$ref")
        self._h = completion_depth(nfa, ends, self._flat)
        if self._h[root.start] > max_depth:
            raise EnforcerError("the constraint admits no value" if self._h[root.start] >= INF
                                else f"the constraint needs nesting deeper than max_depth={max_depth} levels of"
                                " objects/arrays; raise SchemaOptions.max_depth (CLI --max-depth)")
        self.class_of_byte, self.n_classes, self.class_rep = _byte_classes(nfa)
        self._class_list: list[int] = self.class_of_byte.tolist()
        # per NFA state, bounded by the NFA: kept across evictions
        self._body_tops_cache: dict[int, frozenset[int]] = {}
        self._starts_cache: dict[tuple[int, str], bool] = {}
        self._eps_cache: dict[int, EpsReach] = {}
        self._eps_skip: dict[int, tuple[int, ...]] = {}
        self._moves_cache: dict[int, tuple[tuple[int | None, int], ...]] = {}
        self._head_depths: dict[int, int] = {}
        self._groups_cache: dict[int, tuple[EdgeGroups, int]] = {}
        #: byte ranges of a character class -> its class ranges and mask (bounded by the NFA's edges)
        self._range_shapes: dict[tuple[tuple[int, int], ...], tuple[tuple[tuple[int, int], ...], int]] = {}
        self._special = frozenset(ends)
        # heads made later are found through nfa.loop_of (states from n_fixed on)
        self._fixed_specials = self._special | frozenset(nfa.calls) | frozenset(nfa.loop_of)
        self._n_fixed = len(nfa)
        #: explored (state, node) pairs over all closures: a work counter for tests
        self.closure_work = 0
        #: the native plain-step tables (engine/native.py): their copy of the NFA is made once (its
        #: bytes: ``native_fixed_bytes``, fixed like the NFA's), the steps derived from it grow with
        #: use (``native_bytes``, part of ``state_bytes``) and go with an eviction
        self._native_tables: Any = None
        self.native_fixed_bytes = 0
        self.native_bytes = 0
        #: the part of ``state_bytes`` the native rows interned themselves (:meth:`interner`)
        self.native_interned = 0
        self._next_uid = 1  # node ids stay unique across evictions
        self._reset_states()
        self.start = self._step_targets([(root.start, EMPTY)])
        if native.enabled:  # the NFA in array form is part of compiling, not of the first mask
            self._native_tables = native.nfa_tables(self)
            if self._native_tables is not None:
                native.count_tables(self, self._native_tables)
        self._flat = None  # its copy lives in the native tables

    def _reset_states(self) -> None:
        self.states: list[DfaState] = []
        self._index: dict[tuple[frozenset[Config], bool], int] = {}
        self._closure_cache: dict[Config, tuple[tuple[Config, ...], bool]] = {}
        #: byte targets of a row segment -> the DFA state they lead to (shared by all rows)
        self._step_memo: dict[StepKey, int] = {}
        #: (state, slice kind, elements) -> slice_advance's answer (warm matchers step plain tokens by it)
        self._advances: dict[tuple[int, str, int], int | None] = {}
        #: state -> :meth:`ws_budget` (asked by every native trie walk that meets the state)
        self._ws_budgets: dict[int, int] = {}
        #: stack node -> :meth:`_slice_frame` (asked for every configuration of every state masked)
        self._slice_frames: dict[StackNode, int | None] = {}
        #: state -> :meth:`slice_budget` (asked for every mask computed and most tokens accepted)
        self._slice_budgets: dict[int, tuple[str, int | None] | None] = {}
        #: a plain step's configurations (sorted int32 (NFA state, node id) pairs) -> their DFA state
        self._plain_memo: dict[bytes, int] = {}
        #: the byte targets of a step that is not plain (same form) -> the DFA state they lead to
        self._escape_memo: dict[bytes, int] = {}
        #: (NFA state << 32 | node id) -> the configuration tuple the plain sets share (a fresh tuple
        #: per pair and set made the garbage collector sweep the whole heap on wide rows)
        self._plain_configs: dict[int, Config] = {}
        #: how many of ``_plain_configs`` are counted in ``state_bytes`` (:meth:`count_native`)
        self._made_counted = 0
        self._nodes: dict[tuple[Any, ...], StackNode] = {(0, ()): EMPTY}
        #: bytes held by states, closures and stack nodes (an estimate; rows are in table.nbytes)
        self.state_bytes = 0
        self.table = np.full((64, self.n_classes), UNKNOWN, dtype=np.int32)
        #: whether each state's whole row is computed (single cells may be known before that)
        self.row_done = np.zeros(64, dtype=bool)

    # -- memory ------------------------------------------------------------------
    def retained_bytes(self) -> int:
        """Bytes held by DFA states, their rows, closures and stack nodes (an estimate, in bytes)."""
        return self.state_bytes + self.table.nbytes

    def evict(self) -> None:
        """Drop every DFA state, row, closure and stack node, and start a new generation.

        Callers holding state ids re-intern them with :meth:`reintern` from the
        :class:`DfaState` objects they kept (see :class:`~.matcher.Matcher`).
        Takes the lock; rows in use by a running walk are never dropped because
        walks run under the same lock.
        """
        with self.lock:
            self.seq += 1
            self._reset_states()
            self.generation += 1
            if self._native_tables is not None:
                # the steps go (the budget counts them); copying the NFA again would cost every
                # eviction as much as a compile's copy, for memory an eviction cannot free for long
                native.clear_tables(self._native_tables)
            self.native_bytes = 0
            self.native_interned = 0
            self.start = self._step_targets([(self.root.start, EMPTY)])
            self.seq += 1

    def reintern(self, state: DfaState) -> int:
        """The id of ``state`` (a :class:`DfaState` of any generation) in the current generation."""
        with self.lock:
            sid = self._index.get((state.configs, state.accepting))
            if sid is None:
                for _q, node in state.configs:
                    self._adopt(node)
                sid = self._intern(state.configs, state.accepting)
            return sid

    def _adopt(self, node: StackNode) -> None:
        """Register an older generation's ``node`` and its ancestors as this generation's own.

        New nodes of the same structure then reuse these ids, so the re-interned
        state and the states built from it keep comparing equal.
        """
        todo = [node]
        while todo:
            n = todo.pop()
            key = (n.depth, n.frames)
            if key in self._nodes:
                continue
            self._nodes[key] = n
            self.state_bytes += _NODE_BYTES + _FRAME_BYTES * len(n.frames)
            todo.extend(p for _r, p in n.frames)

    # -- graph-structured stacks -------------------------------------------------
    def _node(self, frames: tuple[tuple[int, StackNode], ...], depth: int) -> StackNode:
        """The interned node with these (sorted) frames."""
        key = (depth, frames)
        got = self._nodes.get(key)
        if got is None:
            got = self._nodes[key] = StackNode(self._next_uid, frames, depth)
            self._next_uid += 1
            self.state_bytes += _NODE_BYTES + _FRAME_BYTES * len(frames)
        return got

    def _push(self, r: int, parent: StackNode, weight: int) -> StackNode:
        return self._node(((r, parent),), parent.depth + weight)

    def _union(self, nodes: frozenset[StackNode], memo: dict[frozenset[StackNode], StackNode]) -> StackNode:
        """The node holding the stacks of all ``nodes`` (one depth): their frames joined per return
        state, the parents under one return state joined in turn.

        One pass per set of nodes, not a fold of pairs: a state that many callers reach (a
        shared ``$ref`` in each of 200 ``anyOf`` branches) would otherwise re-sort a growing
        frame list once per caller.  Iterative (parents first), so stacks deeper than Python's
        recursion limit merge too.
        """
        todo = [nodes]
        while todo:
            group = todo[-1]
            if group in memo:
                todo.pop()
                continue
            parents: dict[int, set[StackNode]] = {}
            for node in group:
                for r, p in node.frames:
                    got = parents.get(r)
                    if got is None:
                        parents[r] = {p}
                    else:
                        got.add(p)
            joined = {r: frozenset(ps) for r, ps in parents.items() if len(ps) > 1}
            pending = [ps for ps in joined.values() if ps not in memo]
            if pending:
                todo.extend(pending)
                continue
            frames = [(r, memo[joined[r]] if r in joined else next(iter(ps))) for r, ps in parents.items()]
            frames.sort(key=_first)
            memo[group] = self._node(tuple(frames), next(iter(group)).depth)
            todo.pop()
        return memo[nodes]

    def _canonical(self, configs: Iterable[Config]) -> tuple[Config, ...]:
        """``configs`` with the nodes of equal (state, depth) merged: one configuration per pair."""
        merged: dict[tuple[int, int], set[StackNode]] = {}
        for q, node in configs:
            key = (q, node.depth)
            got = merged.get(key)
            if got is None:
                merged[key] = {node}
            else:
                got.add(node)
        memo: dict[frozenset[StackNode], StackNode] = {}
        out = []
        for (q, _d), nodes in merged.items():
            if len(nodes) == 1:
                (node,) = nodes
            else:
                node = self._union(frozenset(nodes), memo)
            out.append((q, node))
        return tuple(out)

    # -- configuration closure ---------------------------------------------------
    def _return_end(self, r: int) -> int:
        """The end state of the machine whose caller waits at return state ``r``."""
        info = self._ret_info.get(r)
        if info is not None:
            return info[0]
        obj, _k = self.nfa.loop_of[r]
        return obj.callee_end

    def _eps_reach(self, q: int) -> EpsReach:
        """States reachable from ``q`` by epsilon edges: (those with byte edges, special ones).

        Special states (calls, loop heads, machine ends) need the stack and are
        handled by :meth:`_closure`; everything else is a static graph search,
        cached per state.
        """
        got = self._eps_cache.get(q)
        if got is not None:
            return got
        nfa, skip = self.nfa, self._eps_skip
        if not nfa.eps[q]:  # e.g. inside a literal
            got = ((q,) if nfa.edges[q] else (), (q,) if self._is_special(q) else ())
            self._eps_cache[q] = got
            return got
        edges, fixed, n_fixed = nfa.edges, self._fixed_specials, self._n_fixed
        seen, todo = {q}, [q]
        with_edges: list[int] = []
        specials: list[int] = []
        while todo:
            x = todo.pop()
            if edges[x]:
                with_edges.append(x)
            if x in fixed or (x >= n_fixed and x in nfa.loop_of):
                specials.append(x)
            nexts = skip.get(x)
            if nexts is None:
                nexts = self._skip_through(x)
            for t in nexts:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        got = (tuple(with_edges), tuple(specials))
        self._eps_cache[q] = got
        return got

    def _is_special(self, q: int) -> bool:
        """Whether ``q`` is a call, a lazy head or a machine end (needs the stack in a closure)."""
        return q in self._fixed_specials or (q >= self._n_fixed and q in self.nfa.loop_of)

    def _skip_through(self, x: int) -> tuple[int, ...]:
        """``x``'s epsilon successors, each moved past the states that only pass on to one other.

        Most states of a compiled schema have no byte edge, are not special and have a
        single epsilon edge (the glue of sequences and optionals); a search that steps
        over them at once visits a fraction of the states.  Cached per state.
        """
        eps, edges, skip = self.nfa.eps, self.nfa.edges, self._eps_skip
        nexts: list[int] = []
        for t in eps[x]:
            path: list[int] = []
            while len(eps[t]) == 1 and not edges[t] and not self._is_special(t):
                known = skip.get(t)
                if known is not None:
                    if known:  # else t is on this path: a cycle that leads nowhere else
                        t = known[0]
                    break
                path.append(t)
                skip[t] = ()  # marks t as on the path: a cycle of pass-through states ends here
                t = eps[t][0]
            for p in path:
                skip[p] = (t,)
            nexts.append(t)
        got = skip[x] = tuple(nexts)
        return got

    def _closure(self, config: Config) -> tuple[tuple[Config, ...], bool]:
        """Configurations reachable from ``config`` without reading a byte (cached).

        Each explored pair ``(state, node)`` is visited once; a return fans out
        over the node's top frames, so the work is bounded by the states times
        the nodes reachable below, not by the number of stacks they stand for.
        """
        cached = self._closure_cache.get(config)
        if cached is not None:
            return cached
        limit, hd, h = self.max_depth, self._state_depth, self._h
        eps_cache = self._eps_cache
        q0, node0 = config
        reach0 = eps_cache.get(q0) or self._eps_reach(q0)
        if not reach0[1]:
            return self._plain_closure(config, reach0[0])
        out: list[Config] = []
        accepting = False
        seen = {config}
        todo = [config] if node0.depth + hd(q0) <= limit else []
        work = 0
        n_fixed, root_end = len(h), self.root.end
        moves_of = self._special_moves
        states: set[int] = set()
        while todo:
            q_at, node = todo.pop()
            reach = eps_cache.get(q_at) or self._eps_reach(q_at)
            with_edges, specials = reach
            work += 1 + len(with_edges) + len(specials)
            room = limit - node.depth
            # states with byte edges all predate the depth fixpoint (lazy heads have none); plain
            # loops, not comprehensions: each of those is a call of its own in this Python
            for e in with_edges:
                if h[e] <= room:
                    out.append((e, node))
                    states.add(e)
            for q in specials:
                if (h[q] if q < n_fixed else hd(q)) > room:
                    continue
                if q == root_end and not node.frames:
                    accepting = True
                for nxt in moves_of(q, node):
                    if nxt in seen:
                        continue
                    q_next = nxt[0]
                    if nxt[1].depth + (h[q_next] if q_next < n_fixed else hd(q_next)) > limit:
                        continue
                    seen.add(nxt)
                    todo.append(nxt)
        self.closure_work += work
        # only configurations of one NFA state can need their nodes merged
        result = (tuple(out) if len(states) == len(out) else self._canonical(out), accepting)
        self._closure_cache[config] = result
        self.state_bytes += _CLOSURE_BYTES + _CONFIG_BYTES * len(out)
        return result

    def _plain_closure(self, config: Config, with_edges: tuple[int, ...]) -> tuple[tuple[Config, ...], bool]:
        """:meth:`_closure` of a configuration whose epsilon reach holds no call, loop head or end.

        The stack then never changes, so the closure is the reach's states with byte
        edges on the same node (the same configurations, in the same order, as the search).
        """
        q0, node = config
        room = self.max_depth - node.depth
        if self._state_depth(q0) > room:
            out: tuple[Config, ...] = ()
        else:
            h = self._h
            out = tuple([(e, node) for e in with_edges if h[e] <= room])
            self.closure_work += 1 + len(with_edges)
        result = (out, False)
        self._closure_cache[config] = result
        self.state_bytes += _CLOSURE_BYTES + _CONFIG_BYTES * len(out)
        return result

    def _special_moves(self, q: int, node: StackNode) -> list[Config]:
        """Where a call, a lazy head or a machine end at ``q`` leads, with ``node`` below."""
        nfa, limit, hd = self.nfa, self.max_depth, self._state_depth
        depth = node.depth
        nexts: list[Config] = []
        call = nfa.calls.get(q)
        if call is not None:
            callee, r, w = call
            # the caller's frame must also be able to finish after the return
            if depth + hd(r) <= limit:
                nexts.append((callee.start, self._push(r, node, w)))
        moves = self._moves_cache.get(q)
        if moves is None and q in nfa.loop_of:
            moves = self._head_moves(q)
        if moves is not None:
            for body_start, target in moves:
                if body_start is None:
                    nexts.append((target, node))
                elif depth + hd(target) <= limit:
                    nexts.append((body_start, self._push(target, node, 0)))
        if q in self._special:  # a machine end: return to the frames waiting for it
            for r, parent in node.frames:
                if q == self._return_end(r):
                    nexts.append((r, parent))
        return nexts

    def _head_moves(self, q: int) -> tuple[tuple[int | None, int], ...]:
        """:meth:`LazyHeads.moves` of the head ``q``: fixed once its heads exist, so cached per state."""
        obj, key = self.nfa.loop_of[q]
        got = self._moves_cache[q] = tuple(obj.moves(self.nfa, key))
        return got

    def _state_depth(self, q: int) -> int:
        """Completion depth of ``q``; loop heads made after the fixpoint are derived (and cached)."""
        if q < len(self._h):
            return self._h[q]
        got = self._head_depths.get(q)
        if got is None:
            obj, key = self.nfa.loop_of[q]
            got = self._head_depths[q] = obj.head_depth(key, self._h)
        return got

    # -- DFA states --------------------------------------------------------------
    def _intern(self, configs: frozenset[Config], accepting: bool) -> int:
        # acceptance is part of a state's identity: the root's end has no byte edge, so it is
        # not among the configurations ("[a-c]*b" has the same ones before and after reading "b")
        key = (configs, accepting)
        sid = self._index.get(key)
        if sid is not None:
            return sid
        sid = len(self.states)
        self.states.append(DfaState(configs, accepting))
        self._index[key] = sid
        self.state_bytes += _STATE_BYTES + _CONFIG_BYTES * len(configs)
        if sid >= self.table.shape[0]:
            grown = np.full((self.table.shape[0] * 2, self.n_classes), UNKNOWN, dtype=np.int32)
            grown[: self.table.shape[0]] = self.table
            done = np.zeros(grown.shape[0], dtype=bool)
            done[: self.row_done.shape[0]] = self.row_done
            # the table first: a state id is written into a cell only after both are stored
            self.table, self.row_done = grown, done
        return sid

    def ensure_rows(self, sids: Iterable[int]) -> None:
        """Compute the whole transition rows of the given DFA states if not done yet."""
        todo = [s for s in sids if not self.row_done[s]]
        if not todo:
            return
        with self.lock:
            for s in todo:
                if not self.row_done[s]:
                    self._compute_row(s)

    def has_row(self, sid: int) -> bool:
        """Whether the whole row of ``sid`` is computed."""
        return bool(self.row_done[sid])

    def _compute_cell(self, sid: int, c: int) -> None:
        """Only ``table[sid, c]``: a byte-by-byte walk leaves most states by one class, and the
        other classes' target sets (closures, new DFA states) would be built for nothing."""
        self.table[sid, c] = self._cell_target(sid, c)

    def _cell_target(self, sid: int, c: int) -> int:
        """The DFA state after a byte of class ``c`` in ``sid``, built from the configurations."""
        bit = 1 << c
        labels: list[tuple[frozenset[int], StackNode]] = []
        cache = self._groups_cache
        for q, node in self.states[sid].configs:
            got = cache.get(q)
            groups, mask = got if got is not None else self._edge_groups(q)
            if mask & bit:
                labels += [(targets, node) for targets, gmask, _spans in groups if gmask & bit]
        if not labels:
            return DEAD
        joined = labels if len(labels) == 1 else _by_node(labels)
        key: StepKey = joined[0] if len(joined) == 1 else frozenset(joined)
        nid = self._step_memo.get(key)
        if nid is None:
            nid = self._step_key(key, joined)
        return nid

    def _compute_row(self, sid: int) -> None:
        if native.enabled and self._native_row(sid):
            return
        # A row is built from the configurations' edge groups (cached per NFA state):
        # one step per distinct target set, written over the classes that lead there.
        parts: list[tuple[EdgeGroups, StackNode]] = []
        covered = 0
        overlap = False
        cache = self._groups_cache
        for q, node in self.states[sid].configs:
            got = cache.get(q)
            groups, mask = got if got is not None else self._edge_groups(q)
            if covered & mask:
                overlap = True
            covered |= mask
            parts.append((groups, node))
        row = [DEAD] * self.n_classes
        if overlap:
            self._fill_overlapping(parts, row)
        else:
            self._fill_disjoint(parts, row)
        self.table[sid] = row
        self.row_done[sid] = True

    def _native_row(self, sid: int) -> bool:
        """Compute ``sid``'s row with the native plain steps (``engine/_walk.c``); False when they
        cannot (tables full, or the extension is missing), and the row is left to :meth:`_compute_row`.

        The native code moves each configuration along the NFA on its own node and keys each
        set it reaches by bytes; a new set is interned by :meth:`_intern_plain`.  Classes where
        the stack would change are keyed by their byte targets and stepped by :meth:`_escape_step`.
        """
        tables = self._native_tables
        if tables is None:
            tables = self._native_tables = native.nfa_tables(self)
            if tables is None:
                return False
        try:
            if not native.plain_row(tables, self, sid, self.states[sid].configs, self.max_depth, self._plain_memo,
                                    self._escape_memo, self._plain_configs, self._intern_plain, self._escape_step,
                                    self.interner()):
                return False
        finally:  # the tables grow even when the row is left to Python or a callback raised
            self.count_native()
        self.row_done[sid] = True
        return True

    def row_context(self) -> tuple[Any, ...] | None:
        """What a native walk needs to build missing rows as :meth:`_native_row` does, without a
        Python call per row (``engine/_walk.c``, ``direct_row``): the tables, the states, the memos
        and callbacks of this generation and its number (the walk takes :meth:`step_row` for every
        row once an eviction changes it).  None when the native rows are off or not built.  The
        walk must run under :attr:`lock` and call :meth:`count_native` after it, whatever its end.
        """
        if not native.enabled:
            return None
        tables = self._native_tables
        if tables is None:
            tables = self._native_tables = native.nfa_tables(self)
            if tables is None:
                return None
            self.count_native()
        return (tables, self.states, self.max_depth, self._plain_memo, self._escape_memo, self._plain_configs,
                self._intern_plain, self._escape_step, self.generation, self.interner())

    def interner(self) -> tuple[Any, ...] | None:
        """What the native rows need to intern a new plain set themselves, as :meth:`_intern_plain` does
        for a set without repeated NFA states, instead of calling it: this generation's states and index,
        the :class:`DfaState` class and the byte estimates of a state, a configuration and a memo entry.
        None when :data:`native.c_intern` is off (every new set goes through the callback).  What the
        native code interns is counted in ``state_bytes`` by :meth:`count_native`."""
        if not native.c_intern:
            return None
        return (self.states, self._index, DfaState, _STATE_BYTES, _CONFIG_BYTES, _MEMO_BYTES)

    def count_native(self) -> None:
        """Count what the native rows added since the last count: the tables' derived steps and the
        states they interned (:func:`native.count_tables`), and the configuration tuples new in
        ``_plain_configs`` (which only grows within a generation)."""
        if self._native_tables is not None:
            native.count_tables(self, self._native_tables)
        made = len(self._plain_configs)
        self.state_bytes += _MEMO_BYTES * (made - self._made_counted)
        self._made_counted = made

    def _intern_plain(self, key: bytes, pairs: list[Config], repeats: bool) -> int:
        """The DFA state of a plain step's configurations ``pairs`` (``repeats``: an NFA state occurs
        on two nodes), remembered under ``key``, their sorted ``(NFA state, node id)`` int32 pairs."""
        if repeats:  # nodes of one depth under one NFA state are merged
            pairs = list(self._canonical(pairs))
        nid = self._plain_memo[key] = self._intern(frozenset(pairs), False)
        self.state_bytes += _MEMO_BYTES + len(key)
        return nid

    def _escape_step(self, key: bytes, pairs: list[Config], _repeats: bool) -> int:
        """The DFA state after the byte targets ``pairs`` of a step that changes the stack (a call, loop
        head or machine end), remembered under ``key`` (as in :meth:`_intern_plain`)."""
        nid = self._escape_memo[key] = self._step_targets(pairs)
        self.state_bytes += _MEMO_BYTES + len(key)
        return nid

    def _fill_disjoint(self, parts: list[tuple[EdgeGroups, StackNode]], row: list[int]) -> None:
        """Fill ``row`` when no two configurations read a byte of the same class."""
        memo = self._step_memo
        if len(parts) == 1:
            ((groups, node),) = parts
            for targets, _mask, spans in groups:
                key = (targets, node)
                nid = memo.get(key)
                if nid is None:
                    nid = self._step_key(key, [key])
                for a, b in spans:
                    row[a:b] = [nid] * (b - a)
            return
        # first classes first, so new DFA states are numbered as a sweep over classes would
        flat = [(spans[0][0], (targets, node), spans) for groups, node in parts for targets, _mask, spans in groups]
        flat.sort(key=lambda item: item[0])
        for _first_class, key, spans in flat:
            nid = memo.get(key)
            if nid is None:
                nid = self._step_key(key, [key])
            for a, b in spans:
                row[a:b] = [nid] * (b - a)

    def _fill_overlapping(self, parts: list[tuple[EdgeGroups, StackNode]], row: list[int]) -> None:
        """Fill ``row`` when configurations share classes: split the classes by which groups cover them."""
        blocks: list[tuple[int, list[tuple[frozenset[int], StackNode]]]] = []
        for groups, node in parts:
            for targets, mask, _spans in groups:
                label = (targets, node)
                # blocks stay disjoint, each holding the classes of one set of covering groups
                for i in range(len(blocks)):
                    block, labels = blocks[i]
                    both = block & mask
                    if both:
                        if both == block:
                            labels.append(label)
                        else:
                            blocks[i] = (block ^ both, labels)
                            blocks.append((both, labels + [label]))
                        mask ^= both
                        if not mask:
                            break
                if mask:
                    blocks.append((mask, [label]))
        # lowest class first, so new DFA states are numbered as a sweep over classes would
        blocks.sort(key=_lowest_bit)
        memo = self._step_memo
        for block, labels in blocks:
            joined = labels if len(labels) == 1 else _by_node(labels)
            key: StepKey = joined[0] if len(joined) == 1 else frozenset(joined)
            nid = memo.get(key)
            if nid is None:
                nid = self._step_key(key, joined)
            while block:
                low = block & -block
                above = block + low  # clears the lowest run of ones, sets the bit just past it
                a, b = low.bit_length() - 1, (above & -above).bit_length() - 1
                row[a:b] = [nid] * (b - a)
                block &= above

    def _edge_groups(self, q: int) -> tuple[EdgeGroups, int]:
        """NFA state ``q``'s byte edges over classes, grouped by target set, and the mask of their classes.

        Cached per NFA state (kept across evictions, bounded by the NFA).
        """
        edges = self.nfa.edges[q]
        first = edges[0][2]
        for _lo, _hi, t in edges:
            if t != first:
                got = self._groups_cache[q] = self._mixed_groups(edges)
                return got
        # one target (a character class), and its ranges shared by the copies of a repeat
        key = tuple([(lo, hi) for lo, hi, _t in edges])
        shape = self._range_shapes.get(key)
        if shape is None:
            cls = self._class_list
            joined = _join_ranges(sorted([(cls[lo], cls[hi] + 1) for lo, hi in key]))
            shape = self._range_shapes[key] = (joined, _range_mask(joined))
        joined, mask = shape
        got = self._groups_cache[q] = (((frozenset((first,)), mask, joined),), mask)
        return got

    def _mixed_groups(self, edges: Sequence[tuple[int, int, int]]) -> tuple[EdgeGroups, int]:
        """:meth:`_edge_groups` of edges to several targets: split the classes where targets change."""
        cls = self._class_list
        spans = sorted([(cls[lo], cls[hi] + 1, t) for lo, hi, t in edges])
        by_targets: dict[frozenset[int], list[tuple[int, int]]] = {}
        if all(spans[i - 1][1] <= spans[i][0] for i in range(1, len(spans))):
            for a, b, t in spans:  # e.g. UTF-8 lead bytes, each to its own continuation
                by_targets.setdefault(frozenset((t,)), []).append((a, b))
        else:
            points = sorted({a for a, _b, _t in spans} | {b for _a, b, _t in spans})
            for a, b in zip(points, points[1:]):
                targets = frozenset([t for lo, hi, t in spans if lo <= a < hi])
                if targets:
                    by_targets.setdefault(targets, []).append((a, b))
        groups: list[tuple[frozenset[int], int, tuple[tuple[int, int], ...]]] = []
        covered = 0
        for targets, ranges in by_targets.items():  # dicts keep first-seen order: by first class
            joined = _join_ranges(ranges)
            mask = _range_mask(joined)
            covered |= mask
            groups.append((targets, mask, joined))
        return tuple(groups), covered

    def _step_key(self, key: StepKey, groups: list[tuple[frozenset[int], StackNode]]) -> int:
        """The DFA state a row segment leads to, remembered under ``key`` for every row of this generation."""
        targets = [(t, node) for ts, node in groups for t in ts]
        nid = self._step_memo[key] = self._step_targets(targets)
        # a (targets, node) key shares its targets with the edge groups; a key of several nodes is a new set
        self.state_bytes += _MEMO_BYTES if len(groups) == 1 else _MEMO_BYTES + _SET_BYTES + _PAIR_BYTES * len(groups)
        return nid

    def _step_targets(self, targets: Iterable[Config]) -> int:
        """The DFA state of the closure of ``targets``, in canonical form (one node per state and depth)."""
        cache = self._closure_cache
        parts: list[tuple[Config, ...]] = []
        accepting = False
        for target in targets:
            got = cache.get(target)
            if got is None:
                got = self._closure(target)
            parts.append(got[0])
            if got[1]:
                accepting = True
        if len(parts) == 1:
            configs = parts[0]  # already canonical
        else:
            configs = self._merge_closures(parts)
        if not configs and not accepting:
            return DEAD
        return self._intern(frozenset(configs), accepting)

    def _merge_closures(self, parts: list[tuple[Config, ...]]) -> tuple[Config, ...]:
        """The canonical union of several closures."""
        flat = tuple([c for part in parts for c in part])
        # nodes can only need merging where one NFA state occurs twice
        if len({q for q, _node in flat}) == len(flat):
            return flat
        return self._canonical(flat)

    # -- the NFA as arrays (native plain rows) ------------------------------------
    def nfa_arrays(self) -> tuple[np.ndarray, ...]:
        """The NFA's fixed states as int32 arrays, for the native plain rows: byte edges in class
        space (CSR pointers, first class, end class, target), epsilon edges (CSR pointers, target),
        whether each state is a call, loop head or machine end, and its completion depth."""
        n = self._n_fixed
        flat = self._flat or native.flatten_nfa(self.nfa.edges, self.nfa.eps, n)  # part of every compile
        e_ptr, e_lo, e_hi, e_t, p_ptr, p_t = flat if flat is not None else self._flatten_nfa(n)
        e_clo = self.class_of_byte[e_lo]
        e_chi = self.class_of_byte[e_hi] + 1
        special = np.zeros(n, dtype=np.int32)
        special[[q for q in self._fixed_specials if q < n]] = 1
        h = np.array(self._h[:n], dtype=np.int32)  # INF (2**30) fits
        return e_ptr, e_clo.astype(np.int32), e_chi.astype(np.int32), e_t, p_ptr, p_t, special, h

    def _flatten_nfa(self, n: int) -> tuple[np.ndarray, ...]:
        """:func:`native.flatten_nfa` in numpy (the same arrays, when the extension is not built)."""
        edges, eps = self.nfa.edges[:n], self.nfa.eps[:n]
        e_len = np.fromiter(map(len, edges), dtype=np.int32, count=n)
        p_len = np.fromiter(map(len, eps), dtype=np.int32, count=n)
        n_edges = int(e_len.sum())
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(edges)), dtype=np.int32, count=3 * n_edges)
        lo_hi_t = flat.reshape(n_edges, 3)
        p_t = np.fromiter(chain.from_iterable(eps), dtype=np.int32, count=int(p_len.sum()))
        return (np.r_[0, np.cumsum(e_len)].astype(np.int32), np.ascontiguousarray(lo_hi_t[:, 0]),
                np.ascontiguousarray(lo_hi_t[:, 1]), np.ascontiguousarray(lo_hi_t[:, 2]),
                np.r_[0, np.cumsum(p_len)].astype(np.int32), p_t)

    # -- vocabulary-slice fast path ----------------------------------------------
    def _slice_frame(self, node: StackNode) -> int | None:
        """A slice loop head ``node`` returns to; None if it returns to none, -1 if mixed.

        Several top frames qualify when they are all heads of loops of one shape
        (same body, kind, bounds and count): e.g. the ``name`` strings of two
        ``anyOf`` branches still open together.  They then take the same
        tokens, and the mask is exact for all of them at once.  Remembered per node: a
        few hundred nodes serve thousands of states, each asked when it is first masked.
        """
        got = self._slice_frames.get(node, UNKNOWN)
        if got == UNKNOWN:
            got = self._slice_frames[node] = self._find_slice_frame(node)
            self.state_bytes += _MEMO_BYTES
        return got

    def _find_slice_frame(self, node: StackNode) -> int | None:
        loop_of = self.nfa.loop_of
        frames = node.frames
        if len(frames) == 1:  # the usual node: no list to build
            got = loop_of.get(frames[0][0])
            return frames[0][0] if got is not None and got[0].slice_kind else None
        heads = [r for r, _p in frames if r in loop_of and loop_of[r][0].slice_kind]
        if not heads:
            return None
        if len(heads) != len(node.frames):
            return -1
        shape = _loop_shape(*loop_of[heads[0]])
        return heads[0] if all(_loop_shape(*loop_of[r]) == shape for r in heads[1:]) else -1

    def slice_budget(self, sid: int) -> tuple[str, int | None] | None:
        """Whether state ``sid`` can take a whole vocabulary slice at once.

        That holds when ``sid`` sits at an element boundary of exactly one
        slice loop (plain string characters, or whitespace bytes) and no other
        configuration can start on a byte of that slice.  Returns ``(kind,
        budget)`` -- ``budget`` is how many more elements the loop takes (None:
        unbounded) -- or None when the state needs a full walk.  Remembered per
        state: it depends on the state's configurations and the NFA alone.
        """
        memo = self._slice_budgets
        if sid in memo:
            return memo[sid]
        got = memo[sid] = self._slice_budget(sid)
        self.state_bytes += _MEMO_BYTES
        return got

    def _slice_budget(self, sid: int) -> tuple[str, int | None] | None:
        frames: dict[StackNode, set[int]] = {}
        others: list[int] = []
        for q, node in self.states[sid].configs:
            head = self._slice_frame(node)
            if head is None:
                others.append(q)
            elif head < 0:
                return None
            else:
                frames.setdefault(node, set()).add(q)
        if len(frames) != 1:
            return None
        ((frame, tops),) = frames.items()
        # _slice_frame returns heads of slice loops only: a Loop with its count as key and a slice kind
        lp, k_next = cast("tuple[Loop, int]", self.nfa.loop_of[frame.frames[0][0]])
        assert lp.slice_kind is not None
        if tops != self._body_tops(lp):
            return None
        starts = _SLICE_LEADS[lp.slice_kind]
        if any(self._starts_with(q, lp.slice_kind, starts) for q in others):
            return None
        return lp.slice_kind, (None if lp.hi is None else lp.hi - (k_next - 1))

    def slice_advance(self, sid: int, kind: str, n: int) -> int | None:
        """The state after ``n`` whole elements of the ``kind`` slice loop ``sid`` sits at (see
        :meth:`slice_budget`), built from the loop's head for the new count instead of byte by
        byte; None when ``sid`` is no such state or the loop takes fewer than ``n`` more.

        The same state as :meth:`walk` over the elements' bytes: those bytes end the body ``n``
        times and no other configuration can start on one, so what remains is the closure of
        each slice frame's head ``n - 1`` counts on.  A ``maxLength`` string then costs one new
        state per token instead of one per character.
        """
        key = (sid, kind, n)
        got = self._advances.get(key, UNKNOWN)
        if got != UNKNOWN:
            return got
        with self.lock:
            got = self._slice_advance(sid, kind, n)
            if len(self._advances) < MAX_ADVANCES:
                self._advances[key] = got
                self.state_bytes += _MEMO_BYTES
        return got

    def _slice_advance(self, sid: int, kind: str, n: int) -> int | None:
        fast = self.slice_budget(sid)
        if fast is None or fast[0] != kind or n < 1 or (fast[1] is not None and n > fast[1]):
            return None
        targets: list[Config] = []
        for _q, node in self.states[sid].configs:
            if self._slice_frame(node) is None:
                continue  # starts on no element of the slice (slice_budget checked): dies on the first
            for r, parent in node.frames:
                lp, key = self.nfa.loop_of[r]
                target = (self.nfa.head(lp, cast(int, key) + n - 1), parent)
                if target not in targets:
                    targets.append(target)
        return self._step_targets(targets)

    def ws_budget(self, sid: int) -> int:
        """How many more JSON whitespace bytes the whitespace loop ``sid`` sits at takes (see
        :meth:`slice_budget`; ``INF`` when unbounded), or -1 when ``sid`` sits at none.  The native
        trie walk counts whitespace past such a state instead of stepping it byte by byte."""
        got = self._ws_budgets.get(sid)
        if got is None:
            fast = self.slice_budget(sid)
            got = -1 if fast is None or fast[0] != "ws" else INF if fast[1] is None else fast[1]
            self._ws_budgets[sid] = got
            self.state_bytes += _MEMO_BYTES
        return got

    @property
    def ws_flags(self) -> bytes:
        """The whitespace slice's bytes flagged (256 bytes, 1 = one element of a whitespace loop): the
        bytes the native trie walk counts past a state :meth:`ws_budget` gives a budget."""
        return _WS_FLAGS

    def ws_advance(self, sid: int, n: int) -> int:
        """The state after ``n`` whitespace bytes in ``sid`` (a state :meth:`ws_budget` gives a budget
        of at least ``n``): :meth:`slice_advance`, whichever whitespace bytes they are."""
        got = self.slice_advance(sid, "ws", n)
        return self.walk(sid, b" " * n) if got is None else got

    def slice_need(self, sid: int) -> int:
        """For a slice state: elements still required before the loop may exit (minLength)."""
        for _q, node in self.states[sid].configs:
            head = self._slice_frame(node)
            if head is None or head < 0:
                continue
            lp, k_next = cast("tuple[Loop, int]", self.nfa.loop_of[head])  # a slice loop head (see above)
            if lp.hi is None and k_next == lp.lo:
                # an unbounded loop folds every count >= lo into one head, so the
                # count is either lo-1 or enough; whether the loop may exit tells
                return 0 if self.step(sid, 0x22) >= 0 else 1
            return max(0, lp.lo - (k_next - 1))
        return 0

    def others_only_on(self, sid: int, byte: int) -> bool:
        """Whether every configuration outside the slice loop reads only ``byte``."""
        for q, node in self.states[sid].configs:
            if self._slice_frame(node) is not None:
                continue
            if any(lo != byte or hi != byte for lo, hi, _t in self.nfa.edges[q]):
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
        return self.step_class(sid, int(self.class_of_byte[byte]))

    def step_many(self, sids: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """``table[sids[i], classes[i]]`` for every i (int32, ``DEAD`` where refused), computing the
        rows that are missing first: one vectorised DFA step for a whole frontier of walks."""
        nxt: np.ndarray = self.table[sids, classes]
        unknown = nxt == UNKNOWN
        if unknown.any():
            self.ensure_rows(np.unique(sids[unknown]).tolist())
            nxt = self.table[sids, classes]  # re-read: computing rows may have reallocated the table
        return nxt

    def step_class(self, sid: int, c: int) -> int:
        """The DFA state after a byte of class ``c`` in state ``sid``."""
        nxt = self.table.item(sid, c)
        if nxt == UNKNOWN:
            with self.lock:
                if self.table.item(sid, c) == UNKNOWN:
                    self._compute_cell(sid, c)
            nxt = self.table.item(sid, c)
        return nxt

    def step_row(self, sid: int, c: int) -> int:
        """:meth:`step_class`, computing the whole row of ``sid`` if it is missing.

        For walks that go on to read several cells of the same state (a trie node's
        children): one row costs much less than its cells one by one.
        """
        if not self.row_done[sid]:
            self.ensure_rows([sid])
        return self.step_class(sid, c)

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


def _loop_shape(lp: LazyHeads, k_next: Hashable) -> tuple[Any, ...]:
    """What decides which elements a slice loop head takes next."""
    return (lp.body, lp.slice_kind, lp.lo, lp.hi, k_next)  # type: ignore[attr-defined]


def _by_node(active: list[tuple[frozenset[int], StackNode]]) -> list[tuple[frozenset[int], StackNode]]:
    """``(targets, node)`` pairs with the targets of equal nodes joined: one pair per node."""
    node = active[0][1]
    if all(other == node for _targets, other in active):
        return [(frozenset().union(*[targets for targets, _node in active]), node)]
    joined: dict[StackNode, frozenset[int]] = {}
    for targets, node in active:
        had = joined.get(node)
        joined[node] = targets if had is None else had | targets
    return [(targets, node) for node, targets in joined.items()]


def _join_ranges(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted ``[a, b)`` ranges with touching or overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and out[-1][1] >= a:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def _range_mask(ranges: tuple[tuple[int, int], ...]) -> int:
    """The bit mask (bit c for class c) of ``[a, b)`` class ranges."""
    mask = 0
    for a, b in ranges:
        mask |= (1 << b) - (1 << a)
    return mask


def _lowest_bit(item: tuple[int, Any]) -> int:
    return item[0] & -item[0]


def _first(item: tuple[int, Any]) -> int:
    return item[0]


#: most slice_advance answers remembered per generation (further ones are recomputed)
MAX_ADVANCES = 1 << 16

#: rough CPython sizes, for the retained-bytes estimate
_CONFIG_BYTES = 120
_STATE_BYTES = 400
_CLOSURE_BYTES = 200
_MEMO_BYTES = 100
_SET_BYTES = 220
_PAIR_BYTES = 60
_NODE_BYTES = 120
_FRAME_BYTES = 80


#: first bytes of the tokens in each vocabulary slice (see mask.TokenIndex)
_SLICE_LEADS: dict[str, tuple[tuple[int, int], ...]] = {
    # printable ASCII but '"' and backslash, and the UTF-8 lead bytes
    "plain": ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7F), (0xC2, 0xF4)),
    "ws": ((0x09, 0x0A), (0x0D, 0x0D), (0x20, 0x20)),
}
#: the "ws" leads as 256 flags (for the native walk; see :attr:`Automaton.ws_flags`)
_WS_FLAGS = bytes(1 if any(lo <= b <= hi for lo, hi in _SLICE_LEADS["ws"]) else 0 for b in range(256))


def _byte_classes(nfa: NFA) -> tuple[np.ndarray, int, list[int]]:
    """Partition 0..255 into classes that no edge range splits.

    Rows then have one entry per class instead of 256; JSON grammars use
    a few dozen classes.
    """
    starts = {0}  # bytes where a class starts: every range's low end and the byte after its high end
    add = starts.add
    for a, b in nfa.open_spans():
        for edges in nfa.edges[a:b]:
            for lo, hi, _t in edges:
                add(lo)
                add(hi + 1)
    for block in nfa.sealed.values():
        for lo, hi in block.byte_ranges:
            add(lo)
            add(hi + 1)
    cuts = np.zeros(257, dtype=bool)
    cuts[list(starts)] = True
    class_of = (np.cumsum(cuts[:256]) - 1).astype(np.int32)
    n = int(class_of[-1]) + 1
    reps = np.flatnonzero(cuts[:256]).tolist()  # class c starts at the c-th cut
    return class_of, n, reps
