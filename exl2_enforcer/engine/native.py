"""The native token walks and plain DFA rows (``engine/_walk.c``), when the C extension is built.

``pip install`` compiles the extension where a C compiler is present (it is marked
optional, so an install without one still succeeds).  Without it, or with the
environment variable ``EXL2_ENFORCER_NATIVE=0`` set before import, the engine uses
its vectorised numpy walks and builds every DFA row in Python, which give the same
masks bit for bit, only slower on cold states (see docs/performance.md).

*Plain rows*: most DFA states sit inside one machine (a key, a pattern, a format, a
number), where no byte step changes the stack.  Their rows come from per-automaton
tables of the NFA (:func:`nfa_tables`, built at compile time): each configuration
moves along its byte edges to the states with byte edges its targets reach by epsilon
moves, on its own node.  Python then only interns the new configuration sets
(:meth:`Automaton._native_row`); a class whose step calls, returns or enters a loop
head takes the automaton's general path.

:data:`enabled` says which is used; tests switch it to compare both paths.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

if TYPE_CHECKING:
    from exl2_enforcer.engine.automaton import Automaton
    from exl2_enforcer.engine.runs import RunTable, TokenBytes
    from exl2_enforcer.tokens.trie import TokenTrie

_T = TypeVar("_T")


#: the calling convention this module expects of the extension (``API_VERSION`` in ``_walk.c``)
API_VERSION = 9


def _load() -> ModuleType | None:
    try:
        module = importlib.import_module("exl2_enforcer.engine._walk")
    except ImportError:  # not built (no C compiler at install time)
        return None
    return _checked(module)


def _checked(module: ModuleType) -> ModuleType | None:
    """``module`` if it was built from this version's ``_walk.c``; else None, with a warning: an extension
    left over from an older install (an editable checkout updated without a rebuild) would fail every mask
    with a TypeError, where the numpy walks give the same masks."""
    got = getattr(module, "API_VERSION", None)
    if got == API_VERSION:
        return module
    warnings.warn(f"exl2_enforcer's C extension ({module.__file__}) was built from another version (API "
                  f"{got}, this code needs {API_VERSION}): using the numpy walks; rebuild it with "
                  f"`pip install -e .` (or reinstall) for the native ones", RuntimeWarning, stacklevel=3)
    return None


_module = _load()

#: whether the C extension was built and imported
available: bool = _module is not None
#: whether the mask engine uses the native walks (set False to force the numpy walks)
enabled: bool = available and os.environ.get("EXL2_ENFORCER_NATIVE", "1") != "0"


#: bytes the native tables of one automaton may derive from its NFA (per-class steps, epsilon
#: reaches, scratch; past it, DFA rows whose NFA states are not tabulated yet are built in Python
#: until an eviction empties them); they count in the grammar's retained bytes, the tables' copy of
#: the NFA in its footprint (as the NFA does)
PLAIN_TABLE_BYTES = 32 << 20


def nfa_tables(auto: "Automaton") -> Any:
    """The native tables of ``auto``'s NFA for :func:`plain_row` (an opaque capsule), or None when the
    extension is not built."""
    if _module is None:
        return None
    return _module.nfa_tables(auto.n_classes, *auto.nfa_arrays(), PLAIN_TABLE_BYTES)


def flatten_nfa(edges: list[Sequence[tuple[int, int, int]]], eps: list[Sequence[int]],
                n: int) -> tuple[np.ndarray, ...] | None:
    """The first ``n`` states' byte edges and epsilon edges (per state a list or a tuple, as a frozen
    :class:`~exl2_enforcer.compile.nfa.NFA` holds them) as int32 arrays: ``(e_ptr, e_lo, e_hi, e_t,
    p_ptr, p_t)``, CSR pointers (``n + 1`` each) with each byte edge's first byte, last byte and target
    and each epsilon edge's target; None when the extension is not built.  Raises ValueError naming
    the NFA state whose lists are malformed."""
    if _module is None:
        return None
    return tuple(np.frombuffer(b, dtype=np.int32) for b in _module.flatten_nfa(edges, eps, n))


def plain_row(tables: Any, auto: "Automaton", sid: int, configs: frozenset[tuple[int, Any]], max_depth: int,
              plain_memo: dict[bytes, int], escape_memo: dict[bytes, int], made: dict[int, tuple[int, Any]],
              intern: Callable[[bytes, Any, bool], int], escape: Callable[[bytes, Any, bool], int],
              interner: tuple[Any, ...] | None = None) -> bool:
    """Write the row of DFA state ``sid`` (``configs``: its (NFA state, stack node) pairs) into ``auto.table``.

    Each distinct configuration set the plain steps of a class reach is keyed by the bytes of its
    sorted int32 ``(NFA state, node id)`` pairs: ``plain_memo[key]``, else ``intern(key, pairs, repeats)``
    with ``pairs`` the list of ``(NFA state, node)`` tuples (shared through ``made``, keyed by
    ``state << 32 | node id``) and ``repeats`` whether an NFA state occurs twice.  Classes whose step
    changes the stack (a call, loop head or machine end) are keyed by their byte targets in the same
    form: ``escape_memo[key]``, else ``escape(key, pairs, repeats)``.  With ``interner``
    (:meth:`Automaton.interner`'s tuple) a new plain set without repeats is interned in C instead of
    by ``intern``, the same state, counted in the tables' interned bytes (:func:`count_tables`); the
    callback still takes a set whose state would pass the table's rows (it grows the table).
    Returns False, writing nothing, when ``tables`` are full or a node id does not fit in int32 (the
    automaton then builds the row).  Hold ``auto.lock``.
    """
    assert _module is not None
    done: bool = _module.plain_row(tables, auto, sid, configs, max_depth, plain_memo, escape_memo, made, intern,
                                   escape, interner)
    return done


def count_tables(auto: "Automaton", tables: Any) -> None:
    """Count the current size of ``auto``'s native ``tables``: the steps derived so far in its retained
    bytes (``auto.native_bytes``, part of ``auto.state_bytes``), the copy of the NFA, fixed for the
    automaton's life, in ``auto.native_fixed_bytes`` (outside the budget an eviction enforces), and
    the DFA states the native rows interned (``auto.native_interned``, part of ``auto.state_bytes``)."""
    assert _module is not None
    fixed, derived, interned = _module.nfa_tables_bytes(tables)
    auto.native_fixed_bytes = fixed
    auto.state_bytes += derived - auto.native_bytes + interned - auto.native_interned
    auto.native_bytes = derived
    auto.native_interned = interned


def clear_tables(tables: Any) -> None:
    """Drop the steps derived in ``tables`` (an eviction), keeping their copy of the NFA."""
    assert _module is not None
    _module.nfa_tables_clear(tables)


def trie_walk(auto: "Automaton", trie: "TokenTrie", sid: int, words: np.ndarray | None,
              check: Callable[[], None], with_states: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
    """Walk ``trie`` from DFA state ``sid``: the tokens whose bytes lead to a live state.

    Sets their bits in ``words`` (uint32 view of a packed mask, or None).  With
    ``with_states`` also returns their ids and the states they end in (int64 arrays);
    otherwise two empty arrays.  Returns ``(count, ids, end_states)``.  Computes missing
    DFA rows on the way, in C as :meth:`Automaton._native_row` would (see :data:`direct_rows`),
    else by :meth:`Automaton.step_row`; ``check`` is called after each and every 4,096 nodes,
    and may raise (e.g. :class:`~exl2_enforcer.errors.MaskTimeout`).  Hold ``auto.lock``
    throughout: an eviction during the walk would leave it stepping state ids of the old
    generation.  Raises ValueError for a negative ``sid`` or malformed arrays.
    """
    assert _module is not None, "native walks are not built"
    n = trie.tok_ids.shape[0]
    ids = np.empty(n if with_states else 0, np.int64)
    states = np.empty(n if with_states else 0, np.int64)
    # whitespace runs count instead of stepping (no states for them): not where end states are wanted,
    # nor for a stand-in automaton without the slice methods (tests wrap one to watch its callbacks)
    runs = ws_runs and not with_states and hasattr(auto, "ws_budget")
    module = _module
    count = _with_rows(auto, lambda rows: module.trie_walk(
        auto, auto.step_row, auto.n_classes, auto.class_of_byte, trie.byte, trie.child_lo, trie.child_hi, trie.tok_lo,
        trie.tok_hi, trie.tok_ids, sid, words, ids if with_states else None, states if with_states else None, check,
        auto.ws_flags if runs else None, getattr(auto, "ws_budget", None), getattr(auto, "ws_advance", None), rows))
    return count, ids[:count], states[:count]


#: whether the native rows intern new plain sets themselves (:meth:`Automaton.interner`) instead of
#: calling :meth:`Automaton._intern_plain` for each (the same states; tests switch it to compare)
c_intern: bool = True


#: whether the native walks build missing plain rows themselves (:meth:`Automaton.row_context`)
#: instead of calling :meth:`Automaton.step_row` for each (the same rows; tests switch it to compare)
direct_rows: bool = True


def _with_rows(auto: "Automaton", walk: Callable[[tuple[Any, ...] | None], _T]) -> _T:
    """``walk(rows)`` with ``auto``'s row context (None for a stand-in automaton without one: tests
    wrap one to watch its step_row calls), under ``auto.lock``; the rows it built directly are
    counted once after it, also when a callback raised."""
    if not direct_rows or not hasattr(auto, "row_context"):
        return walk(None)
    with auto.lock:
        rows = auto.row_context()
        try:
            return walk(rows)
        finally:
            if rows is not None:
                auto.count_native()


#: whether the native trie walk counts whitespace runs past a state at a whitespace loop instead of
#: stepping them byte by byte (the same masks, fewer DFA states; tests switch it to compare)
ws_runs: bool = True


def groups_walk(auto: "Automaton", tokens: "TokenBytes", chain: np.ndarray, table: "RunTable",
                group_classes: np.ndarray, cut_rows: np.ndarray, words: np.ndarray, check: Callable[[], None],
                max_walked: int) -> int:
    """The walked part of a run mask (:func:`~exl2_enforcer.engine.runs.run_mask`) in one native pass.

    ``chain`` (int64) holds the states ``S_0 .. S_r`` the run leads through.  Each group of
    ``table`` with a run of at most ``r`` bytes steps ``S_run`` by its class in ``group_classes``
    (int32); where that is alive its mixed token rows are read on from the byte after the run.
    ``cut_rows`` (int64) are read on from byte ``r`` in ``S_r``.  Sets the bit of every token read
    to its end in ``words`` (uint32) and returns how many; -1, setting nothing, when more than
    ``max_walked`` rows would be read.  ``check`` and ``auto.lock`` as for :func:`trie_walk`.
    Raises ValueError for an index out of range or a mistyped array.

    The groups' rows are read from ``table.layout`` (:func:`order_groups`): in the order of their
    bytes, each stepping only the bytes it does not share with the row before it, from the state
    that row reached after those it does (or dying unstepped where that row died on one of them).
    The cut rows share nothing.
    """
    assert _module is not None, "native walks are not built"
    r = chain.shape[0] - 1
    module = _module
    kept: int = _with_rows(auto, lambda rows: module.groups_walk(
        auto, auto.step_row, auto.n_classes, auto.class_of_byte, tokens.flat, tokens.start, tokens.length, tokens.ids,
        chain, table.g_upto.item(r), table.g_run, group_classes, table.g_lo, table.g_hi, *table.layout, cut_rows, r,
        words, check, max_walked, rows))
    return kept


def run_chain(auto: "Automaton", classes: bytes, sid: int, max_run: int, check: Callable[[], None]
              ) -> tuple[list[int], bool]:
    """The chain of a run from ``sid`` (:func:`~exl2_enforcer.engine.runs.run_mask`): the states
    ``S_0 = sid, S_1, ...`` that bytes of the set made of the classes ``classes`` (ascending, as bytes)
    lead through while they all lead to one live state, at most ``max_run`` steps; and whether it stopped
    because they lead to different states (longer runs then need a walk from the last state).  Builds
    missing rows as :func:`trie_walk` does; ``check`` and ``auto.lock`` as there.  Raises ValueError for
    classes that are not distinct, ascending and below ``auto.n_classes``."""
    assert _module is not None, "native walks are not built"
    module = _module
    got: tuple[list[int], bool] = _with_rows(auto, lambda rows: module.run_chain(
        auto, auto.step_row, auto.n_classes, classes, sid, max_run, check, rows))
    return got


def pack_ids(ids: np.ndarray, words: np.ndarray) -> None:
    """Set the bit of every token id of ``ids`` (int64) in ``words`` (uint32): bit ``id & 31`` of word
    ``id >> 5``.  Raises ValueError, setting none, for an id outside the words (negative included)."""
    assert _module is not None, "native walks are not built"
    _module.pack_ids(ids, words)


def completion_depth(n: int, e_ptr: np.ndarray, e_t: np.ndarray, p_ptr: np.ndarray, p_t: np.ndarray,
                     seal_lo: np.ndarray, seal_exit: np.ndarray, combo_q: np.ndarray, dep_ptr: np.ndarray,
                     dep_t: np.ndarray, term_ptr: np.ndarray, term_dep: np.ndarray, term_w: np.ndarray,
                     by_callback: np.ndarray, value: Callable[[int], int], ends: np.ndarray, h: np.ndarray) -> None:
    """:func:`~exl2_enforcer.engine.automaton.completion_depth` over int32 arrays, written into ``h`` (int32,
    ``n``): the flattened edges (CSR, as :func:`flatten_nfa` gives them), the sealed blocks, and per
    combination state (a call or lazy head) the states it depends on and either its terms (its depth is
    the largest ``term_w + h[term_dep]``) or, where ``by_callback`` (uint8) is set, ``value(state)``, which
    may read ``h``.  Raises ValueError for malformed arrays, and what ``value`` raises."""
    assert _module is not None, "native walks are not built"
    _module.completion_depth(n, e_ptr, e_t, p_ptr, p_t, seal_lo, seal_exit, combo_q, dep_ptr, dep_t, term_ptr,
                             term_dep, term_w, by_callback, value, ends, h)


def zero_weight_cycle(n: int, e_ptr: np.ndarray, e_t: np.ndarray, p_ptr: np.ndarray, p_t: np.ndarray,
                      seal_lo: np.ndarray, seal_exit: np.ndarray, spec_q: np.ndarray, out_ptr: np.ndarray,
                      out_t: np.ndarray, out_w: np.ndarray, more_ptr: np.ndarray, more_t: np.ndarray,
                      root: int) -> int | None:
    """:func:`~exl2_enforcer.engine.automaton.zero_weight_cycle` over int32 arrays: the start state of a
    machine on a weight-0 cycle of calls reachable from the machine starting at ``root``, or None.  The
    flattened edges as :func:`flatten_nfa` gives them, the sealed blocks (first state, exit), and per
    special state ``spec_q[j]`` the machines it calls (``out_t``/``out_w`` by ``out_ptr``, CSR) and the
    states its machine's walk goes on to (``more_t`` by ``more_ptr``).  Raises ValueError for malformed
    arrays."""
    assert _module is not None, "native walks are not built"
    got: int | None = _module.zero_weight_cycle(n, e_ptr, e_t, p_ptr, p_t, seal_lo, seal_exit, spec_q, out_ptr,
                                                out_t, out_w, more_ptr, more_t, root)
    return got


def mask_hash(words: np.ndarray) -> int:
    """A 64-bit hash (an int >= 0) of the packed mask ``words`` (a C-contiguous array of 4-byte items): equal
    masks hash alike.  Raises TypeError or BufferError for another kind of object."""
    assert _module is not None, "native walks are not built"
    got: int = _module.mask_hash(words)
    return got


def write_words(packed: np.ndarray, out: np.ndarray, width: int) -> bool:
    """Copy ``packed`` (4-byte items) into the first ``ceil(width / 32)`` words of ``out`` (writable, 4-byte
    items), zeroing the words past ``packed``'s end and clearing the bits at and beyond ``width``; returns
    whether any bit is set in what was written.  Raises ValueError for ``width < 1`` or a shorter ``out``."""
    assert _module is not None, "native walks are not built"
    got: bool = _module.write_words(packed, out, width)
    return got


class GroupLayout(NamedTuple):
    """Groups of token rows as :func:`groups_walk` reads them (see :func:`order_groups`), per row ``i``
    in the groups' order: ``ids`` its token id (int32); ``lcp`` how many of its bytes past the group's
    offset it shares with the row before it in its group (uint8, 0 for a group's first row); ``tails``
    (uint8) the bytes past those, row after row, row ``i``'s ending at ``ends[i]`` (int32)."""

    ids: np.ndarray
    lcp: np.ndarray
    ends: np.ndarray
    tails: np.ndarray


def order_groups(tokens: "TokenBytes", rows: np.ndarray, g_lo: np.ndarray, g_hi: np.ndarray,
                 g_off: np.ndarray) -> GroupLayout:
    """Sorts each group's token rows ``rows[g_lo[g]:g_hi[g]]`` (int64, in place; the groups follow one
    another from 0 to ``len(rows)``) by their bytes from byte ``g_off[g]`` on, and lays them out for
    :func:`groups_walk`: a shared prefix is stepped once, and its bytes are not stored again.  A radix
    sort in C, once per vocabulary and byte set (:class:`~exl2_enforcer.engine.runs.RunTable`).

    Without the extension the rows stay as they are and the layout is empty (the numpy walks read
    rows in any order, and no layout).
    """
    n = rows.shape[0] if _module is not None else 0
    lcp, ids, ends = np.zeros(n, np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32)
    tails = np.zeros(0, np.uint8)
    if _module is not None:
        tails = np.frombuffer(_module.order_groups(tokens.flat, tokens.start, tokens.length, tokens.ids, rows, g_lo,
                                                   g_hi, g_off, lcp, ids, ends), np.uint8)
    return GroupLayout(ids, lcp, ends, tails)


def widest_set(table: np.ndarray, sid: int, class_sizes: np.ndarray, min_bytes: int) -> bytes | None:
    """The classes (ascending, as bytes) of the largest byte set that row ``sid`` of the DFA ``table`` sends
    to one live state, if it holds at least ``min_bytes`` bytes (``class_sizes``: int64 bytes per class)."""
    assert _module is not None, "native walks are not built"
    got: bytes | None = _module.widest_set(table, sid, class_sizes, min_bytes)
    return got
