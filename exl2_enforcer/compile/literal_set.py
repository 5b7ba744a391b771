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

The block of byte strings is deterministic (at most one edge per byte from each state) and every
state in it reaches its exit, so a lazy DFA state inside it holds one NFA state per configuration
that entered the block.

*Spelled* sets take ``str`` words and a ``spell`` function giving each character's own small
automaton (``escapes="all"``: every JSON spelling of it); the same tree is built over characters,
and each character of a run is written as a copy of its automaton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag

#: one edge of the compacted automaton: (the run of bytes, or of characters, it reads; its target node)
Run = tuple[Any, int]
#: one character's automaton for a spelled set: a call-free, loop-free NFA and its fragment
Spelling = tuple[NFA, Frag]
#: a spelling ready to copy: (inner states, edges (from, lo, hi, to), epsilons (from, to)), where
#: state 0 is the fragment's entry, 1 its exit and 2.. its inner states
_Copyable = tuple[int, list[tuple[int, int, int, int]], list[tuple[int, int]]]


class LiteralSet:
    """The suffix-merged radix automaton of a set of byte strings, ready to be emitted into an NFA.

    ``literals``: any iterable of ``bytes`` (duplicates are ignored; the empty string is allowed),
    or of ``str`` together with ``spell``, which maps a code point to its :data:`Spelling` (called
    once per distinct character; its entry must have no incoming and its exit no outgoing edge,
    else ValueError).  ``tick``: called every :data:`TICK_EVERY` words while building, so a
    caller's compile budget (time, states) can stop a huge set early by raising.

    :attr:`n_states` is the number of NFA states :meth:`emit` will add (one per byte of each
    distinct run, plus the block's entry and exit); a caller checks it against its state budget
    before emitting.  An empty set emits a fragment that matches nothing.
    """

    TICK_EVERY = 4096

    def __init__(self, literals: Iterable[bytes] | Iterable[str], tick: Callable[[], None] | None = None,
                 spell: Callable[[int], Spelling] | None = None) -> None:
        words: list[Any] = list(set(literals))
        self._spellings: dict[int, _Copyable] = {}
        if spell is not None:
            words = self._spellable(words, spell, tick)
        #: the bytes every word ends with, read once after the shared automaton (a string set's '"')
        self.suffix = b"" if spell is not None else _common_suffix(words)
        cut = len(self.suffix)
        # still distinct once they all lose the same tail (but no longer in the same order)
        words = sorted([w[:-cut] for w in words] if cut else words)
        self._runs: list[dict[Any, Run]] = [{}]  # node -> first byte (or character) of a run -> run
        self._final: list[bool] = [False]
        self._build(words, tick)
        self._order = self._reachable()
        # per run, one state between two of its bytes or characters
        self._inner = sum(len(label) - 1 for n in self._order for label, _c in self._runs[n].values())
        if spell is not None:  # and the inner states of each character's copy
            self._inner += sum(self._spellings[ord(ch)][0] for n in self._order
                               for label, _c in self._runs[n].values() for ch in label)
        # entry, one state per node, the inner ones, one per suffix byte, exit
        self.n_states = 0 if not words else 2 + len(self._order) + self._inner + len(self.suffix)

    # -- construction ------------------------------------------------------------------
    def _spellable(self, words: list[str], spell: Callable[[int], Spelling],
                   tick: Callable[[], None] | None) -> list[str]:
        """``words`` without those holding a character that has no spelling (a lone surrogate in JSON
        text), each character's spelling made ready to copy (``tick`` every 256 characters)."""
        unspellable = set()
        for i, ch in enumerate(set("".join(words))):
            if tick is not None and i % 256 == 255:
                tick()
            got = _copyable(*spell(ord(ch)))
            if got is None:
                unspellable.add(ch)
            else:
                self._spellings[ord(ch)] = got
        return [w for w in words if not unspellable.intersection(w)] if unspellable else words

    def _build(self, words: list[Any], tick: Callable[[], None] | None) -> None:
        runs, final = self._runs, self._final
        register: dict[tuple[bool, tuple[Run, ...]], int] = {}
        path = [0]  # nodes along the previous word, each with its depth in ``depths``
        depths = [0]
        prev: Any = b""
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
                prev: Any) -> None:
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

    def _split(self, path: list[int], depths: list[int], prev: Any, at: int) -> None:
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
        if self._spellings:
            return self._emit_spelled(nfa)
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


    def _emit_spelled(self, nfa: NFA) -> Frag:
        """:meth:`emit` for a spelled set: every character of a run as a copy of its spelling."""
        entry = nfa.state()
        base = len(nfa)
        number = {node: base + i for i, node in enumerate(self._order)}
        exit_ = base + len(self._order) + self._inner
        rows: list[list[tuple[int, int, int]]] = [[] for _ in self._order]
        eps: list[list[int]] = [[exit_] if self._final[n] else [] for n in self._order]
        used: set[tuple[int, int]] = set()
        for node in self._order:
            for label, child in self._runs[node].values():
                src = number[node]
                for k, ch in enumerate(label):
                    inner, copy_edges, copy_eps = self._spellings[ord(ch)]
                    first = base + len(rows)  # the copy's inner states, then the state after ch
                    rows += [[] for _ in range(inner)]
                    eps += [[] for _ in range(inner)]
                    dst = number[child] if k == len(label) - 1 else first + inner
                    ids = [src, dst, *range(first, first + inner)]
                    for a, lo, hi, b in copy_edges:
                        rows[ids[a] - base].append((lo, hi, ids[b]))
                        used.add((lo, hi))
                    for a, b in copy_eps:
                        eps[ids[a] - base].append(ids[b])
                    if k < len(label) - 1:
                        rows.append([])
                        eps.append([])
                    src = dst
        assert base + len(rows) == exit_ and exit_ + 1 - entry == self.n_states
        nfa.edges.extend(rows)
        nfa.eps.extend(eps)
        nfa.state()
        nfa.epsilon(entry, base)
        nfa.seal(base, exit_, used)
        return Frag(entry, exit_)


def _copyable(template: NFA, frag: Frag) -> _Copyable | None:
    """A spelling's states renumbered for copying (see :data:`_Copyable`); None if it spells
    nothing; ValueError if its entry has incoming or its exit outgoing edges (the copy maps them
    onto states that others share)."""
    if template.calls or template.loop_of:
        raise ValueError("a spelling must be call-free and loop-free")
    reach, todo = {frag.start}, [frag.start]
    while todo:
        q = todo.pop()
        for t in [*(t for _lo, _hi, t in template.edges[q]), *template.eps[q]]:
            if t not in reach:
                reach.add(t)
                todo.append(t)
    if frag.end not in reach:
        return None
    if template.edges[frag.end] or template.eps[frag.end]:
        raise ValueError("a spelling's exit must have no outgoing edge")
    inner = sorted(reach - {frag.start, frag.end})
    ids = {frag.start: 0, frag.end: 1, **{q: i + 2 for i, q in enumerate(inner)}}
    edges = [(ids[q], lo, hi, ids[t]) for q in reach for lo, hi, t in template.edges[q]]
    eps = [(ids[q], ids[t]) for q in reach for t in template.eps[q]]
    if any(b == 0 for _a, _lo, _hi, b in edges) or any(b == 0 for _a, b in eps):
        raise ValueError("a spelling's entry must have no incoming edge")
    return len(inner), edges, eps


def literal_set_fragment(nfa: NFA, literals: Iterable[bytes]) -> Frag:
    """Match exactly one of ``literals`` (byte strings): :class:`LiteralSet` emitted into ``nfa``."""
    return LiteralSet(literals).emit(nfa)


#: neighbour_prefixes pads the words into one array when it holds at most this many bytes (its
#: transient peak is about three times that)
PAD_LIMIT = 1 << 23


def neighbour_prefixes(words: list[bytes] | list[str]) -> list[int]:
    """``out[i]``: length of the common prefix of ``words[i-1]`` and ``words[i]`` (``out[0] = 0``),
    in bytes, or in characters for ``str`` words.

    Many short words are compared all at once (padded into one uint8 array of at most
    :data:`PAD_LIMIT` bytes, the padding cut off by the shorter length); other sets pair by pair.
    """
    if len(words) < 2:
        return [0] * len(words)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    longest = int(lengths.max())
    if len(words) < 64 or longest == 0 or len(words) * longest > PAD_LIMIT:  # numpy pays from a few dozen
        return [0] + [_common_prefix(a, b) for a, b in zip(words, words[1:])]
    if isinstance(words[0], str):  # one uint32 per character (surrogates kept as they are)
        text = "".join([w.ljust(longest, "\0") for w in words]).encode("utf-32-le", "surrogatepass")
        rows = np.frombuffer(text, dtype="<u4").reshape(-1, longest)
    else:
        rows = np.frombuffer(b"".join([w.ljust(longest, b"\0") for w in words]), dtype=np.uint8).reshape(-1, longest)
    differ = rows[1:] != rows[:-1]
    first = np.where(differ.any(axis=1), differ.argmax(axis=1), longest)
    out = np.minimum(first, np.minimum(lengths[1:], lengths[:-1]))
    return [0, *out.tolist()]


def _common_prefix(a: Any, b: Any) -> int:
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
