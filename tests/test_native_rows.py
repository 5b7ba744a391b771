"""The native plain rows (engine/_walk.c ``plain_row``) write the rows the Python path writes.

Each case compiles a schema, explores its DFA breadth first with native rows, and for
every explored state recomputes the row with the Python path in the same automaton
(after clearing it): interning finds the same configurations under the same ids, so
equal rows mean equal steps, and a Python recompute that had to make a new state
would show up as a different id.  The tables' bounds, their memory accounting and
their refusal of malformed input are checked too.

The second half holds the faults a review found, each test failing before its fix: a
max_depth past int32, node ids past int32, state ids past the table, the NFA copy counted
in (and dropped by) evictions, configs that are not a frozenset, fresh tuples per set; and
guards: tables cleared inside a callback, the C flattening of the NFA against numpy's, and
memory accounting over repeated evictions.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import encode, vocab_by_name

from exl2_enforcer import Matcher, SchemaOptions, compile_json_schema, compile_regex
from exl2_enforcer.compile.schema.compiler import MAX_DEPTH_LIMIT
from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import UNKNOWN, Automaton, StackNode
from exl2_enforcer.errors import EnforcerError
from exl2_enforcer.grammar import GRAMMAR_CACHE

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

ROOT = Path(__file__).resolve().parent.parent
NODE = {"$defs": {
    "Dir": {"type": "object", "required": ["name", "children"], "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}},
    "Zip": {"type": "object", "required": ["name", "children", "codec"], "properties": {
        "name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
        "codec": {"type": "string"}}},
    "Node": {"anyOf": [{"$ref": "#/$defs/Dir"}, {"$ref": "#/$defs/Zip"}]}},
    "$ref": "#/$defs/Node"}
CASES = {
    "function_call": json.loads((ROOT / "tests/schemas/function_call.json").read_text()),
    "patterns_formats": json.loads((ROOT / "benchmarks/schemas/patterns_formats.schema.json").read_text()),
    "recursive_union": NODE,
    "numbers_enums": {"type": "object", "properties": {
        "n": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
        "k": {"type": "integer", "minimum": -40, "multipleOf": 5},
        "e": {"enum": ["alpha", "beta", 3, None, [1, 2]]},
        "u": {"type": "string", "format": "uuid"}}, "required": ["n", "k", "e"]},
}


def _explore(auto: Automaton, limit: int) -> list[int]:
    """States reached breadth first from the start, every row built (natively when enabled)."""
    seen, order = {auto.start}, [auto.start]
    i = 0
    while i < len(order) and len(order) < limit:
        sid = order[i]
        i += 1
        auto.ensure_rows([sid])
        for nxt in np.unique(auto.table[sid]).tolist():
            if nxt >= 0 and nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
    return order[:i]


def _python_row(auto: Automaton, sid: int, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """``sid``'s row recomputed by the Python path in the same automaton."""
    auto.table[sid] = UNKNOWN
    auto.row_done[sid] = False
    with monkeypatch.context() as m:
        m.setattr(native, "enabled", False)
        auto.ensure_rows([sid])
    return auto.table[sid].copy()


@needs_native
@pytest.mark.parametrize("name", sorted(CASES))
def test_native_rows_equal_python_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema(CASES[name], vocab_by_name("llama3")).automaton
    explored = _explore(auto, 1500)
    assert len(explored) > 100
    before = len(auto.states)
    for sid in explored:
        native_row = auto.table[sid].copy()
        assert np.array_equal(_python_row(auto, sid, monkeypatch), native_row), f"{name}: row of state {sid}"
    assert len(auto.states) == before  # the Python path found every state the native one made


@needs_native
def test_full_tables_leave_rows_to_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for one NFA state the native rows give up at once; the rows are still right."""
    monkeypatch.setattr(native, "PLAIN_TABLE_BYTES", 1)
    GRAMMAR_CACHE.clear()
    g = compile_regex(r"[a-z0-9]{1,20}(\.[a-z]{2,4}){1,3}", vocab_by_name("llama3"))
    auto = g.automaton
    explored = _explore(auto, 300)
    assert auto.native_bytes > 0  # the tables were made (and counted) ...
    for sid in explored:
        row = auto.table[sid].copy()
        assert np.array_equal(_python_row(auto, sid, monkeypatch), row)
    assert auto.matches(b"abc.de.fgh") and not auto.matches(b"abc.")


@needs_native
@pytest.mark.parametrize("bound", [16 << 10, 64 << 10])
def test_every_derived_table_stays_within_the_bound(bound: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PLAIN_TABLE_BYTES`` bounds everything the tables derive (steps, epsilon reaches, scratch), not
    only the step cells: past it rows go to Python, and they are the same rows."""
    GRAMMAR_CACHE.clear()
    free = compile_json_schema(CASES["patterns_formats"], vocab_by_name("llama3"))
    explored_free = _explore(free.automaton, 600)
    assert free.automaton.native_bytes > 256 << 10  # the pass needs more than either bound
    monkeypatch.setattr(native, "PLAIN_TABLE_BYTES", bound)
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(CASES["patterns_formats"], vocab_by_name("llama3"))
    auto = g.automaton
    explored = _explore(auto, 600)
    assert explored == explored_free
    # the check runs before each NFA state is tabulated: past the bound by at most one doubling of a
    # table's capacity and that state's own cells (the old bound on cells alone let reaches and
    # scratch run on: 41.5 KiB under a 16 KiB bound, 137 KiB under 64 KiB)
    assert 0 < auto.native_bytes <= 2 * bound + 16 * auto.n_classes * 4
    for sid in explored[::7]:
        assert np.array_equal(auto.table[sid], free.automaton.table[sid]), sid


@needs_native
def test_native_tables_count_in_retained_bytes_and_go_with_an_eviction() -> None:
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(CASES["patterns_formats"], vocab_by_name("llama3"))
    auto = g.automaton
    base = auto.retained_bytes()
    _explore(auto, 400)
    assert auto.native_bytes > 0
    assert auto.retained_bytes() >= base + auto.native_bytes
    auto.evict()
    assert auto.native_bytes == 0
    assert auto.retained_bytes() < base + 1_000_000
    # rebuilt on demand, with the same language
    text = b'{"sku": "QXR-0427", "slug": "a-b"'
    assert auto.walk(auto.start, text) >= 0
    assert auto.walk(auto.start, b'{"sku": "QXR-04a') < 0


@needs_native
def test_nfa_tables_refuse_malformed_arrays() -> None:
    GRAMMAR_CACHE.clear()
    auto = compile_regex("[a-c]+x", vocab_by_name("llama3")).automaton
    good = auto.nfa_arrays()
    module = native._module
    assert module is not None
    module.nfa_tables(auto.n_classes, *good, 1 << 20)  # accepted as is (room for 1 MiB of steps)

    def with_(i: int, value: np.ndarray) -> list[np.ndarray]:
        arrays = list(good)
        arrays[i] = value
        return arrays

    bad_target = good[3].copy()
    bad_target[0] = 10**6
    bad_class = good[2].copy()
    bad_class[0] = auto.n_classes + 1
    short_pointers = good[0][:-1]
    falling = good[0].copy()
    falling[1], falling[2] = falling[2] + 1, falling[1]
    for arrays in (with_(3, bad_target), with_(2, bad_class), with_(0, short_pointers), with_(0, falling),
                   with_(7, good[7].astype(np.float32))):
        with pytest.raises(ValueError):
            module.nfa_tables(auto.n_classes, *arrays, 1 << 20)
    with pytest.raises(ValueError):
        module.nfa_tables(0, *good, 1 << 20)
    tables = module.nfa_tables(auto.n_classes, *good, 1 << 20)
    args = (auto.max_depth, {}, {}, {}, lambda k, p, r: 0, lambda k, p, r: 0)
    with pytest.raises(ValueError):
        module.plain_row(tables, auto, auto.start, frozenset({(1, 2, 3)}), *args)
    with pytest.raises(ValueError):  # a row outside the table
        module.plain_row(tables, auto, 10**6, auto.states[auto.start].configs, *args)
    with pytest.raises(ValueError):  # not a tables capsule
        module.plain_row(object(), auto, auto.start, auto.states[auto.start].configs, *args)


# ---- faults found by review (each test failed before its fix) -------------------------------

TREE = {"$defs": {"T": {"type": "object", "properties": {
    "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/T"}}}, "required": ["v"]}},
    "$ref": "#/$defs/T"}


@needs_native
@pytest.mark.parametrize("max_depth", [2**31 + 3, 2**32 + 3, 10**20])
def test_rows_equal_python_rows_when_max_depth_passes_int32(max_depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The room a node leaves (max_depth - depth) was cut to int32: 2**32 + 3 left room for 3
    levels, and 2**31 + 3 none, so native rows refused nesting the Python rows allow; past 2**63
    the row raised OverflowError.  SchemaOptions now refuses such a max_depth (see the next test);
    an Automaton made directly still takes one, and its native rows must stay exact."""
    GRAMMAR_CACHE.clear()
    compiled = compile_json_schema(TREE, vocab_by_name("llama3")).automaton
    auto = Automaton(compiled.nfa, compiled.root, max_depth=max_depth)
    explored = _explore(auto, 400)
    for sid in explored:
        native_row = auto.table[sid].copy()
        assert np.array_equal(_python_row(auto, sid, monkeypatch), native_row), f"row of state {sid}"
    deep = b'{"v": 1, "kids": [{"v": 2, "kids": [{"v": 3, "kids": [{"v": 4, "kids": [{"v": 5}]}]}]}]}'
    sid = auto.start
    for byte in deep:  # whole rows, as masks read them
        auto.ensure_rows([sid])
        sid = int(auto.table[sid, auto.class_of_byte[byte]])
        assert sid >= 0
    assert auto.states[sid].accepting


def test_schema_options_refuse_a_max_depth_past_the_limit() -> None:
    """Past 2**30 the completion depth that means "never finishes" would fit the room: the option
    is bounded, and the error names the parameter and the limit."""
    assert SchemaOptions(max_depth=MAX_DEPTH_LIMIT).max_depth == MAX_DEPTH_LIMIT
    with pytest.raises(EnforcerError, match=r"max_depth must be between 1 and 1,048,576"):
        SchemaOptions(max_depth=MAX_DEPTH_LIMIT + 1)
    with pytest.raises(EnforcerError, match="max_depth"):
        SchemaOptions(max_depth=2**32 + 3)


@needs_native
def test_node_ids_past_int32_leave_the_row_to_python() -> None:
    """Node ids grow across evictions for an automaton's life; one past int32 raised ValueError
    out of every native row (a long-lived grammar evicted often would stop masking)."""
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema(TREE, vocab_by_name("llama3")).automaton
    tables = native.nfa_tables(auto)
    big = StackNode(2**31 + 5, (), 0)
    configs = frozenset((q, big) for q, _node in auto.states[auto.start].configs)
    made: list[bytes] = []

    def make(key: bytes, pairs: list, repeats: bool) -> int:
        made.append(key)
        return 0

    assert native.plain_row(tables, auto, auto.start, configs, auto.max_depth, {}, {}, {}, make, make) is False
    assert made == []  # nothing was keyed with a truncated id


@needs_native
def test_plain_row_refuses_a_state_id_past_the_table() -> None:
    """A callback's state id is written into the row only if the table has that state."""
    GRAMMAR_CACHE.clear()
    auto = compile_regex("[a-c]+x", vocab_by_name("llama3")).automaton
    tables = native.nfa_tables(auto)
    configs = auto.states[auto.start].configs
    past = auto.table.shape[0]
    with pytest.raises(ValueError, match="past automaton.table"):
        native.plain_row(tables, auto, auto.start, configs, auto.max_depth, {}, {}, {}, lambda k, p, r: past,
                         lambda k, p, r: past)
    assert not (auto.table[auto.start] >= past).any()


def _tool_union(n: int) -> dict:
    """n tools told apart by a const name, each with its own typed arguments (a large NFA)."""
    return {"anyOf": [{"type": "object", "properties": {
        "name": {"const": f"tool_{i}"},
        "arguments": {"type": "object", "properties": {f"a{j}_{i}": {"type": ("string", "integer", "boolean")[j]}
                                                       for j in range(3)}, "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False} for i in range(n)]}


def _evictions_over(text: str, tools: int, memory_bytes: int) -> tuple[int, Automaton]:
    """Evictions while a matcher masks and accepts every token of ``text`` under ``memory_bytes``."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(_tool_union(tools), vocab_by_name("llama3"), memory_bytes=memory_bytes)
    m = Matcher(g)
    for token in encode("llama3", text):
        m.packed_mask()
        m.accept_token(token)
    assert m.is_accepting()
    assert g.footprint_bytes() >= g.nfa_bytes + g.automaton.native_fixed_bytes + g.retained_bytes()
    return g.evictions, g.automaton


@needs_native
def test_evictions_keep_the_nfa_copy_and_the_budget_ignores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy of the NFA counted in the evictable budget and went with each eviction: a grammar
    whose copy is near its memory_bytes evicted on most steps (more often than without the native
    rows) and copied the NFA again each time (as costly as compiling's copy)."""
    copies = []
    real = Automaton.nfa_arrays

    def counted(self: Automaton) -> tuple[np.ndarray, ...]:
        copies.append(self)
        return real(self)

    monkeypatch.setattr(Automaton, "nfa_arrays", counted)
    text = json.dumps({"name": "tool_149", "arguments": {"a0_149": "Kyoto", "a1_149": 3, "a2_149": True}})
    with monkeypatch.context() as m:
        m.setattr(native, "enabled", False)
        python_evictions, _auto = _evictions_over(text, 150, 1 << 20)
    evictions, auto = _evictions_over(text, 150, 1 << 20)
    assert auto.native_fixed_bytes > (1 << 20) // 2  # the case: a copy near the budget
    assert evictions <= python_evictions
    made = len(copies)
    for _ in range(5):
        auto.evict()
        _explore(auto, 50)
    assert len(copies) == made  # every eviction kept the copy
    assert auto.native_bytes > 0


@needs_native
def test_tables_cleared_inside_a_callback_give_the_same_rows() -> None:
    """An eviction clears the derived steps; one that lands while a row's callbacks run (they run
    Python) must not change the row that call writes, nor the rows after it."""
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema(CASES["numbers_enums"], vocab_by_name("llama3")).automaton
    sids = _explore(auto, 150)

    def numbering() -> tuple[dict[bytes, int], object]:
        ids: dict[bytes, int] = {}
        return ids, lambda key, pairs, repeats: ids.setdefault(key, len(ids) % 50)

    tables = native.nfa_tables(auto)
    expected = {}
    for sid in sids:
        _ids, make = numbering()
        assert native.plain_row(tables, auto, sid, auto.states[sid].configs, auto.max_depth, {}, {}, {}, make, make)
        expected[sid] = auto.table[sid].copy()
    for sid in sids:
        _ids, make = numbering()

        def clearing(key: bytes, pairs: list, repeats: bool, make=make) -> int:
            native.clear_tables(tables)
            return make(key, pairs, repeats)

        assert native.plain_row(tables, auto, sid, auto.states[sid].configs, auto.max_depth, {}, {}, {}, clearing,
                                clearing)
        assert np.array_equal(auto.table[sid], expected[sid]), f"row of state {sid}"
    GRAMMAR_CACHE.clear()  # its rows now hold made-up states


@needs_native
def test_plain_row_takes_configs_only_as_an_exact_frozenset() -> None:
    """The row borrows each configuration's node from ``configs``; an iterable that makes its pairs
    on the fly freed them under the call (a use after free that AddressSanitizer reports with
    PYTHONMALLOC=malloc).  Anything but an exact frozenset is refused."""
    GRAMMAR_CACHE.clear()
    auto = compile_regex("[a-c]+x", vocab_by_name("llama3")).automaton
    tables = native.nfa_tables(auto)
    qs = [q for q, _node in auto.states[auto.start].configs]

    class Fresh:
        def __len__(self) -> int:
            return len(qs)

        def __iter__(self) -> Iterator[tuple[int, StackNode]]:
            for q in qs:
                yield (q, StackNode(10**6 + q, (), 0))

    class Subset(frozenset):
        def __iter__(self) -> Iterator[tuple[int, StackNode]]:
            return iter(Fresh())

    module = native._module
    assert module is not None
    configs = auto.states[auto.start].configs
    for bad in (Fresh(), list(configs), Subset(configs)):
        with pytest.raises(TypeError, match="frozenset"):
            module.plain_row(tables, auto, auto.start, bad, auto.max_depth, {}, {}, {}, lambda k, p, r: 0,
                             lambda k, p, r: 0)


@needs_native
@pytest.mark.parametrize("name", sorted(CASES))
def test_native_flattening_of_the_nfa_equals_numpy(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compile-time copy reads the NFA's lists in C (it took 20-45 ms of a 400 ms compile
    in numpy on bench_scaling's tools 500 and properties 2000); both give the same arrays."""
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema(CASES[name], vocab_by_name("llama3")).automaton
    _explore(auto, 200)  # lazy heads made after the copy stay out of it
    from_c = auto.nfa_arrays()
    with monkeypatch.context() as m:
        m.setattr(native, "flatten_nfa", lambda edges, eps, n: None)
        from_numpy = auto.nfa_arrays()
    assert len(from_c) == len(from_numpy) == 8
    for i, (a, b) in enumerate(zip(from_c, from_numpy)):
        assert a.dtype == b.dtype == np.int32 and np.array_equal(a, b), f"array {i}"


@needs_native
def test_flatten_nfa_refuses_malformed_lists() -> None:
    module = native._module
    assert module is not None
    edges = [[(97, 99, 1)], [], [(0, 255, 0), (10, 10, 2)]]
    eps = [[2], [0, 1], []]
    e_ptr, e_lo, e_hi, e_t, p_ptr, p_t = native.flatten_nfa(edges, eps, 3) or ()
    assert e_ptr.tolist() == [0, 1, 1, 3] and p_ptr.tolist() == [0, 1, 3, 3]
    assert e_lo.tolist() == [97, 0, 10] and e_hi.tolist() == [99, 255, 10] and e_t.tolist() == [1, 0, 2]
    assert p_t.tolist() == [2, 0, 1]
    assert [a.tolist() for a in native.flatten_nfa(edges, eps, 1) or ()] == [[0, 1], [97], [99], [1], [0, 1], [2]]
    bad_cases = [
        ([[(97, 99)]], [[]], "state 0"), ([[(97, 300, 1)]], [[]], "last byte"), ([[(99, 97, 1)]], [[]], "last byte"),
        ([[(-1, 9, 1)]], [[]], "first byte"), ([[(1, 2, 2**31)]], [[]], "target"), ([[]], [[-1]], "epsilon"),
        ([[]], [["x"]], "epsilon"), ([[], (1,)], [[], []], "state 1"), ([[(1, 2, 1.0)]], [[]], "target"),
    ]
    for bad_edges, bad_eps, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            module.flatten_nfa(bad_edges, bad_eps, len(bad_edges))
    with pytest.raises(ValueError, match="length"):
        module.flatten_nfa(edges, eps, 4)
    with pytest.raises(TypeError):
        module.flatten_nfa(tuple(edges), eps, 3)


@needs_native
def test_plain_sets_share_their_configuration_tuples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new set of configurations got fresh (state, node) tuples: on rows of hundreds of
    configurations (a string that any of many patterns may still match) the garbage collector then
    swept the whole heap so often that native rows were slower than Python's (0.62 s against 0.40 s
    for 98 rows of 600 configurations; now 0.11 s).  The sets now share one tuple per configuration,
    as the Python closures do; the rows stay equal to the Python rows."""
    symbols = list("!#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}")
    patterns = [f"^[{symbols[i % len(symbols)]}-~]{{{1 + i % 5}}}[{symbols[(i * 7) % len(symbols)]}]+$"
                for i in range(100)]
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema({"anyOf": [{"type": "string", "pattern": p} for p in patterns]},
                               vocab_by_name("llama3")).automaton
    explored = _explore(auto, 300)
    assert max(len(auto.states[sid].configs) for sid in explored) > 90
    configs = [c for state in auto.states for c in state.configs]
    assert len({id(c) for c in configs}) == len(set(configs))
    for sid in explored[:100]:
        native_row = auto.table[sid].copy()
        assert np.array_equal(_python_row(auto, sid, monkeypatch), native_row), f"row of state {sid}"


@needs_native
def test_memory_accounting_does_not_drift_over_evictions() -> None:
    """Evicted and rebuilt 20 times over the same states, the automaton holds and counts the same."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(CASES["patterns_formats"], vocab_by_name("llama3"))
    auto = g.automaton
    fixed = auto.native_fixed_bytes
    rounds = []
    for _ in range(20):
        _explore(auto, 300)
        rounds.append((auto.retained_bytes(), auto.state_bytes, auto.native_bytes, len(auto.states)))
        g.evict()
        assert auto.native_bytes == 0 and auto.native_fixed_bytes == fixed
    assert rounds[0][2] > 0
    assert rounds == [rounds[0]] * 20


@needs_native
def test_plain_rows_leak_no_reference_even_when_callbacks_raise() -> None:
    """10,000 rows, three in four ended by a callback that raises or answers no state id: no
    argument, configuration or node gains a reference."""
    GRAMMAR_CACHE.clear()
    auto = compile_json_schema(CASES["numbers_enums"], vocab_by_name("llama3")).automaton
    sids = _explore(auto, 40)
    tables = native.nfa_tables(auto)
    configs = [auto.states[sid].configs for sid in sids]
    nodes = list({node for c in configs for _q, node in c})

    class Stop(Exception):
        pass

    def fine(key: bytes, pairs: list, repeats: bool) -> int:
        return 0

    def boom(key: bytes, pairs: list, repeats: bool) -> int:
        raise Stop

    def not_an_id(key: bytes, pairs: list, repeats: bool) -> object:
        return "x"

    def too_big(key: bytes, pairs: list, repeats: bool) -> int:
        return 10**30

    answers = [fine, boom, not_an_id, too_big]
    plain_memo: dict[bytes, int] = {}
    escape_memo: dict[bytes, int] = {}
    made: dict[int, tuple] = {}
    watched = [auto, tables, *configs, *nodes, plain_memo, escape_memo, made, *answers, auto.table]

    def run(n: int) -> None:
        for i in range(n):
            plain_memo.clear()
            escape_memo.clear()
            made.clear()
            try:
                native.plain_row(tables, auto, sids[i % len(sids)], configs[i % len(sids)], auto.max_depth,
                                 plain_memo, escape_memo, made, answers[i % 4], answers[(i // 4) % 4])
            except (Stop, TypeError, OverflowError):
                pass
        for memo in (plain_memo, escape_memo, made):  # what the last row remembered is no leak
            memo.clear()

    run(100)  # first-call caches are not leaks
    before = [sys.getrefcount(o) for o in watched]
    run(10_000)
    assert [sys.getrefcount(o) for o in watched] == before
    GRAMMAR_CACHE.clear()  # its rows now hold made-up states
