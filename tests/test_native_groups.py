"""The native run walk (``groups_walk``) and widest byte set (``widest_set``) of engine/_walk.c.

``groups_walk`` replaces the numpy gathers of ``runs._walk_starts`` plus a walk per token:
at every state along email, hostname, URI and pattern values (two tokenizers) the run mask
it gives must equal the numpy path's, including runs cut short where the byte set splits.
Past ``max_walked`` it must refuse without touching the mask; malformed groups are refused
with a ValueError naming what is out of range.  ``widest_set`` must pick the same classes as
the Python ``runs._widest_set`` on real rows and on random rows full of ties.

A group's rows are read in the order of their bytes, sharing the steps of common prefixes
(``order_groups``'s layout): its layout must rebuild every row's bytes, and the walk must keep
exactly the rows a walk row by row keeps, where rows die on a shared byte or just past it.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.engine import native, runs
from exl2_enforcer.engine.automaton import UNKNOWN
from exl2_enforcer.engine.mask import TokenIndex
from exl2_enforcer.engine.runs import RunMemo, run_mask

pytestmark = pytest.mark.skipif(not native.available and not in_ci(),
                                reason="C extension not built (no compiler at install); CI requires it")

FORMATS = {
    "type": "object",
    "properties": {"email": {"type": "string", "format": "email"}, "host": {"type": "string", "format": "hostname"},
                   "site": {"type": "string", "format": "uri"},
                   "slug": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"}},
    "required": ["email", "host", "site", "slug"],
    "additionalProperties": False,
}
TEXT = ('{"email": "ops.team+alerts@eu-central.mail.example-corp.io", "host": "db-primary.us-east-2.internal.corp",'
        ' "site": "https://docs.example.net/guides/install?lang=en&v=3#step-2", "slug": "winter-clearance-2026"}')


def _run_masks(g, sid: int, monkeypatch) -> tuple[tuple[np.ndarray, int] | None, tuple[np.ndarray, int] | None]:
    auto, tables = g.automaton, g.engine.index.run_tables
    with monkeypatch.context() as m:
        m.setattr(native, "enabled", True)
        fast = run_mask(auto, tables, sid, lambda: None, RunMemo(auto))
        m.setattr(native, "enabled", False)
        slow = run_mask(auto, tables, sid, lambda: None, RunMemo(auto))
    return fast, slow


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_groups_walk_gives_the_numpy_run_masks_along_formats(name, monkeypatch):
    g = compile_json_schema(FORMATS, vocab_by_name(name))
    auto = g.automaton
    data = TEXT.encode()
    compared = walked = 0
    sid = auto.start
    for i, b in enumerate(data):
        if i % 3 == 0:  # every third prefix: enough states of every label, part and position
            fast, slow = _run_masks(g, sid, monkeypatch)
            if fast is not None and slow is not None:
                assert np.array_equal(fast[0], slow[0]), f"prefix {data[:i]!r}"
                assert fast[1] == slow[1], f"prefix {data[:i]!r}: {fast[1]} walked tokens kept, numpy {slow[1]}"
                compared += 1
                walked += fast[1] > 0
            else:  # the native walk takes on more tokens than numpy before it leaves a state to the trie walk
                assert slow is None, f"prefix {data[:i]!r}: only the numpy path applied"
        sid = auto.step(sid, b)
        assert sid >= 0
    assert compared >= 40 and walked >= 20, (compared, walked)


@pytest.mark.parametrize("pattern, prefixes", [
    ("[a-z]{5}[a-m]{5}", [b"", b"a", b"ab", b"abcd"]),  # the set splits after five letters: runs cut short
    (r"[a-z0-9_]{1,12}(\.[a-z]{2,4}){0,2}", [b"", b"a", b"ab", b"abc.", b"abc.de"]),
])
def test_groups_walk_on_runs_cut_short(pattern, prefixes, monkeypatch):
    g = compile_regex(pattern, vocab_by_name("llama3"))
    compared = 0
    for prefix in prefixes:
        sid = g.automaton.walk(g.automaton.start, prefix)
        fast, slow = _run_masks(g, sid, monkeypatch)
        assert (fast is None) == (slow is None), prefix
        if fast is not None and slow is not None:
            assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1], prefix
            compared += 1
    assert compared >= 2


def test_groups_walk_refuses_past_max_walked_and_sets_nothing():
    g = compile_json_schema(FORMATS, vocab_by_name("llama3"))
    auto, tables = g.automaton, g.engine.index.run_tables
    sid = auto.walk(auto.start, b'{"email": "ops.team+alerts@eu')
    got = run_mask(auto, tables, sid, lambda: None, RunMemo(auto))
    assert got is not None and got[1] > 0
    memo = RunMemo(auto)
    byte_set = memo.byte_set(runs._widest_classes(auto, memo, sid))
    table = tables.table(byte_set.members, byte_set.table_key)
    chain, _cut = runs._chain(auto, memo, byte_set, [sid], table.max_run)
    words = np.zeros(g.engine.index.n_words, np.uint32)
    args = (auto, tables.tokens, np.asarray(chain, np.int64), table, memo.group_classes(byte_set, table),
            np.zeros(0, np.int64), words, lambda: None)
    assert native.groups_walk(*args, 0) == -1
    assert not words.any()
    assert native.groups_walk(*args, 1 << 30) > 0 and words.any()


def _layout(flat: np.ndarray, start: np.ndarray, length: np.ndarray, ids: np.ndarray, rows: np.ndarray,
            g_lo: np.ndarray, g_hi: np.ndarray, g_off: np.ndarray) -> native.GroupLayout:
    """``native.order_groups`` on token rows given as arrays (``rows`` is sorted in place)."""
    return native.order_groups(SimpleNamespace(flat=flat, start=start, length=length, ids=ids), rows, g_lo, g_hi,
                               g_off)


def test_malformed_groups_are_refused():
    g = compile_regex("[a-z]+", vocab_by_name("llama3"))
    auto = g.automaton
    flat, start, length = np.frombuffer(b"abba", np.uint8), np.array([0, 2], np.int64), np.array([2, 2], np.int64)
    ids = np.array([5, 7], np.int64)
    words = np.zeros(1, np.uint32)
    chain = np.array([auto.start], np.int64)
    none = np.zeros(0, np.int64)
    cls_a = np.array([auto.class_of_byte[ord("a")]], np.int32)
    one, zero = np.array([1], np.int64), np.array([0], np.int64)
    # row 0 ("ab") from byte 1: its tail is "b"
    good = _layout(flat, start, length, ids, np.array([0], np.int64), zero, one, one)
    assert good.ids.tolist() == [5] and good.lcp.tolist() == [0] and good.ends.tolist() == [1]
    assert bytes(good.tails) == b"b"

    def walk(g_run, g_cls, g_lo, g_hi, layout=good, n_groups=1):
        return native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start,
                                          length, ids, chain, n_groups, g_run, g_cls, g_lo, g_hi, *layout, none, 0,
                                          words, lambda: None, 1 << 30)

    with pytest.raises(ValueError, match="run length of group"):
        walk(one, cls_a, zero, one)  # a run past the one-state chain
    with pytest.raises(ValueError, match="row range of group"):
        walk(zero, cls_a, zero, np.array([2], np.int64))  # two rows of a one-row layout
    with pytest.raises(ValueError, match="class of group"):
        walk(zero, np.array([auto.n_classes], np.int32), zero, one)
    with pytest.raises(ValueError, match="token row"):
        _layout(flat, start, length, ids, np.array([9], np.int64), zero, one, one)
    with pytest.raises(ValueError, match="byte range of token row"):
        _layout(flat, start, length, ids, np.array([0], np.int64), zero, one, np.array([3], np.int64))
    with pytest.raises(ValueError, match="row range of group"):  # groups that leave a row out
        _layout(flat, start, length, ids, np.array([0, 1], np.int64), zero, one, one)
    with pytest.raises(ValueError, match="tail range of group row"):
        walk(zero, cls_a, zero, one, good._replace(ends=np.array([2], np.int32)))
    with pytest.raises(ValueError, match="shared prefix of group row"):  # a group's first row shares nothing
        walk(zero, cls_a, zero, one, good._replace(lcp=np.array([1], np.uint8)))
    with pytest.raises(ValueError, match="outside the bitmask"):
        walk(zero, cls_a, zero, one, good._replace(ids=np.array([40], np.int32)))
    with pytest.raises(ValueError, match="disagree"):
        walk(zero, cls_a, zero, one, n_groups=2)
    with pytest.raises(ValueError, match="disagree"):
        walk(zero, cls_a, zero, one, good._replace(lcp=np.zeros(2, np.uint8)))
    assert not words.any()
    # well formed: "ab" runs one byte of [a-z]... from the start, then reads "b": kept
    assert walk(zero, cls_a, zero, one) == 1 and words[0] == 1 << 5


def test_widest_set_picks_the_python_classes():
    g = compile_json_schema(FORMATS, vocab_by_name("llama3"))
    auto = g.automaton
    memo = RunMemo(auto)
    auto.walk(auto.start, TEXT.encode())  # rows along the whole value
    done = np.flatnonzero(auto.row_done[: len(auto.states)])
    assert done.shape[0] > 100
    for sid in done.tolist():
        want = runs._widest_set(memo.class_sizes, auto.table[sid].tolist())
        got = native.widest_set(auto.table, sid, memo.class_size_array, runs.MIN_RUN_BYTES)
        assert got == (None if want is None else bytes(want)), sid
    rng = random.Random(7)
    for _ in range(2000):  # few targets and few sizes: ties everywhere
        nc = rng.randint(1, 40)
        table = np.array([[rng.choice([-1, -1, 0, 3, 5]) for _ in range(nc)]], np.int32)
        sizes = [rng.choice([1, 2, 4]) for _ in range(nc)]
        for min_bytes in (0, 4, 16):
            py = _widest(sizes, table[0].tolist(), min_bytes)
            assert native.widest_set(table, 0, np.array(sizes, np.int64), min_bytes) == py, (table, sizes, min_bytes)


def _widest(sizes: list[int], row: list[int], min_bytes: int) -> bytes | None:
    """``runs._widest_set`` with its bound as a parameter (the reference for random rows)."""
    saved = runs.MIN_RUN_BYTES
    runs.MIN_RUN_BYTES = min_bytes
    try:
        got = runs._widest_set(sizes, row)
    finally:
        runs.MIN_RUN_BYTES = saved
    return None if got is None else bytes(got)


def test_arrays_a_callback_rewrites_mid_walk_are_not_read_out_of_bounds():
    """groups_walk checks the groups' ranges and the byte classes before the first step, but the
    step and check callbacks run Python in between: one that rewrites ``g_hi`` or ``class_of_byte``
    (they are plain writable arrays) must give a ValueError or an answer, never a read past an array."""
    g = compile_regex("[a-z]+ ?", vocab_by_name("llama3"))  # not cached by another test: rows unknown
    auto = g.automaton
    flat, start, length = np.frombuffer(b"abba", np.uint8), np.array([0, 2], np.int64), np.array([2, 2], np.int64)
    ids = np.array([5, 7], np.int64)
    none = np.zeros(0, np.int64)
    zero, one = np.array([0], np.int64), np.array([0, 1], np.int64)[1:]
    cls_a = np.array([auto.class_of_byte[ord("a")]], np.int32)
    layout = _layout(flat, start, length, ids, np.array([0], np.int64), zero, one.copy(), one.copy())

    def walk(step):
        words = np.zeros(1, np.uint32)
        kept = native._module.groups_walk(auto, step, auto.n_classes, classes, flat, start, length, ids,
                                          np.array([auto.start], np.int64), 1, zero, cls_a, zero, g_hi, *layout,
                                          none, 0, words, lambda: None, 1 << 30)
        return kept, words

    classes, g_hi = auto.class_of_byte.copy(), one.copy()
    assert auto.table[auto.start, cls_a[0]] == UNKNOWN  # the group's step calls step()

    calls = []

    def widen(s, c):
        calls.append(s)
        if len(calls) > 1:  # once the group has stepped: while its rows are read
            g_hi[0] = 1 << 40  # past mixed_rows, after the range was checked
        return auto.step_row(s, c)

    try:
        kept, words = walk(widen)
        assert kept == 1 and words[0] == 1 << 5  # the range as checked
    except ValueError as e:
        assert "row range of group" in str(e)

    g2 = compile_regex("[a-z]+  ?", vocab_by_name("llama3"))
    auto = g2.automaton
    classes, g_hi = auto.class_of_byte.copy(), one.copy()
    cls_a = np.array([auto.class_of_byte[ord("a")]], np.int32)

    calls.clear()

    def reclass(s, c):
        calls.append(s)
        classes[:] = 1 << 30  # every byte of a class far past the table's columns
        return auto.step_row(s, c)

    try:
        kept, words = walk(reclass)
        assert kept == 1 and words[0] == 1 << 5  # the classes as checked
    except ValueError as e:
        assert "class" in str(e)


def test_trie_walk_reads_the_byte_classes_as_checked():
    """The same for trie_walk: a step callback that rewrites ``class_of_byte`` after its check."""
    from exl2_enforcer.tokens.trie import build_trie

    g = compile_regex("[a-z]+   ?", vocab_by_name("llama3"))
    auto = g.automaton
    trie = build_trie(np.array([0, 1, 2]), [b"ab", b"a", b"b"])
    classes = auto.class_of_byte.copy()

    def reclass(s, c):
        classes[:] = 1 << 30
        return auto.step_row(s, c)

    words = np.zeros(1, np.uint32)
    try:
        count = native._module.trie_walk(auto, reclass, auto.n_classes, classes, trie.byte, trie.child_lo,
                                         trie.child_hi, trie.tok_lo, trie.tok_hi, trie.tok_ids, auto.start, words,
                                         None, None, lambda: None, None, None, None)
        assert count == 3 and words[0] == 0b111
    except ValueError as e:
        assert "class" in str(e)


class _Table:
    """An automaton as the walks see it: only its table (and a step that is never needed)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def step_row(self, s: int, c: int) -> int:
        raise AssertionError("every cell is known")


@pytest.mark.parametrize("cell", [-3, -4, -(1 << 31)])
def test_a_table_cell_below_unknown_is_a_value_error(cell):
    """-3 is the walks' own error code: a table cell holding it ended the walk as an error with no
    exception set (a SystemError); any cell below UNKNOWN is malformed and is named as such."""
    classes = np.zeros(256, np.int32)
    view = _Table(np.full((2, 1), cell, np.int32))
    flat, start, length = np.frombuffer(b"ab", np.uint8), np.array([0], np.int64), np.array([2], np.int64)
    none = np.zeros(0, np.int64)
    words = np.zeros(1, np.uint32)
    no_layout = (np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.uint8))
    with pytest.raises(ValueError, match="DFA table cell"):
        native._module.groups_walk(view, view.step_row, 1, classes, flat, start, length, np.array([3], np.int64),
                                   np.array([0], np.int64), 0, none, np.zeros(0, np.int32), none, none, *no_layout,
                                   np.array([0], np.int64), 0, words, lambda: None, 1 << 30)
    assert not words.any()


# ---- the prefix-sharing layout (order_groups) and walk -------------------------------------------------------


def _token_rows(pieces: list[bytes], id_step: int = 1) -> tuple[np.ndarray, ...]:
    """(flat, start, length, ids) of token rows with the bytes ``pieces`` (row k is token ``k * id_step``)."""
    length = np.array([len(p) for p in pieces], np.int64)
    return (np.frombuffer(b"".join(pieces) or b"\0", np.uint8)[:int(length.sum())], np.cumsum(length) - length,
            length, np.arange(len(pieces), dtype=np.int64) * id_step)


def _lcp(a: bytes, b: bytes) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


@pytest.mark.parametrize("seed", range(4))
def test_order_groups_sorts_each_group_and_its_layout_rebuilds_every_row(seed):
    """Each group comes out sorted by its rows' bytes from its offset, a permutation of its rows; per row the
    shared prefix is the true one with the row before in its group (0 for a group's first row, at most 255),
    and that prefix of the row before plus the row's own tail gives back its bytes, whatever the rows' order
    before (sorted already, reversed, shuffled), with bytes 0 and 255, equal rows, empty suffixes and
    prefixes shared past 255 bytes."""
    rng = random.Random(seed)
    pieces = [bytes(rng.choice(b"ab\0\xff") for _ in range(rng.randint(1, 12))) for _ in range(700)]
    pieces += [b"x" * 300 + b"a", b"x" * 300 + b"b", b"x" * 300, b"x" * 299 + b"a", b"x" * 400]
    pieces += [b"ab", b"ab", b"ab", b"a", b"a\0", b"a\0\0"]
    flat, start, length, ids = _token_rows(pieces, id_step=3)
    order = list(range(len(pieces)))
    rng.shuffle(order)
    bounds = sorted(rng.sample(range(1, len(pieces)), 12)) + [len(pieces)]
    g_lo = np.array([0] + bounds[:-1], np.int64)
    g_hi = np.array(bounds, np.int64)
    g_lo[3], g_hi[2] = g_lo[2], g_lo[2]  # an empty group
    g_off = np.array([rng.randint(0, min(len(pieces[r]) for r in order[lo:hi]) if hi > lo else 0)
                      for lo, hi in zip(g_lo.tolist(), g_hi.tolist())], np.int64)
    g_off[0] = min(len(pieces[r]) for r in order[g_lo[0]:g_hi[0]])  # empty suffixes (a whole group of them)

    def suffix(row: int, g: int) -> bytes:
        return pieces[row][int(g_off[g]):]

    for arrange in ("shuffled", "sorted", "reversed"):
        rows = np.array(order, np.int64)
        for g, (lo, hi) in enumerate(zip(g_lo.tolist(), g_hi.tolist())):
            part = sorted(rows[lo:hi].tolist(), key=lambda r, g=g: suffix(r, g))
            if arrange != "shuffled":
                rows[lo:hi] = part if arrange == "sorted" else part[::-1]
        before = rows.copy()
        layout = _layout(flat, start, length, ids, rows, g_lo, g_hi, g_off)
        tails = bytes(layout.tails)
        at = 0
        for g, (lo, hi) in enumerate(zip(g_lo.tolist(), g_hi.tolist())):
            assert sorted(rows[lo:hi].tolist()) == sorted(before[lo:hi].tolist()), (arrange, g)
            got = [suffix(r, g) for r in rows[lo:hi].tolist()]
            assert got == sorted(got), (arrange, g)
            prev = b""
            for i in range(lo, hi):
                want = suffix(int(rows[i]), g)
                share = int(layout.lcp[i])
                assert share == (0 if i == lo else min(255, _lcp(prev, want))), (arrange, g, i)
                assert prev[:share] + tails[at:int(layout.ends[i])] == want, (arrange, g, i)
                assert int(layout.ids[i]) == ids[rows[i]]
                at, prev = int(layout.ends[i]), want
        assert at == len(tails)


# rows stepped from the state after "q" or after "p": "q" reads [a-c]{0,4} then "xy" or "z" (a row dies on any
# other byte, at any depth), "p" reads [a-z]{0,2}
SHARING = r"(q[a-c]{0,4}(xy|z)?|p[a-z]{0,2})"
EDGES = [
    b"",  # an empty suffix: read to its end at once
    b"a", b"ab", b"abc",  # each a prefix of the next
    b"abd", b"abda", b"abdx",  # "abd" dies on its third byte, which the next two share: they die unstepped
    b"ad", b"axy",  # "ad" dies on its second byte, the one "axy" does not share: "axy" must step it and live
    b"axyz", b"az", b"abcaxy", b"abcab", b"abcabz",  # die just past a shared prefix, or live through one
    b"d", b"dd", b"z", b"zz", b"xy", b"xyz", b"ab", b"ab",  # lcp 0 (from the first byte), equal rows
]


def _sharing_case(seed: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Token bytes for two groups of equal bytes (rows 0..n-1 and n..2n-1) and the groups' bounds."""
    rng = random.Random(seed)
    base = EDGES + [bytes(rng.choice(b"abcdxyz") for _ in range(rng.randint(0, 7))) for _ in range(300)]
    rng.shuffle(base)
    n = len(base)
    return base + base, np.array([0, n], np.int64), np.array([n, 2 * n], np.int64)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_sharing_keeps_exactly_the_rows_a_walk_row_by_row_keeps(seed):
    """groups_walk on order_groups' layout (sorted rows, shared prefixes stepped once) against the same rows
    walked one by one (a layout that shares nothing, in the rows' first order) and against Automaton.walk:
    the same bits and count, where rows die before, at and just past the bytes they share with the row before,
    and in two groups with equal bytes from different states (a group's first row shares nothing with the
    group before)."""
    g = compile_regex(SHARING, vocab_by_name("llama3"))
    auto = g.automaton
    pieces, g_lo, g_hi = _sharing_case(seed)
    flat, start, length, ids = _token_rows(pieces)
    n_words = (len(pieces) + 31) // 32
    g_run = np.zeros(2, np.int64)
    g_cls = np.array([auto.class_of_byte[ord("q")], auto.class_of_byte[ord("p")]], np.int32)
    nexts = [auto.step(auto.start, ord("q")), auto.step(auto.start, ord("p"))]
    want = {k for g_, (lo, hi) in enumerate(zip(g_lo.tolist(), g_hi.tolist())) for k in range(lo, hi)
            if auto.walk(nexts[g_], pieces[k]) >= 0}
    assert 0 < len(want) < len(pieces) and pieces.index(b"axy") in want and pieces.index(b"abda") not in want
    none = np.zeros(0, np.int64)

    def walk(layout: native.GroupLayout) -> tuple[int, set[int]]:
        words = np.zeros(n_words, np.uint32)
        kept = native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start,
                                          length, ids, np.array([auto.start], np.int64), 2, g_run, g_cls, g_lo,
                                          g_hi, *layout, none, 0, words, lambda: None, 1 << 30)
        bits = np.unpackbits(words.view(np.uint8), bitorder="little")
        return kept, set(np.flatnonzero(bits).tolist())

    rows = np.arange(len(pieces), dtype=np.int64)
    shared = _layout(flat, start, length, ids, rows, g_lo, g_hi, np.zeros(2, np.int64))
    assert shared.lcp.max() > 0 and shared.tails.shape[0] < length.sum()  # something is shared
    # row by row: each row's tail is all its bytes
    alone = native.GroupLayout(ids.astype(np.int32), np.zeros(len(pieces), np.uint8),
                               np.cumsum(length).astype(np.int32), flat.copy())
    assert walk(shared) == walk(alone) == (len(want), want)


def test_a_shared_prefix_past_what_the_row_before_read_is_refused():
    """A row can only go on from a state the row before reached: a shared prefix longer than that row was read
    alive (and it did not die within it) is a ValueError, not a read past the path of states.  A prefix that
    lies about the bytes within what was read gives a wrong mask, never a read outside the arrays."""
    g = compile_regex(SHARING, vocab_by_name("llama3"))
    auto = g.automaton
    pieces = [b"a", b"ad", b"axy"]  # "ad" dies on its second byte, the one "axy" does not share
    flat, start, length, ids = _token_rows(pieces)
    one, zero = np.array([3], np.int64), np.array([0], np.int64)
    layout = _layout(flat, start, length, ids, np.arange(3, dtype=np.int64), zero, one, zero)
    assert layout.lcp.tolist() == [0, 1, 1] and bytes(layout.tails) == b"adxy"

    def walk(lay: native.GroupLayout) -> tuple[int, int]:
        words = np.zeros(1, np.uint32)
        kept = native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start,
                                          length, ids, np.array([auto.start], np.int64), 1, zero,
                                          np.array([auto.class_of_byte[ord("q")]], np.int32), zero, one, *lay,
                                          np.zeros(0, np.int64), 0, words, lambda: None, 1 << 30)
        return kept, int(words[0])

    assert walk(layout) == (2, 0b101)
    with pytest.raises(ValueError, match="shared prefix of group row 1"):  # "a" was read 1 byte, to its end
        walk(layout._replace(lcp=np.array([0, 2, 1], np.uint8)))
    # "axy" claiming the byte "ad" died on: it dies unstepped (wrong, as the layout is)
    assert walk(layout._replace(lcp=np.array([0, 1, 2], np.uint8))) == (1, 0b001)


def _email_state(g) -> int:
    auto = g.automaton
    return auto.walk(auto.start, b'{"email": "ops.team+alerts@eu')


def _groups_walk_args(g, sid: int) -> tuple:
    """native.groups_walk's arguments before ``words`` for state ``sid`` (as run_mask gives them)."""
    auto, tables = g.automaton, g.engine.index.run_tables
    memo = RunMemo(auto)
    auto.ensure_rows([sid])
    byte_set = memo.byte_set(runs._widest_classes(auto, memo, sid))
    table = tables.table(byte_set.members, byte_set.table_key)
    chain, cut = runs._chain(auto, memo, byte_set, [sid], table.max_run)
    assert not cut
    return auto, tables.tokens, np.asarray(chain, np.int64), table, memo.group_classes(byte_set, table), \
        np.zeros(0, np.int64)


def test_groups_walk_walks_exactly_up_to_max_walked():
    """``max_walked`` bounds the rows of the groups that leave the run alive (what the walk takes on), not the
    steps the shared prefixes save: at that count it walks, one below it refuses and sets nothing."""
    g = compile_json_schema(FORMATS, vocab_by_name("llama3"))
    args = _groups_walk_args(g, _email_state(g))
    auto, _tokens, chain, table, group_classes, _cut = args
    rows = sum(int(table.g_hi[k] - table.g_lo[k]) for k in range(table.g_upto.item(chain.shape[0] - 1))
               if auto.step_class(int(chain[table.g_run[k]]), int(group_classes[k])) >= 0)
    assert rows > 1000
    words = np.zeros(g.engine.index.n_words, np.uint32)
    assert native.groups_walk(*args, words, lambda: None, rows - 1) == -1 and not words.any()
    assert native.groups_walk(*args, words, lambda: None, rows) > 0 and words.any()


class _Stop(Exception):
    pass


def test_a_check_that_raises_mid_group_ends_the_walk():
    """``check`` runs every CHECK_EVERY steps inside a group's shared walk (rows built) and after each row the
    walk builds (a cold automaton); raised from either, the exception ends the walk, and a walk after it
    gives the numpy path's mask."""
    schema = dict(FORMATS, properties=dict(FORMATS["properties"], extra={"type": "string", "format": "email"}))
    g = compile_json_schema(schema, vocab_by_name("llama3"))  # not another test's grammar: its rows are unknown
    sid = _email_state(g)
    args = _groups_walk_args(g, sid)
    n_words = g.engine.index.n_words

    def stop_at(n: int):
        calls = []

        def check():
            calls.append(1)
            if len(calls) == n:
                raise _Stop

        return check, calls

    for n in (1, 2, 5, 50):  # cold: the rows the walk builds call check
        check, calls = stop_at(n)
        with pytest.raises(_Stop):
            native.groups_walk(*args, np.zeros(n_words, np.uint32), check, 1 << 30)
        assert len(calls) == n
    # warm (a walk builds the rest): one count of the calls, then a check that raises at the last of them
    native.groups_walk(*args, np.zeros(n_words, np.uint32), lambda: None, 1 << 30)
    words = np.zeros(n_words, np.uint32)
    check, calls = stop_at(-1)
    kept = native.groups_walk(*args, words, check, 1 << 30)
    assert kept > 0 and len(calls) >= 2  # the steps of one walk, every CHECK_EVERY
    check, _ = stop_at(len(calls))
    with pytest.raises(_Stop):
        native.groups_walk(*args, np.zeros(n_words, np.uint32), check, 1 << 30)
    got, slow = _run_masks(g, sid, pytest.MonkeyPatch())
    assert got is not None and slow is not None and np.array_equal(got[0], slow[0]) and got[1] == slow[1] == kept
    assert np.array_equal(got[0].view(np.uint32) & words, words)


LONG_RUNS = {
    "type": "object",
    "properties": {"token": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,120}$"},
                   "hash": {"type": "string", "pattern": "^[0-9a-f]{32,64}$"},
                   "words": {"type": "string", "pattern": "^([a-z]+ ){0,20}[a-z]+$"},
                   "note": {"type": "string", "maxLength": 300},
                   "site": {"type": "string", "format": "uri"},
                   "host": {"type": "string", "format": "hostname"}},
    "required": ["token", "hash", "words", "note", "site", "host"],
    "additionalProperties": False,
}
LONG_TEXT = ('{"token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9_payload-Part2", "hash": '
             '"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", '
             '"words": "the quick brown fox jumps over the lazy dog", "note": "Déjà vu, naïve café: 3 > 2!", '
             '"site": "https://example.org/a/very/long/path/segment/index.html?q=search+terms", '
             '"host": "cache-node-17.eu-west-1.compute.internal"}')


@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_run_masks_of_long_runs_are_the_trie_walk_masks(name, monkeypatch):
    """Along values with long runs (tokens, hashes, words, free text, URI paths, hostnames) the native run
    mask equals the numpy path's and the trie walk's, bit for bit."""
    g = compile_json_schema(LONG_RUNS, vocab_by_name(name))
    auto, index = g.automaton, g.engine.index
    data = LONG_TEXT.encode()
    compared = walked = 0
    sid = auto.start
    for i, b in enumerate(data):
        if i % 2 == 0:
            fast, slow = _run_masks(g, sid, monkeypatch)
            if fast is not None:
                words = np.zeros(index.n_words, np.uint32)
                native.trie_walk(auto, index.trie, sid, words, lambda: None)
                assert np.array_equal(fast[0].view(np.uint32), words), f"prefix {data[:i]!r}"
                if slow is not None:
                    assert np.array_equal(fast[0], slow[0]) and fast[1] == slow[1], f"prefix {data[:i]!r}"
                compared += 1
                walked += fast[1] > 0
        sid = auto.step(sid, b)
        assert sid >= 0
    assert compared >= 60 and walked >= 40, (compared, walked)


def test_token_rows_are_in_byte_order_and_keep_their_ids():
    """With the extension, runs.TokenBytes orders its rows by their bytes (so a run table's groups of tokens
    that start outside its set need no sort), each row still the bytes of its token id."""
    index = TokenIndex.for_vocabulary(vocab_by_name("qwen3"))
    tokens = index.run_tables.tokens
    got = [bytes(tokens.flat[s:s + n]) for s, n in zip(tokens.start.tolist(), tokens.length.tolist())]
    assert got == sorted(got)
    assert sorted(tokens.ids.tolist()) == sorted(index.text_ids.tolist())
    assert all(index.text_bytes[i] == b for i, b in zip(tokens.ids.tolist(), got))
    firsts = np.array([b[0] for b in got])
    assert np.array_equal(tokens.first_at, np.searchsorted(firsts, np.arange(257)))


def test_run_table_layout_rebuilds_every_row_of_its_groups(monkeypatch):
    """On a real vocabulary and byte set, each group of the run table holds the rows it holds without the
    extension (which leaves them in row order, with no layout), sorted by their bytes after the run's end byte,
    and its layout gives those bytes back."""
    index = TokenIndex.for_vocabulary(vocab_by_name("llama3"))
    tokens = index.run_tables.tokens
    members = np.zeros(256, bool)
    for lo, hi in ((ord("a"), ord("z")), (ord("0"), ord("9")), (ord("-"), ord("."))):
        members[lo:hi + 1] = True
    table = runs.RunTable(tokens, members, index.pack, index.n_words * 4)
    with monkeypatch.context() as m:
        m.setattr(native, "_module", None)
        plain = runs.RunTable(tokens, members, index.pack, index.n_words * 4)
    assert all(a.shape[0] == 0 for a in plain.layout)
    assert np.array_equal(plain.g_lo, table.g_lo) and np.array_equal(plain.g_hi, table.g_hi)
    assert all(np.array_equal(np.sort(plain.mixed_rows[lo:hi]), np.sort(table.mixed_rows[lo:hi]))
               for lo, hi in zip(table.g_lo.tolist(), table.g_hi.tolist()))
    lay = table.layout
    tails = bytes(lay.tails)
    assert np.array_equal(lay.ids, tokens.ids[table.mixed_rows])
    assert lay.tails.shape[0] < 0.6 * int((tokens.length[table.mixed_rows] - table.g_run.repeat(
        table.g_hi - table.g_lo) - 1).sum())  # prefixes are stored once
    at = 0
    for g, (lo, hi) in enumerate(zip(table.g_lo.tolist(), table.g_hi.tolist())):
        off = int(table.g_run[g]) + 1
        prev = b""
        for i in range(lo, hi):
            r = int(table.mixed_rows[i])
            want = bytes(tokens.flat[tokens.start[r] + off:tokens.start[r] + tokens.length[r]])
            assert tokens.flat[tokens.start[r] + off - 1] == table.g_byte[g]
            assert prev <= want or i == lo
            share = int(lay.lcp[i])
            assert prev[:share] + tails[at:int(lay.ends[i])] == want, (g, i)
            at, prev = int(lay.ends[i]), want
    assert at == len(tails)
