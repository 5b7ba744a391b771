"""The extension's whole-NFA passes of a compile (engine/_walk.c) against their Python versions in
engine/automaton.py.

``completion_depth``: the same depth for every NFA state of every schema the tests and benchmarks keep,
of held-out shapes (objects in any order, whose heads the C code asks back through a callback; sealed
literal blocks; counted loops; recursion through ``anyOf``), and of hand-made machines with states
that cannot finish.  ``zero_weight_cycle``: the same answer on all of those and the same machine named
on schemas that recurse without consuming input (the machine names the JSON pointer of the error).
Malformed arrays raise ValueError, and what a callback raises comes through unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_sets import in_ci

from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.engine import automaton, native
from exl2_enforcer.engine.automaton import INF, Automaton
from exl2_enforcer.errors import SchemaError

pytestmark = pytest.mark.skipif(not native.available and not in_ci(),
                                reason="C extension not built (no compiler at install); CI requires it")

ROOT = Path(__file__).resolve().parent.parent

#: shapes not among the kept schemas: members in any order (AnyOrder heads), an enum (sealed block)
#: inside a counted array, recursion through anyOf, a pattern with counted runs
HELD_OUT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "kind": {"enum": ["alpha", "beta", "gamma-ray", "δέλτα", 1, None, {"x": [1, 2]}]},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}( ?[A-Z0-9]{4}){2,7}$"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 5},
        "tree": {"$ref": "#/$defs/node"},
        "meta": {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}},
                 "required": ["b"], "additionalProperties": {"type": "number"}},
    },
    "required": ["id", "tree"],
    "$defs": {"node": {"anyOf": [
        {"type": "object", "properties": {"n": {"type": "string", "maxLength": 8},
                                          "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
         "required": ["n"]},
        {"type": "string", "format": "hostname"}]}},
}


def kept_schemas() -> list[tuple[str, Any]]:
    paths = sorted((ROOT / "tests" / "schemas").glob("*.json"))
    paths += sorted((ROOT / "benchmarks" / "schemas").glob("*.schema.json"))
    out = [(p.stem, json.loads(p.read_text())) for p in paths]
    assert len(out) >= 30, "the kept schemas moved"
    return out


def ends_of(nfa: NFA, root: Frag) -> set[int]:
    """The machine ends the automaton passes (its root's, every callee's and every lazy head's callee)."""
    return ({root.end} | {c.end for c, _r, _w in nfa.calls.values()}
            | {o.callee_end for o, _k in nfa.loop_of.values()})


def both(nfa: NFA, ends: set[int], monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    with monkeypatch.context() as m:
        m.setattr(native, "enabled", False)
        python = automaton.completion_depth(nfa, ends)
    got = automaton._native_completion_depth(nfa, ends)
    assert got is not None, "the extension is built, so the native path must answer"
    return got, python


@pytest.mark.parametrize("order", ["schema", "any"])
def test_native_depths_equal_python_on_every_kept_schema(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lazy_kinds: set[str] = set()
    for name, schema in kept_schemas() + [("held_out", HELD_OUT)]:
        nfa, root, _warn = compile_schema(schema, SchemaOptions(property_order=order))  # type: ignore[arg-type]
        got, python = both(nfa, ends_of(nfa, root), monkeypatch)
        assert got == python, f"{name} ({order}): first differing state " + str(
            next(q for q in range(len(nfa)) if got[q] != python[q]))
        lazy_kinds |= {type(obj).__name__ for obj, _k in nfa.loop_of.values()}
    # the comparison covered both ways the C code values a lazy head
    assert "Loop" in lazy_kinds
    assert order == "schema" or "AnyOrder" in lazy_kinds


def test_held_out_has_sealed_blocks_calls_and_finite_depths(monkeypatch: pytest.MonkeyPatch) -> None:
    nfa, root, _warn = compile_schema(HELD_OUT, SchemaOptions(property_order="any"))
    assert nfa.sealed and nfa.calls
    got, python = both(nfa, ends_of(nfa, root), monkeypatch)
    assert got == python
    assert got[root.start] != INF and got[root.end] == 0
    # the recursion through anyOf makes some states need more depth than the root's start
    assert max(d for d in got if d != INF) > got[root.start]


def hand_made() -> tuple[NFA, Frag, dict[str, int]]:
    """A machine with a dead branch (a state with no way to its end), a call into a callee that cannot
    finish, a call whose return cannot finish, and a weighted call that can."""
    nfa = NFA()
    dead = nfa.state()
    nfa.edge(dead, 0x61, 0x61, nfa.state())  # goes nowhere from there
    stuck_callee = Frag(nfa.state(), nfa.state())  # start and end never joined
    ok_callee = nfa.literal(b"x")
    call_stuck = nfa.call(stuck_callee)
    call_ok = nfa.call(ok_callee, weight=3)
    bad_return = nfa.call(ok_callee, weight=1)
    nfa.edge(bad_return.end, 0x62, 0x62, dead)
    start, end = nfa.state(), nfa.state()
    for f in (call_stuck, call_ok):
        nfa.epsilon(start, f.start)
        nfa.epsilon(f.end, end)
    nfa.epsilon(start, bad_return.start)
    nfa.epsilon(start, dead)
    probes = {"dead": dead, "call_stuck": call_stuck.start, "call_ok": call_ok.start,
              "bad_return": bad_return.start, "start": start}
    return nfa, Frag(start, end), probes


def test_unfinishable_states_are_inf_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    nfa, root, at = hand_made()
    got, python = both(nfa, ends_of(nfa, root), monkeypatch)
    assert got == python
    assert got[at["dead"]] == INF and got[at["call_stuck"]] == INF and got[at["bad_return"]] == INF
    assert got[at["call_ok"]] == 3 and got[at["start"]] == 3


def native_args(nfa: NFA, root: Frag) -> list[Any]:
    flat = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
    assert flat is not None
    e_ptr, _lo, _hi, e_t, p_ptr, p_t = flat
    i32 = np.int32
    empty = np.zeros(0, dtype=i32)
    return [len(nfa), e_ptr, e_t, p_ptr, p_t, empty, empty, empty, np.zeros(1, dtype=i32), empty,
            np.zeros(1, dtype=i32), empty, empty, np.zeros(0, dtype=np.uint8), lambda q: 0,
            np.array([root.end], dtype=i32), np.empty(len(nfa), dtype=i32)]


@pytest.mark.skipif(not native.available, reason="needs the extension")
def test_malformed_arrays_raise_value_error() -> None:
    nfa = NFA()
    root = nfa.literal(b"ab")
    good = native_args(nfa, root)
    native.completion_depth(*good)
    assert good[-1][root.start] == 0
    cases: dict[str, dict[int, Any]] = {
        "negative count": {0: -1},
        "short h": {16: np.empty(1, dtype=np.int32)},
        "end out of range": {15: np.array([len(nfa) + 5], dtype=np.int32)},
        "pointers past targets": {7: np.array([0], dtype=np.int32), 8: np.array([0, 3], dtype=np.int32),
                                  10: np.array([0, 0], dtype=np.int32), 13: np.zeros(1, dtype=np.uint8)},
        "a short pointer array": {7: np.array([0], dtype=np.int32)},
        "sealed exit out of range": {5: np.array([0], dtype=np.int32), 6: np.array([99], dtype=np.int32)},
    }
    for why, change in cases.items():
        args = list(good)
        for i, v in change.items():
            args[i] = v
        with pytest.raises(ValueError) as err:
            native.completion_depth(*args)
        assert str(err.value), why


@pytest.mark.skipif(not native.available, reason="needs the extension")
def test_callback_errors_come_through() -> None:
    nfa = NFA()
    body = nfa.literal(b"a")
    root = nfa.loop(body, 1, 3)
    (head, (_obj, _key)), = nfa.loop_of.items()
    args = native_args(nfa, root)
    args[7] = np.array([head], dtype=np.int32)
    args[8] = np.array([0, 1], dtype=np.int32)
    args[9] = np.array([root.end], dtype=np.int32)
    args[10] = np.array([0, 0], dtype=np.int32)
    args[13] = np.ones(1, dtype=np.uint8)

    def boom(q: int) -> int:
        raise KeyError(f"head {q}")

    args[14] = boom
    with pytest.raises(KeyError, match=f"head {head}"):
        native.completion_depth(*args)


def zwc_both(nfa: NFA, root: Frag, monkeypatch: pytest.MonkeyPatch) -> tuple[int | None, int | None]:
    with monkeypatch.context() as m:
        m.setattr(native, "enabled", False)
        python = automaton.zero_weight_cycle(nfa, root)
    flat = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
    assert flat is not None
    return automaton._native_zero_weight_cycle(nfa, root, flat), python


@pytest.mark.parametrize("order", ["schema", "any"])
def test_no_cycle_found_alike_on_every_kept_schema(order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, schema in kept_schemas() + [("held_out", HELD_OUT)]:
        nfa, root, _warn = compile_schema(schema, SchemaOptions(property_order=order))  # type: ignore[arg-type]
        got, python = zwc_both(nfa, root, monkeypatch)
        assert got == python is None, name


#: recursion that consumes no input, in several places: the same machine must be named
CYCLES: list[Any] = [
    {"$defs": {"n": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/n"}]}}, "$ref": "#/$defs/n"},
    {"$defs": {"n": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/m"}]}, "m": {"$ref": "#/$defs/n"}},
     "type": "object", "properties": {"k": {"$ref": "#/$defs/n"}}},
    {"anyOf": [{"$ref": "#"}, {"type": "integer"}]},
    # three defs in a ring behind an array, next to a harmless recursion through an object
    {"type": "array", "items": {"$ref": "#/$defs/a"}, "$defs": {
        "a": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/b"}]},
        "b": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/c"}]},
        "c": {"anyOf": [{"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}}, {"$ref": "#/$defs/a"}]}}},
    # the cycle sits in an optional property of an object in any order
    {"type": "object", "properties": {"p": {"type": "integer"}, "q": {"$ref": "#/$defs/q"}},
     "$defs": {"q": {"anyOf": [{"$ref": "#/$defs/q"}, {"enum": ["a", "b"]}]}}},
]


@pytest.mark.parametrize("order", ["schema", "any"])
@pytest.mark.parametrize("schema", CYCLES, ids=[f"cycle{i}" for i in range(len(CYCLES))])
def test_the_same_cycle_is_named(schema: Any, order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nfa, root, _warn = compile_schema(schema, SchemaOptions(property_order=order))  # type: ignore[arg-type]
    got, python = zwc_both(nfa, root, monkeypatch)
    assert python is not None and got == python
    # and the automaton refuses it naming that machine's pointer, with either pass
    with pytest.raises(SchemaError, match="consumes no input") as native_err:
        Automaton(nfa, root)
    assert native_err.value.pointer == nfa.machine_names.get(python, "")


@pytest.mark.skipif(not native.available, reason="needs the extension")
def test_zero_weight_cycle_refuses_malformed_arrays() -> None:
    nfa = NFA()
    root = nfa.literal(b"ab")
    flat = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
    assert flat is not None
    e_ptr, _lo, _hi, e_t, p_ptr, p_t = flat
    i32 = np.int32

    def call(**change: Any) -> int | None:
        args: dict[str, Any] = dict(seal_lo=np.zeros(0, i32), seal_exit=np.zeros(0, i32), spec_q=np.zeros(0, i32),
                                    out_ptr=np.zeros(1, i32), out_t=np.zeros(0, i32), out_w=np.zeros(0, i32),
                                    more_ptr=np.zeros(1, i32), more_t=np.zeros(0, i32), root=root.start)
        args.update(change)
        return native.zero_weight_cycle(len(nfa), e_ptr, e_t, p_ptr, p_t, **args)

    assert call() is None
    # one special state calling itself with weight 0 is a cycle through its own machine
    assert call(spec_q=np.array([root.start], i32), out_ptr=np.array([0, 1], i32),
                out_t=np.array([root.start], i32), out_w=np.zeros(1, i32), more_ptr=np.array([0, 0], i32)) == root.start
    bad: dict[str, dict[str, Any]] = {
        "root": {"root": len(nfa)},
        "sealed exit": {"seal_lo": np.array([0], i32), "seal_exit": np.array([len(nfa)], i32)},
        "callee": {"spec_q": np.array([0], i32), "out_ptr": np.array([0, 1], i32), "out_t": np.array([-1], i32),
                   "out_w": np.zeros(1, i32), "more_ptr": np.array([0, 0], i32)},
        "pointers": {"spec_q": np.array([0], i32), "out_ptr": np.array([0, 4], i32), "more_ptr": np.array([0, 0], i32)},
        "repeated special": {"spec_q": np.array([0, 0], i32), "out_ptr": np.zeros(3, i32),
                             "more_ptr": np.zeros(3, i32)},
        "short out_ptr": {"spec_q": np.array([0], i32)},
    }
    for why, change in bad.items():
        with pytest.raises(ValueError) as err:
            call(**change)
        assert str(err.value), why


def _combo_machine() -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """States 0 and 1 are combinations that depend on the end, state 2: 0 valued by the callback (5),
    1 by one term of weight 2; state 3 reaches the end by an epsilon edge."""
    i32 = np.int32
    n = 4
    e_ptr, e_t = np.zeros(n + 1, i32), np.zeros(0, i32)
    p_ptr, p_t = np.array([0, 0, 0, 0, 1], i32), np.array([2], i32)  # 3 -> 2 by epsilon
    combo_q = np.array([0, 1], i32)
    dep_ptr, dep_t = np.array([0, 1, 2], i32), np.array([2, 2], i32)
    term_ptr, term_dep, term_w = np.array([0, 0, 1], i32), np.array([2], i32), np.array([2], i32)
    seal_lo, seal_exit = np.zeros(0, i32), np.zeros(0, i32)
    args = [n, e_ptr, e_t, p_ptr, p_t, seal_lo, seal_exit, combo_q, dep_ptr, dep_t, term_ptr, term_dep, term_w,
            np.array([1, 0], np.uint8), lambda q: 5, np.array([2], i32), np.empty(n, i32)]
    return args, combo_q, term_ptr, term_dep, seal_exit


@pytest.mark.skipif(not native.available, reason="needs the extension")
@pytest.mark.parametrize("victim", ["combo_q", "term_ptr", "term_dep", "ends"])
def test_a_callback_that_rewrites_the_inputs_changes_nothing(victim: str) -> None:
    """The callback may write to the arrays the pass was given (numpy arrays stay writable while C
    reads them): the pass reads its own copies, so the depths are those of the arrays as passed, and
    no index it reads can leave them (it read 200 MB past ``h`` before)."""
    args, *_ = _combo_machine()
    native.completion_depth(*args)
    want = args[-1].copy()
    assert want.tolist() == [5, 2, 0, 0]
    args, combo_q, term_ptr, term_dep, _seal_exit = _combo_machine()
    arrays = {"combo_q": combo_q, "term_ptr": term_ptr, "term_dep": term_dep, "ends": args[15]}

    def rewrite(q: int) -> int:
        arrays[victim][-1] = 50_000_000
        return 5

    args[14] = rewrite
    native.completion_depth(*args)
    assert args[-1].tolist() == want.tolist()


@pytest.mark.skipif(not native.available, reason="needs the extension")
def test_h_may_be_one_of_the_inputs_and_a_negative_callback_depth_is_refused() -> None:
    """``h`` given as the very array of the combination states (written while they are still read):
    the same depths as with a separate ``h``; a callback depth below 0 is a ValueError naming the state."""
    args, *_ = _combo_machine()
    native.completion_depth(*args)
    want = args[-1].tolist()
    args, combo_q, *_ = _combo_machine()
    aliased = np.zeros(4, np.int32)
    aliased[:2] = combo_q
    args[7] = aliased[:2]
    args[-1] = aliased
    native.completion_depth(*args)
    assert aliased.tolist() == want
    args, *_ = _combo_machine()
    args[14] = lambda q: -3
    with pytest.raises(ValueError, match=r"value\(0\) returned a negative depth -3"):
        native.completion_depth(*args)
