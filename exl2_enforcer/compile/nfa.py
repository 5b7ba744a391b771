"""Byte-level NFA builder: the common target of every constraint compiler.

Schema, regex, number and format compilers all emit *fragments* into one
:class:`NFA`.  A fragment is a ``(start, end)`` pair of state ids with a single
entry and a single exit; combinators wire fragments together with epsilon
edges (Thompson construction).  Edges consume one byte from an inclusive byte
range.  The automaton module later determinises the NFA lazily.

Two extensions beyond a plain NFA keep the automaton small:

* **calls** -- a state may *call* a sub-machine (a fragment compiled once,
  e.g. a ``$ref`` target) and continue at a return state when it finishes.
  This gives bounded recursion without copying the callee for every use.
* **counted loops** -- ``loop(body, m, n)`` repeats a body fragment with a
  counter kept in the call stack instead of n copies of the body, so
  ``maxLength: 5000`` or ``maxItems: 100`` costs a handful of states.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast


class Frag(NamedTuple):
    """A sub-automaton with one entry state and one exit state."""

    start: int
    end: int


ByteRanges = Sequence[tuple[int, int]]


class Sealed(NamedTuple):
    """A block of consecutive states ``lo .. exit`` one builder wrote at once (see :meth:`NFA.seal`).

    Its *interior* ``lo .. exit-1`` holds no call and no lazy head; interior edges (bytes and
    epsilons) lead only to states of the block; only ``lo`` is entered from outside; and every
    interior state reaches ``exit`` by bytes alone.  ``exit`` is an ordinary state (others may add
    edges from it).  Whole-NFA analyses may read the block as one edge ``lo -> exit`` reading some
    of ``byte_ranges``, instead of visiting every interior state.
    """

    exit: int
    #: every inclusive byte range ``(lo, hi)`` on an interior edge
    byte_ranges: frozenset[tuple[int, int]]


def coreachable(successors: Sequence[Iterable[int]], accepting: Iterable[int]) -> set[int]:
    """The states from which an ``accepting`` one is reachable (those included).

    ``successors[s]`` lists where state ``s`` may go (by any edge); a backward search
    from the accepting states, for the small finite automata built at compile time.
    """
    back: list[list[int]] = [[] for _ in successors]
    for s, nexts in enumerate(successors):
        for t in nexts:
            back[t].append(s)
    live = set(accepting)
    stack = list(live)
    while stack:
        for p in back[stack.pop()]:
            if p not in live:
                live.add(p)
                stack.append(p)
    return live


class LazyHeads:
    """A construct whose control states are created on demand, keyed by a small value.

    Each head state stands for "this construct, in situation ``key``".  From a
    head, :meth:`moves` lists where the automaton may go: ``(None, state)`` to
    continue at ``state``, or ``(callee_start, return_head)`` to run a callee
    sub-machine (ending at :attr:`callee_end`) and come back at another head.
    The automaton handles every such construct the same way.
    """

    exit: int
    callee_end: int
    slice_kind: str | None = None
    heads: dict[Hashable, int]

    def canonical(self, key: Hashable) -> Hashable:
        """Fold keys that behave the same into one (keeps the head count finite)."""
        return key

    def moves(self, nfa: "NFA", key: Hashable) -> list[tuple[int | None, int]]:
        """Where the automaton may go from the head ``key``."""
        raise NotImplementedError

    def deps(self) -> list[int]:
        """States whose completion depth the heads' depths depend on."""
        raise NotImplementedError

    def head_depth(self, key: Hashable, h: Sequence[int]) -> int:
        """Call depth still needed to finish from the head ``key``, given depths ``h``."""
        raise NotImplementedError

    def head_distance(self, key: Hashable, d: Sequence[int]) -> int:
        """Fewest bytes still needed to finish from the head ``key``, given distances ``d``."""
        raise NotImplementedError


@dataclass(eq=False)
class Loop(LazyHeads):
    """A counted repetition of a called body: between ``lo`` and ``hi`` (None = unbounded) times.

    ``head(k)`` means "k iterations done"; the counter never multiplies the NFA
    size.  ``slice_kind`` marks a loop whose body accepts every element of a
    vocabulary *slice* (``"plain"``: any plain JSON string character; ``"ws"``:
    one JSON whitespace byte), so the mask engine can take all tokens made only
    of such elements at once.
    """

    body: Frag
    lo: int
    hi: int | None
    exit: int
    slice_kind: str | None = None
    heads: dict[Hashable, int] = field(default_factory=dict)

    @property
    def callee_end(self) -> int:  # type: ignore[override]
        """The body's end: reaching it returns to the next count's head."""
        return self.body.end

    def canonical(self, key: Hashable) -> Hashable:
        """Past the minimum an unbounded loop needs no count."""
        return self.lo if self.hi is None and key > self.lo else key  # type: ignore[operator]

    def moves(self, nfa: "NFA", key: Hashable) -> list[tuple[int | None, int]]:
        """Exit once ``lo`` is reached; iterate while below ``hi``."""
        k = int(cast(int, key))
        out: list[tuple[int | None, int]] = []
        if k >= self.lo:
            out.append((None, self.exit))
        if self.hi is None or k < self.hi:
            out.append((self.body.start, nfa.head(self, k + 1)))
        return out

    def deps(self) -> list[int]:
        """The exit and the body."""
        return [self.exit, self.body.start]

    def head_depth(self, key: Hashable, h: Sequence[int]) -> int:
        """The body's depth while iterations are still required, then the exit's."""
        if int(cast(int, key)) >= self.lo:
            return h[self.exit]
        return max(h[self.body.start], h[self.exit])

    def head_distance(self, key: Hashable, d: Sequence[int]) -> int:
        """Fewest bytes to finish: the iterations still required, then the exit."""
        k = int(cast(int, key))
        return max(0, self.lo - k) * d[self.body.start] + d[self.exit]


@dataclass(eq=False)
class AnyOrder(LazyHeads):
    """Object members in any order.

    The head key is ``(names written, members written, after a comma)``.
    ``items[i]`` is ``(callee, required)`` for declared member ``i``; ``extra``
    the callee of an additional member (or None); ``comma`` the callee for
    ``", ws"``.  One comma state per situation keeps a single whitespace run in
    each DFA state.  All callees end at the shared :attr:`callee_end`.
    """

    items: list[tuple[Frag, bool]]
    extra: Frag | None
    comma: Frag
    exit: int
    callee_end: int
    min_members: int = 0
    max_members: int | None = None
    heads: dict[Hashable, int] = field(default_factory=dict)

    def canonical(self, key: Hashable) -> Hashable:
        """Counts beyond what min/max can tell apart are folded."""
        written, n, comma = cast("tuple[frozenset[int], int, bool]", key)
        cap = self.max_members if self.max_members is not None else max(self.min_members, 1)
        return written, min(n, cap), comma

    def _open(self, written: frozenset[int], n: int) -> list[tuple[Frag, frozenset[int]]]:
        if self.max_members is not None and n >= self.max_members:
            return []
        out = [(f, written | {i}) for i, (f, _r) in enumerate(self.items) if i not in written]
        if self.extra is not None:
            out.append((self.extra, written))
        return out

    def moves(self, nfa: "NFA", key: Hashable) -> list[tuple[int | None, int]]:
        """Close when every required member is written; else a comma, then any member not written yet."""
        written, n, comma = cast("tuple[frozenset[int], int, bool]", key)
        out: list[tuple[int | None, int]] = []
        choices = self._open(written, n)
        if comma or n == 0:
            out += [(f.start, nfa.head(self, (w, n + 1, False))) for f, w in choices]
        if not comma:
            if all(i in written for i, (_f, r) in enumerate(self.items) if r) and n >= self.min_members:
                out.append((None, self.exit))
            if n and choices:
                out.append((self.comma.start, nfa.head(self, (written, n, True))))
        return out

    def deps(self) -> list[int]:
        """The exit, the comma and every callee."""
        out = [self.exit, self.comma.start] + [f.start for f, _r in self.items]
        return out + ([self.extra.start] if self.extra is not None else [])

    def head_depth(self, key: Hashable, h: Sequence[int]) -> int:
        """The exit, the comma, every required member still to write, and the shallowest optional
        members that make up ``min_members`` (or follow a comma)."""
        written, n, comma = cast("tuple[frozenset[int], int, bool]", key)
        missing = [f for i, (f, r) in enumerate(self.items) if r and i not in written]
        if self.max_members is not None and n + len(missing) > self.max_members:
            return 1 << 30
        choices = self._open(written, n)
        short = self.min_members - n - len(missing)
        if (short > 0 or comma) and not choices:
            return 1 << 30
        if self.extra is None and short > len(choices) - len(missing):
            return 1 << 30
        need = [h[self.exit], h[self.comma.start]] + [h[f.start] for f in missing]
        # the deepest of the k optional members that finish soonest (an extra member may repeat);
        # the deepest of all choices would make a recursive optional member look unfinishable
        k = max(short, 0 if missing else int(comma))
        if k > 0:
            optional = [h[f.start] for i, (f, r) in enumerate(self.items) if not r and i not in written]
            if self.extra is not None:
                optional += [h[self.extra.start]] * k
            optional.sort()
            need.append(optional[k - 1] if len(optional) >= k else 1 << 30)
        return max(need)

    def head_distance(self, key: Hashable, d: Sequence[int]) -> int:
        """Fewest bytes to finish: missing required members, enough optional ones, commas, exit."""
        written, n, comma = cast("tuple[frozenset[int], int, bool]", key)
        inf = 1 << 30
        missing = [d[f.start] for i, (f, r) in enumerate(self.items) if r and i not in written]
        optional = sorted(d[f.start] for i, (f, r) in enumerate(self.items) if not r and i not in written)
        short = max(0, self.min_members - n - len(missing), 1 if comma and not missing else 0)
        extra = d[self.extra.start] if self.extra is not None else None
        cost = sum(missing)
        for _ in range(short):
            if optional and (extra is None or optional[0] <= extra):
                cost += optional.pop(0)
            elif extra is not None:
                cost += extra
            else:
                return inf
        to_write = len(missing) + short
        if self.max_members is not None and n + to_write > self.max_members:
            return inf
        commas = max(0, to_write - 1) if (comma or n == 0) else to_write
        return min(inf, cost + commas * d[self.comma.start] + d[self.exit])


class NFA:
    """A growing set of NFA states with byte-range, epsilon and call edges.

    State ids are dense ints.  Builders must only add edges from states they
    created; the structure is append-only, which keeps it safe to share between
    threads once compilation has finished (loop heads are created under the
    automaton's lock).
    """

    def __init__(self) -> None:
        #: per state, its byte edges ``(lo, hi, target)`` and its epsilon targets: lists while the
        #: NFA is built, tuples once :meth:`freeze` ran
        self.edges: list[Sequence[tuple[int, int, int]]] = []
        self.eps: list[Sequence[int]] = []
        #: set by :meth:`freeze`: no state gets edges any more
        self.frozen = False
        #: state -> (callee Frag, return state, weight); weight counts toward the nesting bound
        self.calls: dict[int, tuple[Frag, int, int]] = {}
        #: lazily created head state -> (its construct, its key)
        self.loop_of: dict[int, tuple[LazyHeads, Hashable]] = {}
        #: callee start -> where it comes from (a JSON pointer), for error messages
        self.machine_names: dict[int, str] = {}
        #: sealed blocks: interior's first state -> its :class:`Sealed` record
        self.sealed: dict[int, Sealed] = {}

    # -- primitive construction -------------------------------------------------
    def state(self) -> int:
        """Create a new state and return its id (after :meth:`freeze`: a state without edges)."""
        if self.frozen:  # a lazy head made while masks are computed: it has no edges of its own
            self.edges.append(())
            self.eps.append(())
        else:
            self.edges.append([])
            self.eps.append([])
        return len(self.edges) - 1

    def freeze(self) -> None:
        """End construction: every state's edge lists become tuples (idempotent).

        A compiled NFA lives as long as its grammar, and its two lists per state were most of the
        containers the garbage collector traversed for it (about 18,000 for an email schema, against
        about 100 once frozen): tuples of ints are untracked by the collector after its first pass
        over them.  The automaton freezes the NFA it is built on; states made afterwards (lazy
        heads) have no edges.  :meth:`edge` and :meth:`epsilon` on a frozen state raise
        RuntimeError.
        """
        if not self.frozen:
            self.edges[:] = map(tuple, self.edges)
            self.eps[:] = map(tuple, self.eps)
            self.frozen = True

    def edge(self, src: int, lo: int, hi: int, dst: int) -> None:
        """Add an edge consuming one byte in ``lo..hi`` (inclusive)."""
        if not (0 <= lo <= hi <= 255):
            raise ValueError(f"bad byte range {lo}..{hi}")
        es = self.edges[src]
        if not isinstance(es, list):
            raise RuntimeError(f"NFA state {src} is frozen: no edge may be added after freeze()")
        es.append((lo, hi, dst))

    def epsilon(self, src: int, dst: int) -> None:
        """Add an edge that consumes nothing."""
        ps = self.eps[src]
        if not isinstance(ps, list):
            raise RuntimeError(f"NFA state {src} is frozen: no edge may be added after freeze()")
        ps.append(dst)

    def epsilon_closure(self, states: Iterable[int]) -> set[int]:
        """Every state reachable from ``states`` by epsilon edges alone (``states`` included).

        Plain edges only: calls and lazy heads are the automaton's business.
        """
        out = set(states)
        stack = list(out)
        while stack:
            for t in self.eps[stack.pop()]:
                if t not in out:
                    out.add(t)
                    stack.append(t)
        return out

    def __len__(self) -> int:
        return len(self.edges)

    # -- sealed blocks ------------------------------------------------------------
    def seal(self, lo: int, exit_: int, byte_ranges: Iterable[tuple[int, int]]) -> None:
        """Declare ``lo .. exit_`` a sealed block (the builder vouches for :class:`Sealed`'s rules).

        Blocks are sealed in the order their states were made.  Raises ValueError for a block
        that is not made of existing states or starts before the last sealed one ends (the other
        rules are the builder's to keep; tests check them with a full walk).
        """
        if not 0 <= lo < exit_ < len(self.edges):
            raise ValueError(f"sealed block {lo}..{exit_} is not a range of existing states")
        if self.sealed and lo <= next(reversed(self.sealed.values())).exit:
            raise ValueError(f"sealed block {lo}..{exit_} overlaps an earlier one")
        self.sealed[lo] = Sealed(exit_, frozenset(byte_ranges))

    def open_spans(self) -> list[tuple[int, int]]:
        """Half-open ranges ``[a, b)`` of the states outside every sealed interior, in order."""
        spans, at = [], 0
        for lo in sorted(self.sealed):
            if at < lo:
                spans.append((at, lo))
            at = self.sealed[lo].exit
        if at < len(self.edges):
            spans.append((at, len(self.edges)))
        return spans

    # -- fragments --------------------------------------------------------------
    def empty(self) -> Frag:
        """Match the empty byte string."""
        s = self.state()
        return Frag(s, s)

    def nothing(self) -> Frag:
        """Match no byte string at all (the exit is unreachable); trimmed later."""
        return Frag(self.state(), self.state())

    def literal(self, data: bytes) -> Frag:
        """Match exactly ``data``."""
        start = cur = self.state()
        for b in data:
            nxt = self.state()
            self.edge(cur, b, b, nxt)
            cur = nxt
        return Frag(start, cur)

    def byte_ranges(self, ranges: ByteRanges) -> Frag:
        """Match one byte from the union of inclusive ``ranges``."""
        s, e = self.state(), self.state()
        for lo, hi in ranges:
            self.edge(s, lo, hi, e)
        return Frag(s, e)

    def seq(self, frags: Iterable[Frag]) -> Frag:
        """Match the fragments one after another."""
        frags = list(frags)
        if not frags:
            return self.empty()
        for a, b in zip(frags, frags[1:]):
            self.epsilon(a.end, b.start)
        return Frag(frags[0].start, frags[-1].end)

    def alt(self, frags: Iterable[Frag]) -> Frag:
        """Match any one of the fragments."""
        s, e = self.state(), self.state()
        for f in frags:
            self.epsilon(s, f.start)
            self.epsilon(f.end, e)
        return Frag(s, e)

    def opt(self, f: Frag) -> Frag:
        """Match ``f`` or nothing."""
        s, e = self.state(), self.state()
        self.epsilon(s, f.start)
        self.epsilon(f.end, e)
        self.epsilon(s, e)
        return Frag(s, e)

    def star(self, f: Frag) -> Frag:
        """Match ``f`` zero or more times."""
        s, e = self.state(), self.state()
        self.epsilon(s, f.start)
        self.epsilon(f.end, s)
        self.epsilon(s, e)
        return Frag(s, e)

    def repeat(self, make: Callable[[], Frag], lo: int, hi: int | None) -> Frag:
        """Match ``lo`` to ``hi`` (None = unbounded) copies, by copying the fragment.

        Use for small counts (regex ``{m,n}``); large counts belong in :meth:`loop`.
        """
        if lo < 0 or (hi is not None and hi < lo):
            raise ValueError(f"bad repeat bounds {{{lo},{hi}}}")
        parts = [make() for _ in range(lo)]
        if hi is None:
            parts.append(self.star(make()))
        else:
            # nested optionals keep the NFA linear: (x(x(x)?)?)?
            tail: Frag | None = None
            for _ in range(hi - lo):
                body = make() if tail is None else self.seq([make(), tail])
                tail = self.opt(body)
            if tail is not None:
                parts.append(tail)
        return self.seq(parts)

    def splice(self, other: "NFA", frag: Frag) -> Frag:
        """Copy all states of the call-free ``other`` into this NFA; returns ``frag`` relocated.

        Lets a fragment that is expensive to build (a format, a pattern) be built once
        into a template NFA and reused by every compilation.
        """
        if other.calls or other.loop_of:
            raise ValueError("splice needs a call-free, loop-free template")
        off = len(self.edges)
        self.edges.extend([[(lo, hi, t + off) for lo, hi, t in es] for es in other.edges])
        self.eps.extend([[t + off for t in es] for es in other.eps])
        for lo, block in other.sealed.items():
            self.sealed[lo + off] = Sealed(block.exit + off, block.byte_ranges)
        return Frag(frag.start + off, frag.end + off)

    # -- calls and counted loops ------------------------------------------------
    def call(self, callee: Frag, weight: int = 1) -> Frag:
        """Run the shared sub-machine ``callee`` here and continue after it returns.

        ``weight`` counts toward the automaton's nesting bound (1 for an object or
        array, 0 for a ``$ref`` and the internal calls of counted loops).  A cycle
        of calls that weighs 0 is refused by the automaton.
        """
        s, r = self.state(), self.state()
        self.calls[s] = (callee, r, weight)
        return Frag(s, r)

    def loop(self, body: Frag, lo: int, hi: int | None, *, slice_kind: str | None = None) -> Frag:
        """Repeat the sub-machine ``body`` ``lo``..``hi`` times with a counter, not copies."""
        if lo < 0 or (hi is not None and hi < lo):
            raise ValueError(f"bad repeat bounds {{{lo},{hi}}}")
        exit_ = self.state()
        lp = Loop(body, lo, hi, exit_, slice_kind)
        return Frag(self.head(lp, 0), exit_)

    def head(self, obj: LazyHeads, key: Hashable) -> int:
        """The head state of ``obj`` for ``key``, created on first use."""
        key = obj.canonical(key)
        q = obj.heads.get(key)
        if q is not None:
            return q
        q = self.state()
        obj.heads[key] = q
        self.loop_of[q] = (obj, key)
        return q

    def any_order(self, items: list[tuple[Frag, bool]], extra: Frag | None, comma: Frag,
                  min_members: int = 0, max_members: int | None = None) -> Frag:
        """Object members in any order (see :class:`AnyOrder`).

        Returns the fragment from the first member to the point where ``}`` may follow.
        """
        exit_, end = self.state(), self.state()
        wired = [(self._to_end(f, end), req) for f, req in items]
        ext = None if extra is None else self._to_end(extra, end)
        obj = AnyOrder(wired, ext, self._to_end(comma, end), exit_, end, min_members, max_members)
        return Frag(self.head(obj, (frozenset(), 0, False)), exit_)

    def _to_end(self, f: Frag, end: int) -> Frag:
        self.epsilon(f.end, end)
        return Frag(f.start, end)


class FragmentMatcher:
    """Whole-input matching of byte strings against one call-free, loop-free fragment, with the
    state sets it meets memoised per byte (a small lazy DFA), for checking many values against
    one pattern or format.  ``max_sets`` bounds the memo (state sets kept); past it a walk goes
    on without memoising.  Safe to share between threads: the memo grows under a lock.
    """

    def __init__(self, nfa: NFA, frag: Frag, max_sets: int = 4096) -> None:
        self.nfa, self.frag, self.max_sets = nfa, frag, max_sets
        self._sets: list[frozenset[int]] = [self._closure([frag.start])]
        self._ids: dict[frozenset[int], int] = {self._sets[0]: 0}
        self._next: dict[tuple[int, int], int] = {}  # (set id, byte) -> set id, -1 when dead
        self._lock = threading.Lock()

    def matches(self, data: bytes) -> bool:
        """Whether the fragment matches exactly ``data``."""
        cur = 0
        for i, b in enumerate(data):
            nxt = self._next.get((cur, b))
            if nxt is None:
                if len(self._sets) >= self.max_sets:
                    return self._walk(self._sets[cur], data[i:])
                nxt = self._step(cur, b)
            if nxt < 0:
                return False
            cur = nxt
        return self.frag.end in self._sets[cur]

    def _closure(self, states: Iterable[int]) -> frozenset[int]:
        got = self.nfa.epsilon_closure(states)
        if any(q in self.nfa.calls or q in self.nfa.loop_of for q in got):
            raise ValueError("FragmentMatcher follows plain edges only (found a call or lazy head)")
        return frozenset(got)

    def _move(self, states: frozenset[int], b: int) -> frozenset[int]:
        return self._closure({d for q in states for lo, hi, d in self.nfa.edges[q] if lo <= b <= hi})

    def _step(self, cur: int, b: int) -> int:
        got = self._move(self._sets[cur], b)
        with self._lock:
            if not got:
                nxt = -1
            elif got in self._ids:
                nxt = self._ids[got]
            else:
                self._sets.append(got)
                nxt = self._ids[got] = len(self._sets) - 1
            self._next[(cur, b)] = nxt
        return nxt

    def _walk(self, states: frozenset[int], data: bytes) -> bool:
        for b in data:
            states = self._move(states, b)
            if not states:
                return False
        return self.frag.end in states
