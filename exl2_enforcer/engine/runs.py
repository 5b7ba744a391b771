"""Byte-set runs: token masks for states that read a long run of one byte set.

Inside a format or a pattern (the local part of an email, a hostname label, a
URI path, ``[a-z0-9]+``) a DFA state typically moves on every byte of a large
set ``C`` to one and the same next state, and does so again from there, byte
after byte, for as long as a counter allows.  A trie walk from such a state
visits every token made of ``C`` bytes, tens of thousands of nodes, and that
was the slowest cold mask of the engine.

Here a state's mask comes from tables that depend only on the vocabulary and
``C``, built once per vocabulary and byte set (:class:`RunTable`):

* every token's *run*: how many of its first bytes are in ``C``;
* the *pure* tokens (all bytes in ``C``), ordered by length: those no longer
  than the run of states ``S_1 .. S_R`` the state starts are allowed wholesale;
* the *mixed* tokens grouped by (run length ``p``, byte at ``p``): one table
  lookup per group decides whether the token may leave the run there, and only
  the few that may are walked on, byte by byte and vectorised.

The result is the same token set as the trie walk, bit for bit (the tests
compare both on every state they reach).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import DEAD, UNKNOWN, Automaton
from exl2_enforcer.lru import SizedLRU
from exl2_enforcer.tokens.trie import expand_ranges

#: fewest bytes a byte set must hold for the run path to pay off over a trie walk
MIN_RUN_BYTES = 16
#: fewest bytes of the run a state must start for the run path to apply
MIN_CHAIN = 4
#: most tokens the run path walks on byte by byte before it leaves the state to the trie walk
MAX_WALKED = 16000
#: the same with the native walk, where a token costs tens of nanoseconds a byte: a negated class
#: (``[^,]``) on a large vocabulary walks on some 30,000-60,000 multi-byte tokens in 1-3 ms,
#: against 5-10 ms for a trie walk of the whole vocabulary and its rows
MAX_WALKED_NATIVE = 200_000
#: most groups of walked-on tokens gathered as slices of the row table (more: one vectorised gather)
SLICED_GROUPS = 64
_NO_ROWS = np.zeros(0, np.int64)

#: most chain states whose agreement one vectorised check settles
AGREE_BATCH = 32
#: fewest tokens walked on with numpy; fewer go byte by byte in Python
SCALAR_TOKENS = 24
#: bytes of run tables kept per vocabulary (least recently used dropped first)
DEFAULT_RUN_TABLE_BYTES = 64 << 20


class TokenBytes:
    """Every text token's bytes, concatenated (CSR layout), rows ordered by first byte.

    ``flat`` (uint8) holds the bytes of the tokens in row order; row ``k`` is token
    ``ids[k]`` and spans ``flat[start[k] : start[k] + length[k]]``.  The rows whose
    first byte is ``b`` are ``first_at[b] : first_at[b + 1]``, so the tokens starting
    with the bytes of a set are a few contiguous row and byte ranges.  With the C
    extension the rows are in the order of their bytes (lexicographic): a run table's
    groups of tokens that start outside its byte set are then in the order its native
    walk reads them in, and need no sort (:func:`native.order_groups`).
    """

    def __init__(self, ids: np.ndarray, token_bytes: list[bytes | None]) -> None:
        pieces = [token_bytes[i] or b"" for i in ids.tolist()]
        firsts = np.fromiter((p[0] if p else 0 for p in pieces), dtype=np.uint8, count=len(pieces))
        order = np.argsort(firsts, kind="stable")
        pieces = [pieces[i] for i in order.tolist()]
        self.ids = ids.astype(np.int64)[order]
        self.length = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
        self.start = np.cumsum(self.length) - self.length
        self.flat = np.frombuffer(b"".join(pieces), dtype=np.uint8)
        self.first_at = np.searchsorted(firsts[order], np.arange(257)).astype(np.int64)
        if native.available:
            # each first-byte bucket in the order of its bytes: a radix sort in C and a gather, 15-30 ms
            # once per vocabulary (128k-256k tokens)
            rows = np.arange(self.ids.shape[0], dtype=np.int64)
            native.order_groups(self, rows, self.first_at[:-1], self.first_at[1:], np.zeros(256, np.int64))
            at, _ = expand_ranges(self.start[rows], self.start[rows] + self.length[rows])
            self.flat = self.flat[at]
            self.ids, self.length = self.ids[rows], self.length[rows]
            self.start = np.cumsum(self.length) - self.length
        self.nbytes = sum(a.nbytes for a in (self.ids, self.length, self.start, self.flat, self.first_at))

    def rows_starting_in(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows whose first byte is in ``members``, the other rows), each in row order."""
        edges = np.flatnonzero(np.diff(np.r_[False, members, False].astype(np.int8)))
        inside = [np.arange(self.first_at[lo], self.first_at[hi]) for lo, hi in zip(edges[::2], edges[1::2])]
        bounds = np.r_[0, self.first_at[edges], self.ids.shape[0]]
        outside = [np.arange(lo, hi) for lo, hi in zip(bounds[::2], bounds[1::2])]
        empty = np.zeros(0, np.int64)
        return (np.concatenate(inside) if inside else empty), (np.concatenate(outside) if outside else empty)


class RunTable:
    """Per vocabulary and byte set ``C``: the tokens' runs in ``C``, grouped for mask lookups."""

    def __init__(self, tokens: TokenBytes, members: np.ndarray, pack: Callable[[np.ndarray], np.ndarray],
                 mask_bytes: int) -> None:
        # Only tokens that start with a byte of C have a run; the others form one group per
        # first byte.  Keys below 2**16 sort by radix (kind="stable"); a vocabulary with runs
        # of 256 bytes or more needs wider keys (a clamped run would mix up groups and lengths).
        cand, zero = tokens.rows_starting_in(members)
        lo = tokens.start[cand]
        at, src = expand_ranges(lo, lo + tokens.length[cand])
        # the bytes outside C, by candidate (in row order) and position in their token
        outside = np.flatnonzero(~members[tokens.flat[at]])
        owner = src[outside]
        first = np.ones(owner.shape[0], dtype=bool)
        first[1:] = owner[1:] != owner[:-1]
        run = np.zeros(tokens.ids.shape[0], dtype=np.int64)
        run[cand] = tokens.length[cand]
        run[cand[owner[first]]] = (at[outside] - lo[owner])[first]
        crun = run[cand]
        run_key = crun.astype(np.uint16 if crun.shape[0] == 0 or crun.max() < 256 else np.int64)
        pure = crun == tokens.length[cand]
        pure_rows = cand[pure]
        order = np.argsort(run_key[pure], kind="stable")
        #: rows of the pure tokens, shortest first, and their lengths
        self.pure_rows = pure_rows[order]
        self.pure_len = run[self.pure_rows]
        mixed = cand[~pure]
        key = run_key[~pure] * 256 + tokens.flat[tokens.start[mixed] + run[mixed]]
        order = np.argsort(key, kind="stable")
        key = np.r_[tokens.flat[tokens.start[zero]].astype(np.uint16), key[order]]
        rows = np.r_[zero, mixed[order]]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.shape[0] else np.zeros(0, np.int64)
        keys = key[starts].astype(np.int64)
        #: one group per (run length, byte after the run): ``mixed_rows[g_lo[g]:g_hi[g]]``
        self.g_run = keys // 256
        self.g_byte = keys % 256
        self.g_lo = starts
        self.g_hi = np.append(starts[1:], rows.shape[0])
        #: the groups' rows as the native walk reads them: within each group ordered by their bytes after
        #: the byte that leaves the run (``rows`` too, in place: the numpy walks take any order), a
        #: prefix shared with the row before stepped once and stored once (:func:`native.order_groups`)
        self.layout = native.order_groups(tokens, rows, self.g_lo, self.g_hi, self.g_run + 1)
        #: the groups' token rows for the numpy walks (int32: the layout's bytes are most of what the
        #: native walk adds to the table)
        self.mixed_rows = rows.astype(np.int32)
        #: rows of all tokens ordered by run length, and those lengths (for the runs cut short)
        order = np.argsort(run_key, kind="stable")
        self.by_run_rows = np.r_[zero, cand[order]]
        self.by_run = np.r_[np.zeros(zero.shape[0], np.int32), crun[order].astype(np.int32)]
        self.max_run = int(crun.max()) if crun.shape[0] else 0
        #: by run length r (0 .. max_run + 1): how many groups have a run of at most r bytes, and
        #: how many pure tokens are at most r bytes long (list lookups instead of binary searches)
        lengths = np.arange(self.max_run + 2)
        self.g_upto = np.searchsorted(self.g_run, lengths, side="right")
        self.pure_upto = np.searchsorted(self.pure_len, lengths, side="right")
        self._ids = tokens.ids
        self._pack = pack
        self._packed: dict[int, np.ndarray] = {}
        # counted up front with room for every packed mask of pure tokens (one per run length)
        self.nbytes = sum(a.nbytes for a in (self.pure_rows, self.pure_len, self.mixed_rows, *self.layout,
                                             self.g_run, self.g_byte, self.g_lo, self.g_hi, self.by_run_rows,
                                             self.by_run, self.g_upto, self.pure_upto))
        self.nbytes += (int(self.pure_len.max()) + 1 if self.pure_len.shape[0] else 1) * mask_bytes

    def pure_packed(self, r: int) -> np.ndarray:
        """Packed mask of the pure tokens no longer than ``r`` bytes (cached per length)."""
        n = self.pure_upto.item(min(r, self.max_run + 1))
        r = self.pure_len.item(n - 1) if n else 0  # every r with the same tokens shares one mask
        got = self._packed.get(r)
        if got is None:
            got = self._packed[r] = self._pack(self._ids[self.pure_rows[:n]])
        return got


class RunTables:
    """The run tables of one vocabulary, built on demand and kept in an LRU bounded in bytes.

    ``max_bytes`` (default 64 MiB) is the bound; set :attr:`max_bytes` to change it.
    """

    def __init__(self, ids: np.ndarray, token_bytes: list[bytes | None], pack: Callable[[np.ndarray], np.ndarray],
                 mask_bytes: int, max_bytes: int = DEFAULT_RUN_TABLE_BYTES) -> None:
        self.tokens = TokenBytes(ids, token_bytes)
        self._pack = pack
        self._mask_bytes = mask_bytes
        self._tables: SizedLRU[RunTable] = SizedLRU(max_bytes, lambda t: t.nbytes)

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def max_bytes(self) -> int:
        """The byte bound of the cached run tables."""
        return self._tables.max_size

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"max_bytes must be >= 0, got {value}")
        self._tables.max_size = value

    def pack(self, ids: np.ndarray) -> np.ndarray:
        """Packed mask (int32 words) of the token ids ``ids``."""
        return self._pack(ids)

    def table(self, members: np.ndarray, key: bytes | None = None) -> RunTable:
        """The run table of the byte set ``members`` (bool, shape (256,)); ``key``, when given, is
        ``np.packbits(members).tobytes()`` (a caller that looks the same set up often keeps it)."""
        if key is None:
            key = np.packbits(members).tobytes()
        return self._tables.get(key, lambda: RunTable(self.tokens, members, self._pack, self._mask_bytes))


class RunMemo:
    """What :func:`run_mask` remembers about one automaton generation, kept by its caller.

    ``class_sizes``: bytes per byte class (int list, ``auto.n_classes`` long; the classes of an
    automaton never change).  Per set of classes, a :class:`ByteSet` (:meth:`byte_set`), which
    also remembers per state where the set's bytes lead.  ``nbytes`` estimates the bytes held
    (it only grows); the caller counts it against its memory budget and, since every entry is
    keyed by DFA state ids or classes, makes a new memo whenever the automaton evicts its states.
    """

    #: rough CPython size of one state -> state entry of a byte set's agreements
    AGREE_BYTES = 120
    #: rough CPython size of a byte set without its member array (the keys, class ids, the dict)
    SET_BYTES = 1200

    def __init__(self, auto: Automaton) -> None:
        sizes = np.bincount(auto.class_of_byte, minlength=auto.n_classes).astype(np.int64)
        self.class_sizes: list[int] = sizes.tolist()
        #: the same as an int64 array (for the native walk)
        self.class_size_array = sizes
        self.nbytes = 0
        self._class_of_byte = auto.class_of_byte
        self._sets: dict[bytes, ByteSet] = {}

    def __len__(self) -> int:
        """How many byte sets are held."""
        return len(self._sets)

    def sets(self) -> list[ByteSet]:
        """The byte sets held, oldest first."""
        return list(self._sets.values())

    def byte_set(self, classes: bytes) -> ByteSet:
        """The byte set of the classes ``classes`` (sorted class ids as bytes; built on first use)."""
        got = self._sets.get(classes)
        if got is None:
            goes = np.zeros(len(self.class_sizes), dtype=bool)
            goes[list(classes)] = True
            got = self._sets[classes] = ByteSet(classes, goes[self._class_of_byte])
            self.nbytes += self.SET_BYTES + got.members.nbytes
        return got

    def group_classes(self, byte_set: ByteSet, table: RunTable) -> np.ndarray:
        """The class of the byte after the run of each group of ``table``, the set's run table (int64)."""
        got = byte_set.group_classes
        # kept while the same table is in use (a weak reference: the LRU of tables may drop it)
        if got is None or byte_set.grouped_by() is not table:
            got = byte_set.group_classes = self._class_of_byte[table.g_byte]
            byte_set.grouped_by = weakref.ref(table)
            self.nbytes += got.nbytes
        return got


class ByteSet:
    """A set of bytes made of whole byte classes of one automaton, as the run path reads it.

    ``classes``: the sorted class ids as ``bytes`` (fewer than 256 classes), which name the set
    within its automaton, and ``class_ids`` the same as an index array; ``members``: bool, shape
    (256,); ``table_key``: the key of its :class:`RunTable`; ``agree``: per DFA state, the one
    state every byte of the set leads to (``DEAD`` if none, ``UNKNOWN`` if they disagree);
    ``group_classes``: see :meth:`RunMemo.group_classes`.
    """

    def __init__(self, classes: bytes, members: np.ndarray) -> None:
        self.classes = classes
        self.members = members
        self.table_key = np.packbits(members).tobytes()
        self.class_ids = np.frombuffer(classes, dtype=np.uint8).astype(np.intp)
        self.agree: dict[int, int] = {}
        self.group_classes: np.ndarray | None = None
        self.grouped_by: Callable[[], RunTable | None] = lambda: None


def run_mask(auto: Automaton, tables: RunTables, sid: int, check: Callable[[], None],
             memo: RunMemo) -> tuple[np.ndarray, int] | None:
    """The tokens allowed in DFA state ``sid`` by the run path, or None where it does not apply.

    Returns ``(packed, walked)``: the packed mask of the allowed tokens (int32 words, a new
    array) and how many of them were walked on past their run (the rest are whole runs).

    ``check`` is called between chunks of work (it raises
    :class:`~exl2_enforcer.errors.MaskTimeout` past a deadline).  ``memo`` holds what the
    path remembers between calls on one automaton generation (:class:`RunMemo`).
    """
    auto.ensure_rows([sid])
    classes = _widest_classes(auto, memo, sid)
    if classes is None:
        return None
    byte_set = memo.byte_set(classes)
    # a short run leaves few tokens alive, which the trie walk handles well: no table for it
    chain, cut = _chain_from(auto, memo, byte_set, [sid], MIN_CHAIN, check)
    if len(chain) <= MIN_CHAIN:
        return None
    check()  # a table build and a long chain of rows are chunks of work like a trie level
    table = tables.table(byte_set.members, byte_set.table_key)
    # the short chain stopped at its bound (a refusal or a disagreement would have ended it
    # shorter): go on from its end, or cut it back where no token runs further
    chain, cut = _chain_from(auto, memo, byte_set, chain[:table.max_run + 1], table.max_run, check)
    check()
    r = len(chain) - 1
    if native.enabled:
        # the groups' steps and the walks in one native pass: the numpy gathers of _walk_starts
        # cost more than the walks themselves on most run states
        packed = table.pure_packed(r).copy()
        cut_rows = table.by_run_rows[int(np.searchsorted(table.by_run, r, side="right")):] if cut else _NO_ROWS
        kept = native.groups_walk(auto, tables.tokens, np.asarray(chain, dtype=np.int64), table,
                                  memo.group_classes(byte_set, table), cut_rows, packed.view(np.uint32), check,
                                  MAX_WALKED_NATIVE)
        return None if kept < 0 else (packed, kept)
    rows, states, offsets = _walk_starts(auto, table, memo.group_classes(byte_set, table), chain, cut)
    walked = rows.shape[0]
    if walked > MAX_WALKED:
        return None
    packed = table.pure_packed(r).copy()
    if not walked:
        return packed, 0
    tokens = tables.tokens
    ids = tokens.ids[_walk_on(auto, tokens, rows, states, offsets, check)]
    return packed | tables.pack(ids), int(ids.shape[0])


def _walk_starts(auto: Automaton, table: RunTable, group_classes: np.ndarray, chain: list[int], cut: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens to walk on past their run from ``chain``: (rows, states, byte offsets), int64 each.

    Mixed tokens whose run ends within the chain and whose next byte leaves it alive go on
    from the state that byte leads to; with ``cut``, every token running past the chain's
    end goes on from its last state.
    """
    r = len(chain) - 1
    g = table.g_upto.item(r)
    nxt = auto.step_many(np.asarray(chain, dtype=np.int64)[table.g_run[:g]], group_classes[:g])
    live = np.flatnonzero(nxt >= 0)
    lo, hi = table.g_lo[live], table.g_hi[live]
    counts = hi - lo
    if live.shape[0] <= SLICED_GROUPS:
        # few groups (the usual case): slices of the row table, no index arrays to build
        rows_parts = [table.mixed_rows[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
    else:
        rows_parts = [table.mixed_rows[expand_ranges(lo, hi)[0]]]
    state_parts = [np.repeat(nxt[live].astype(np.int64), counts)]
    off_parts = [np.repeat(table.g_run[live] + 1, counts)]
    if cut:
        # the set stopped agreeing at S_r: tokens running past it walk on from there
        rest = table.by_run_rows[int(np.searchsorted(table.by_run, r, side="right")):]
        rows_parts.append(rest)
        state_parts.append(np.full(rest.shape[0], chain[-1], dtype=np.int64))
        off_parts.append(np.full(rest.shape[0], r, dtype=np.int64))
    if not rows_parts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(rows_parts), np.concatenate(state_parts), np.concatenate(off_parts)


def _widest_classes(auto: Automaton, memo: RunMemo, sid: int) -> bytes | None:
    """The classes of the widest byte set of ``sid``'s (computed) row, as :meth:`RunMemo.byte_set` takes them."""
    if native.enabled:
        return native.widest_set(auto.table, sid, memo.class_size_array, MIN_RUN_BYTES)
    widest = _widest_set(memo.class_sizes, auto.table[sid].tolist())
    return None if widest is None else bytes(widest)


def _widest_set(class_sizes: list[int], row: list[int]) -> list[int] | None:
    """The classes of the largest set of bytes that ``row`` sends to one live state, if it is wide enough."""
    # plain Python over the row's few dozen classes: this runs for every state without a slice
    width: dict[int, int] = {}
    get = width.get
    for t, size in zip(row, class_sizes):
        if t >= 0:
            width[t] = get(t, 0) + size
    if not width:
        return None
    best = max(width, key=width.__getitem__)
    if width[best] < MIN_RUN_BYTES:
        return None
    return [c for c, t in enumerate(row) if t == best]


def _chain_from(auto: Automaton, memo: RunMemo, byte_set: ByteSet, chain: list[int], max_run: int,
                check: Callable[[], None]) -> tuple[list[int], bool]:
    """:func:`_chain` from ``chain``: in one native pass from its first state where the walks are native
    (rows built on the way, nothing remembered; the states of ``chain`` it steps again have their rows),
    else by the agreements the byte set remembers."""
    if native.enabled:
        return native.run_chain(auto, byte_set.classes, chain[0], max_run, check)
    return _chain(auto, memo, byte_set, chain, max_run)


def _chain(auto: Automaton, memo: RunMemo, byte_set: ByteSet, chain: list[int], max_run: int
           ) -> tuple[list[int], bool]:
    """Extends ``chain`` (``S_0 = sid, S_1, ...``) with the states runs of the byte set reach; returns it
    and whether the set stopped agreeing.

    The states' agreements are remembered in ``byte_set``.  The chain ends after ``max_run`` bytes (no
    token runs longer), where every byte of the set is refused (``cut`` False: longer runs are
    refused), or where the bytes of the set lead to different states (``cut`` True: longer runs
    need a walk from the last state).
    """
    agree = byte_set.agree
    state = chain[-1]
    while len(chain) <= max_run:
        nxt = agree.get(state)
        if nxt is None:
            _settle(auto, memo, byte_set, state, min(AGREE_BATCH, max_run + 1 - len(chain)))
            nxt = agree[state]
        if nxt == DEAD:
            return chain, False
        if nxt == UNKNOWN:
            return chain, True
        chain.append(nxt)
        state = nxt
    return chain, False


def _settle(auto: Automaton, memo: RunMemo, byte_set: ByteSet, state: int, limit: int) -> None:
    """Where the set's bytes lead from ``state`` and from up to ``limit - 1`` states after it, into
    ``byte_set.agree``.

    The states after it are found by the set's first class alone (the chain's next states as long
    as the set agrees); then every class is compared in one vectorised check, instead of a row
    read and compared per state.  Past a disagreement the stretch may hold states the chain will
    not visit: their answers are true all the same, and at most ``limit`` rows are built for them.
    """
    agree = byte_set.agree
    first_class = byte_set.classes[0]
    stretch = [state]
    seen = {state}
    table = auto.table
    while len(stretch) < limit:
        nxt = table.item(state, first_class)
        if nxt == UNKNOWN:
            auto.ensure_rows([state])
            table = auto.table  # ensure_rows may have grown it
            nxt = table.item(state, first_class)
        if nxt < 0 or nxt in seen or nxt in agree:
            break
        stretch.append(nxt)
        seen.add(nxt)
        state = nxt
    auto.ensure_rows(stretch)
    cells = auto.table[np.asarray(stretch, dtype=np.int64)][:, byte_set.class_ids]
    firsts = cells[:, 0]
    same = (cells == firsts[:, None]).all(axis=1)
    for s, nxt, agrees in zip(stretch, firsts.tolist(), same.tolist()):
        agree[s] = nxt if agrees else UNKNOWN
    memo.nbytes += memo.AGREE_BYTES * len(stretch)


def _walk_on(auto: Automaton, tokens: TokenBytes, rows: np.ndarray, states: np.ndarray, offsets: np.ndarray,
             check: Callable[[], None]) -> np.ndarray:
    """Rows of the tokens that read their bytes from ``offsets`` on, starting in ``states``, without dying."""
    cls = auto.class_of_byte
    at = tokens.start[rows] + offsets  # the next byte of each token, in ``tokens.flat``
    end = tokens.start[rows] + tokens.length[rows]
    done: list[np.ndarray] = []
    while rows.shape[0]:
        ended = at >= end
        if ended.any():
            done.append(rows[ended])
            keep = ~ended
            rows, at, end, states = rows[keep], at[keep], end[keep], states[keep]
        check()
        if rows.shape[0] <= SCALAR_TOKENS:
            done.append(_walk_scalar(auto, tokens, rows, states, at - tokens.start[rows]))
            break
        nxt = auto.step_many(states, cls[tokens.flat[at]])
        keep = nxt >= 0
        rows, at, end, states = rows[keep], at[keep] + 1, end[keep], nxt[keep].astype(np.int64)
    return np.concatenate(done) if done else np.zeros(0, np.int64)


def _walk_scalar(auto: Automaton, tokens: TokenBytes, rows: np.ndarray, states: np.ndarray,
                 offsets: np.ndarray) -> np.ndarray:
    """Byte-by-byte walk of a handful of tokens, where numpy's per-call cost dominates."""
    cls = auto.class_of_byte
    flat = tokens.flat
    kept = []
    for row, state, off in zip(rows.tolist(), states.tolist(), offsets.tolist()):
        lo = int(tokens.start[row])
        for b in flat[lo + off: lo + int(tokens.length[row])].tolist():
            state = auto.step_class(state, int(cls[b]))
            if state < 0:
                break
        else:
            kept.append(row)
    return np.asarray(kept, dtype=np.int64)
