"""The native run walk (``groups_walk``) and widest byte set (``widest_set``) of engine/_walk.c.

``groups_walk`` replaces the numpy gathers of ``runs._walk_starts`` plus a walk per token:
at every state along email, hostname, URI and pattern values (two tokenizers) the run mask
it gives must equal the numpy path's, including runs cut short where the byte set splits.
Past ``max_walked`` it must refuse without touching the mask; malformed groups are refused
with a ValueError naming what is out of range.  ``widest_set`` must pick the same classes as
the Python ``runs._widest_set`` on real rows and on random rows full of ties.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.engine import native, runs
from exl2_enforcer.engine.automaton import UNKNOWN
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


def test_malformed_groups_are_refused():
    g = compile_regex("[a-z]+", vocab_by_name("llama3"))
    auto = g.automaton
    flat, start, length = np.frombuffer(b"abba", np.uint8), np.array([0, 2], np.int64), np.array([2, 2], np.int64)
    ids = np.array([5, 7], np.int64)
    words = np.zeros(1, np.uint32)
    chain = np.array([auto.start], np.int64)
    none = np.zeros(0, np.int64)
    cls_a = np.array([auto.class_of_byte[ord("a")]], np.int32)

    def walk(g_run, g_cls, g_lo, g_hi, mixed):
        return native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start,
                                          length, ids, chain, 1, g_run, g_cls, g_lo, g_hi, mixed, none, 0, words,
                                          lambda: None, 1 << 30)

    one, zero = np.array([1], np.int64), np.array([0], np.int64)
    with pytest.raises(ValueError, match="run length of group"):
        walk(one, cls_a, zero, one, zero)  # a run past the one-state chain
    with pytest.raises(ValueError, match="row range of group"):
        walk(zero, cls_a, zero, np.array([2], np.int64), zero)  # two rows of a one-row table
    with pytest.raises(ValueError, match="class of group"):
        walk(zero, np.array([auto.n_classes], np.int32), zero, one, zero)
    with pytest.raises(ValueError, match="token row"):
        walk(zero, cls_a, zero, one, np.array([9], np.int64))
    with pytest.raises(ValueError, match="disagree"):
        native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start, length,
                                   ids, chain, 2, zero, cls_a, zero, one, zero, none, 0, words, lambda: None, 9)
    assert not words.any()
    # well formed: "ab" runs one byte of [a-z]... from the start, then reads "b": kept
    assert walk(zero, cls_a, zero, one, zero) == 1 and words[0] == 1 << 5


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

    def walk(step):
        words = np.zeros(1, np.uint32)
        kept = native._module.groups_walk(auto, step, auto.n_classes, classes, flat, start, length, ids,
                                          np.array([auto.start], np.int64), 1, zero, cls_a, zero, g_hi, zero,
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
    with pytest.raises(ValueError, match="DFA table cell"):
        native._module.groups_walk(view, view.step_row, 1, classes, flat, start, length, np.array([3], np.int64),
                                   np.array([0], np.int64), 0, none, np.zeros(0, np.int32), none, none, none,
                                   np.array([0], np.int64), 0, words, lambda: None, 1 << 30)
    assert not words.any()
