"""A set of byte strings (enum values, choices) as one deterministic, suffix-sharing NFA block.

:class:`LiteralSet` builds a compacted acyclic automaton: a radix tree (every edge carries a run of
bytes up to the next branch or word end) whose equal sub-trees are merged bottom-up while the
sorted words stream in (the incremental construction of Daciuk et al. 2000, on runs instead of
single bytes), after the bytes every word ends with (a string's closing quote) are set apart.
Python work is per word and per branch node, not per byte: 10,000 random 16-digit hex strings
make 3,766 nodes, the numbered series ``"name_0" .. "name_99999"`` 7.  :meth:`LiteralSet.emit`
then writes one NFA state per byte of every distinct run, in bulk, and registers the block as
*sealed* (:class:`~.nfa.Sealed`), so the automaton's whole-NFA analyses step over it instead of
visiting its states (10,000 hex strings: 123,203 states).

The block is deterministic (at most one edge per byte from each state) and every state in it
reaches its exit, so a lazy DFA state inside it holds one NFA state per configuration that
entered the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag

#: one edge of the compacted automaton: (the run of bytes it reads, the node it leads to)
Run = tuple[bytes, int]


class LiteralSet:
    """The suffix-merged radix automaton of a set of byte strings, ready to be emitted into an NFA.

    ``literals``: any iterable of ``bytes`` (duplicates are ignored; the empty string is allowed).
    ``tick``: called every :data:`TICK_EVERY` words while building, so a caller's compile budget
    (time, states) can stop a huge set early by raising.

    :attr:`n_states` is the number of NFA states :meth:`emit` will add (one per byte of each
    distinct run, plus the block's entry and exit); a caller checks it against its state budget
    before emitting.  An empty set emits a fragment that matches nothing.
    """

    TICK_EVERY = 4096

    def __init__(self, literals: Iterable[bytes], tick: Callable[[], None] | None = None) -> None:
        words = list(set(literals))
        #: the bytes every word ends with, read once after the shared automaton (a string set's '"')
        self.suffix = _common_suffix(words)
        cut = len(self.suffix)
        # still distinct once they all lose the same tail (but no longer in the same order)
        words = sorted([w[:-cut] for w in words] if cut else words)
        self._runs: list[dict[int, Run]] = [{}]  # node -> first byte of a run -> run
        self._final: list[bool] = [False]
        self._build(words, tick)
        self._order = self._reachable()
        self._inner = sum(len(label) - 1 for n in self._order for label, _c in self._runs[n].values())
        # entry, one state per node, one per byte of a run but its last, one per suffix byte, exit
        self.n_states = 0 if not words else 2 + len(self._order) + self._inner + len(self.suffix)

    # -- construction ------------------------------------------------------------------
    def _build(self, words: list[bytes], tick: Callable[[], None] | None) -> None:
        runs, final = self._runs, self._final
        register: dict[tuple[bool, tuple[Run, ...]], int] = {}
        path = [0]  # nodes along the previous word, each with its depth in ``depths``
        depths = [0]
        prev = b""
        for i, common in enumerate(neighbour_prefixes(words)):
            if tick is not None and i % self.TICK_EVERY == self.TICK_EVERY - 1:
                tick()
            word = words[i]
            if not word:  # only the first sorted word can be empty
                final[0] = True
                continue
            # path nodes deeper than ``common`` are complete: no later word reaches them
            while depths[-1] > common:
                self._freeze(register, path, depths, prev)
            if depths[-1] < common:
                self._split(path, depths, prev, common)
            runs.append({})
            final.append(True)
            runs[path[-1]][word[common]] = (word[common:], len(runs) - 1)
            path.append(len(runs) - 1)
            depths.append(len(word))
            prev = word
        while len(path) > 1:
            self._freeze(register, path, depths, prev)

    def _freeze(self, register: dict[tuple[bool, tuple[Run, ...]], int], path: list[int], depths: list[int],
                prev: bytes) -> None:
        """Register the deepest path node; one equal to a registered node (same finality, same runs
        to the same children) is replaced by it in its parent, which then shares the sub-tree."""
        node = path.pop()
        depths.pop()
        runs = self._runs
        twin = register.setdefault((self._final[node], tuple(runs[node].values())), node)
        if twin != node:
            parent = runs[path[-1]]
            first = prev[depths[-1]]
            parent[first] = (parent[first][0], twin)

    def _split(self, path: list[int], depths: list[int], prev: bytes, at: int) -> None:
        """Cut the run leaving the last path node at depth ``at``: a new branch node goes there."""
        node, depth = path[-1], depths[-1]
        label, child = self._runs[node][prev[depth]]
        off = at - depth
        self._runs.append({label[off]: (label[off:], child)})
        self._final.append(False)
        mid = len(self._runs) - 1
        self._runs[node][prev[depth]] = (label[:off], mid)
        path.append(mid)
        depths.append(at)

    def _reachable(self) -> list[int]:
        """Nodes reachable from the root, breadth first (merged twins are left behind)."""
        order, seen = [0], {0}
        for node in order:  # ``order`` grows while it is walked
            for _label, child in self._runs[node].values():
                if child not in seen:
                    seen.add(child)
                    order.append(child)
        return order

    # -- emission ----------------------------------------------------------------------
    def emit(self, nfa: NFA) -> Frag:
        """Write the automaton into ``nfa`` as one sealed block; returns its fragment.

        States are appended in bulk: the entry, then one per node, then the inner bytes of every
        run, then the common suffix, then the exit.  Raises nothing; the caller checks
        :attr:`n_states` against its budget first.
        """
        if not self.n_states:
            return nfa.nothing()
        entry = nfa.state()
        base = len(nfa)
        number = {node: base + i for i, node in enumerate(self._order)}
        first_inner = inner = base + len(self._order)  # next free id for a run's inner states
        tail = inner + self._inner
        exit_ = tail + len(self.suffix)
        node_edges: list[list[tuple[int, int, int]]] = []
        # the inner states of all runs, flat: inner state k reads inner_bytes[k] and goes to targets[k]
        inner_bytes = bytearray()
        targets: list[int] = []
        for node in self._order:
            row = []
            for label, child in self._runs[node].values():
                target = number[child]
                if len(label) == 1:
                    row.append((label[0], label[0], target))
                    continue
                row.append((label[0], label[0], inner))
                inner_bytes += label[1:]
                targets += range(inner + 1, inner + len(label) - 1)
                targets.append(target)
                inner += len(label) - 1
            node_edges.append(row)
        inner_bytes += self.suffix  # then the common suffix's states, the last leading to the exit
        targets += range(tail + 1, exit_ + 1)
        after_words = tail if self.suffix else exit_
        nfa.edges.extend(node_edges)
        nfa.edges.extend([[(b, b, t)] for b, t in zip(inner_bytes, targets)])
        nfa.edges.append([])
        nfa.eps.extend([[after_words] if self._final[n] else [] for n in self._order])
        nfa.eps.extend([[] for _ in range(exit_ + 1 - first_inner)])
        used = set(inner_bytes) | {label[0] for n in self._order for label, _c in self._runs[n].values()}
        assert len(nfa) == exit_ + 1 and exit_ + 1 - entry == self.n_states
        nfa.epsilon(entry, base)
        nfa.seal(base, exit_, [(b, b) for b in used])
        return Frag(entry, exit_)


def literal_set_fragment(nfa: NFA, literals: Iterable[bytes]) -> Frag:
    """Match exactly one of ``literals`` (byte strings): :class:`LiteralSet` emitted into ``nfa``."""
    return LiteralSet(literals).emit(nfa)


#: neighbour_prefixes pads the words into one array when it holds at most this many bytes (its
#: transient peak is about three times that)
PAD_LIMIT = 1 << 23


def neighbour_prefixes(words: list[bytes]) -> list[int]:
    """``out[i]``: length of the common prefix of ``words[i-1]`` and ``words[i]`` (``out[0] = 0``).

    Many short words are compared all at once (padded into one uint8 array of at most
    :data:`PAD_LIMIT` bytes, the padding cut off by the shorter length); other sets pair by pair.
    """
    if len(words) < 2:
        return [0] * len(words)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    longest = int(lengths.max())
    if len(words) < 64 or longest == 0 or len(words) * longest > PAD_LIMIT:  # numpy pays from a few dozen
        return [0] + [_common_prefix(a, b) for a, b in zip(words, words[1:])]
    rows = np.frombuffer(b"".join([w.ljust(longest, b"\0") for w in words]), dtype=np.uint8).reshape(-1, longest)
    differ = rows[1:] != rows[:-1]
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), longest)
    out = np.minimum(first, np.minimum(lengths[1:], lengths[:-1]))
    return [0, *out.tolist()]


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix, by bisection on slice equality (C-speed compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(words: list[bytes]) -> bytes:
    """The longest byte string every word ends with (empty for fewer than two words)."""
    if len(words) < 2:
        return b""
    suffix = min(words, key=len)
    for w in words:
        if not w.endswith(suffix):
            lo, hi = 0, len(suffix)  # bisect the longest tail of ``suffix`` that ``w`` ends with
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if w.endswith(suffix[len(suffix) - mid:]):
                    lo = mid
                else:
                    hi = mid - 1
            suffix = suffix[len(suffix) - lo:]
            if not suffix:
                break
    return suffix
