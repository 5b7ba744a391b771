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
from collections.abc import Hashable, Iterable
from typing import Any, cast

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag, LazyHeads, Loop
from exl2_enforcer.errors import EnforcerError, SchemaError

INF = 1 << 30
DEAD = -1
UNKNOWN = -2

Config = tuple[int, "StackNode"]  # (NFA state, StackNode)


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


def completion_depth(nfa: NFA, ends: Iterable[int]) -> list[int]:
    """For each NFA state, the extra call depth needed to reach the end of its machine.

    ``INF`` means the state cannot finish at all.  Depth counts call weights
    (a ``$ref`` call weighs 1, loop iterations 0).  A bucket queue settles states
    in increasing depth (Knuth's generalisation of Dijkstra: a call's value is
    the max of its callee's and its return's), so each state is settled once.
    """
    n = len(nfa)
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


def zero_weight_cycle(nfa: NFA, root: Frag) -> int | None:
    """A machine on a cycle of calls that weighs 0 and is reachable from ``root``, or None.

    Such a cycle recurses without entering an object or array, so no depth
    bound could stop it; a machine is named by its start state.
    """
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
            nxt = [block.exit] if block is not None else [t for _lo, _hi, t in nfa.edges[q]] + nfa.eps[q]
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
        looping = zero_weight_cycle(nfa, root)
        if looping is not None:
            where = nfa.machine_names.get(looping, "")
            raise SchemaError("recursion through $ref reaches itself without entering an object or array"
                              " (it consumes no input)", where, keyword="$ref")
        self._h = completion_depth(nfa, ends)
        if self._h[root.start] > max_depth:
            raise EnforcerError("the constraint admits no value" if self._h[root.start] >= INF
                                else f"the constraint needs nesting deeper than max_depth={max_depth} levels of"
                                " objects/arrays; raise SchemaOptions.max_depth (CLI --max-depth)")
        self.class_of_byte, self.n_classes, self.class_rep = _byte_classes(nfa)
        # per NFA state, bounded by the NFA: kept across evictions
        self._body_tops_cache: dict[int, frozenset[int]] = {}
        self._starts_cache: dict[tuple[int, str], bool] = {}
        self._eps_cache: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self._special = frozenset(ends)
        #: explored (state, node) pairs over all closures: a work counter for tests
        self.closure_work = 0
        self._next_uid = 1  # node ids stay unique across evictions
        self._reset_states()
        self.start = self._step_targets([(root.start, EMPTY)])

    def _reset_states(self) -> None:
        self.states: list[DfaState] = []
        self._index: dict[frozenset[Config], int] = {}
        self._closure_cache: dict[Config, tuple[tuple[Config, ...], bool]] = {}
        self._nodes: dict[tuple[Any, ...], StackNode] = {(0, ()): EMPTY}
        #: bytes held by states, closures and stack nodes (an estimate; rows are in table.nbytes)
        self.state_bytes = 0
        self.table = np.full((64, self.n_classes), UNKNOWN, dtype=np.int32)

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
            self.start = self._step_targets([(self.root.start, EMPTY)])
            self.seq += 1

    def reintern(self, state: DfaState) -> int:
        """The id of ``state`` (a :class:`DfaState` of any generation) in the current generation."""
        with self.lock:
            sid = self._index.get(state.configs)
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

    def _union(self, a: StackNode, b: StackNode, memo: dict[tuple[StackNode, StackNode], StackNode]) -> StackNode:
        """The node holding the stacks of both ``a`` and ``b`` (same depth), merged per top frame.

        Iterative (parents first), so stacks deeper than Python's recursion limit merge too.
        """
        if a == b:
            return a
        todo = [(a, b)]
        while todo:
            x, y = todo[-1]
            if (x, y) in memo:
                todo.pop()
                continue
            mine = dict(x.frames)
            pending = [(mine[r], p) for r, p in y.frames
                       if r in mine and mine[r] != p and (mine[r], p) not in memo]
            if pending:
                todo.extend(pending)
                continue
            for r, p in y.frames:
                q = mine.get(r)
                mine[r] = p if q is None or q == p else memo[(q, p)]
            memo[(x, y)] = self._node(tuple(sorted(mine.items(), key=_first)), x.depth)
            todo.pop()
        return memo[(a, b)]

    def _canonical(self, configs: Iterable[Config]) -> tuple[Config, ...]:
        """``configs`` with the nodes of equal (state, depth) merged: one configuration per pair."""
        merged: dict[tuple[int, int], StackNode] = {}
        memo: dict[tuple[StackNode, StackNode], StackNode] = {}
        for q, node in configs:
            key = (q, node.depth)
            old = merged.get(key)
            merged[key] = node if old is None else self._union(old, node, memo)
        return tuple((q, node) for (q, _d), node in merged.items())

    # -- configuration closure ---------------------------------------------------
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
        out: list[Config] = []
        accepting = False
        q0, node0 = config
        seen = {config}
        todo = [config] if node0.depth + hd(q0) <= limit else []
        work = 0
        while todo:
            q_at, node = todo.pop()
            depth = node.depth
            reach = eps_cache.get(q_at) or self._eps_reach(q_at)
            with_edges, specials = reach
            work += 1 + len(with_edges) + len(specials)
            room = limit - depth
            # states with byte edges all predate the depth fixpoint (lazy heads have none)
            out += [(e, node) for e in with_edges if h[e] <= room]
            for q in specials:
                if hd(q) > room:
                    continue
                nexts = self._special_moves(q, node)
                if not node.frames:
                    accepting |= q == self.root.end
                for nxt in nexts:
                    if nxt in seen or nxt[1].depth + hd(nxt[0]) > limit:
                        continue
                    seen.add(nxt)
                    todo.append(nxt)
        self.closure_work += work
        result = (self._canonical(out), accepting)
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
        head = nfa.loop_of.get(q)
        if head is not None:
            obj, key = head
            for body_start, target in obj.moves(nfa, key):
                if body_start is None:
                    nexts.append((target, node))
                elif depth + hd(target) <= limit:
                    nexts.append((body_start, self._push(target, node, 0)))
        for r, parent in node.frames:
            if q == self._return_end(r):
                nexts.append((r, parent))
        return nexts

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
        self.state_bytes += _STATE_BYTES + _CONFIG_BYTES * len(configs)
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
        for q, node in self.states[sid].configs:
            for lo, hi, t in self.nfa.edges[q]:
                nxt = (t, node)
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

    def _step_targets(self, targets: Iterable[Config]) -> int:
        """The DFA state of the closure of ``targets``, in canonical form (one node per state and depth)."""
        closures = [self._closure(t) for t in targets]
        accepting = any(acc for _cs, acc in closures)
        if len(closures) == 1:
            configs = closures[0][0]  # already canonical
        else:
            configs = self._canonical(c for cs, _acc in closures for c in cs)
        if not configs and not accepting:
            return DEAD
        return self._intern(frozenset(configs), accepting)

    # -- vocabulary-slice fast path ----------------------------------------------
    def _slice_frame(self, node: StackNode) -> int | None:
        """A slice loop head ``node`` returns to; None if it returns to none, -1 if mixed.

        Several top frames qualify when they are all heads of loops of one shape
        (same body, kind, bounds and count): e.g. the ``name`` strings of two
        ``anyOf`` branches still open together.  They then take the same
        tokens, and the mask is exact for all of them at once.
        """
        loop_of = self.nfa.loop_of
        heads = [r for r, _p in node.frames if r in loop_of and loop_of[r][0].slice_kind]
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
        unbounded) -- or None when the state needs a full walk.
        """
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


def _loop_shape(lp: LazyHeads, k_next: Hashable) -> tuple[Any, ...]:
    """What decides which elements a slice loop head takes next."""
    return (lp.body, lp.slice_kind, lp.lo, lp.hi, k_next)  # type: ignore[attr-defined]


def _first(item: tuple[int, Any]) -> int:
    return item[0]


#: rough CPython sizes, for the retained-bytes estimate
_CONFIG_BYTES = 120
_STATE_BYTES = 400
_CLOSURE_BYTES = 200
_NODE_BYTES = 120
_FRAME_BYTES = 80


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
