"""The native rows intern new plain sets themselves (``intern_here`` in engine/_walk.c, fed by
:meth:`Automaton.interner`) instead of calling ``Automaton._intern_plain`` for each: the same DFA
states, ids, index entries, memos and byte estimates, and the callback wherever that path must act
(a set with a repeated NFA state, a state past the table's rows).

Each comparison runs the same cold mask pass on fresh grammars with ``native.c_intern`` on and off:
off, every new plain set goes through the callback, so any difference is the native interning's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from data_sets import in_ci
from enforcer_oracle import encode, vocab_by_name

from exl2_enforcer import Matcher, compile_json_schema
from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import UNKNOWN, Automaton, DfaState
from exl2_enforcer.grammar import GRAMMAR_CACHE

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

ROOT = Path(__file__).resolve().parent.parent

#: held-out shapes beside the benchmark cases: formats inside arrays, an enum next to patterns,
#: recursion through anyOf (sets with one NFA state on two nodes), a long counted pattern
HELD_OUT = {
    "type": "object",
    "properties": {
        "contacts": {"type": "array", "maxItems": 4, "items": {"type": "object", "properties": {
            "mail": {"type": "string", "format": "email"}, "site": {"type": "string", "format": "hostname"},
            "tag": {"enum": ["alpha", "beta", "gamma-ray", "δέλτα"]}}, "required": ["mail"]}},
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}( ?[A-Z0-9]{4}){2,7}$"},
        "tree": {"$ref": "#/$defs/node"},
    },
    "required": ["contacts", "code", "tree"],
    "$defs": {"node": {"anyOf": [
        {"type": "object", "properties": {"n": {"type": "string"}, "kids": {"type": "array", "items": {
            "$ref": "#/$defs/node"}}}, "required": ["n", "kids"]},
        {"type": "object", "properties": {"n": {"type": "string"}, "kids": {"type": "array", "items": {
            "$ref": "#/$defs/node"}}, "zip": {"type": "boolean"}}, "required": ["n", "kids", "zip"]}]}},
}
HELD_OUT_TEXT = json.dumps({
    "contacts": [{"mail": "a.b+c@mail.example-shop.co.uk", "site": "api.eu-west.example.com", "tag": "δέλτα"},
                 {"mail": "x@y.io", "tag": "gamma-ray"}],
    "code": "DE89 3704 0044 0532 0130",
    "tree": {"n": "root", "kids": [{"n": "a", "kids": [], "zip": True}, {"n": "b", "kids": [{"n": "c", "kids": []}]}]},
}, ensure_ascii=False)


def _case(name: str) -> tuple[dict, str]:
    if name == "held_out":
        return HELD_OUT, HELD_OUT_TEXT
    schema_path = ROOT / "benchmarks/schemas" / f"{name}.schema.json"
    if not schema_path.exists():
        schema_path = ROOT / "tests/schemas" / f"{name}.json"
    instance = json.loads((ROOT / "benchmarks/schemas" / f"{name}.instance.json").read_text())
    return json.loads(schema_path.read_text()), json.dumps(instance, ensure_ascii=False)


def _snapshot(auto: Automaton) -> dict[str, Any]:
    n = len(auto.states)
    return {
        "table": auto.table[:n].tolist(), "row_done": auto.row_done[:n].tolist(),
        "states": [(s.configs, s.accepting) for s in auto.states], "index": dict(auto._index),
        "plain_memo": dict(auto._plain_memo), "escape_memo": dict(auto._escape_memo),
        "state_bytes": auto.state_bytes, "retained": auto.retained_bytes(), "generation": auto.generation,
    }


def _pass(schema: dict, text: str, vocab: str, c_intern: bool, monkeypatch: pytest.MonkeyPatch,
          memory_bytes: int | None = None) -> tuple[list[bytes], dict[str, Any], list[bool], int]:
    """Masks of every step of ``text`` on a fresh grammar, the automaton's snapshot after, the
    ``repeats`` flag of each call of the interning callback, and the evictions."""
    GRAMMAR_CACHE.clear()
    kwargs = {} if memory_bytes is None else {"memory_bytes": memory_bytes}
    g = compile_json_schema(schema, vocab_by_name(vocab), **kwargs)
    calls: list[bool] = []
    real = Automaton._intern_plain

    def counting(self: Automaton, key: bytes, pairs: list, repeats: bool) -> int:
        calls.append(repeats)
        return real(self, key, pairs, repeats)

    masks = []
    with monkeypatch.context() as m:
        m.setattr(native, "c_intern", c_intern)
        m.setattr(Automaton, "_intern_plain", counting)
        matcher = Matcher(g)
        for token in encode(vocab, text):
            masks.append(matcher.packed_mask().tobytes())
            matcher.accept_token(token)
        masks.append(matcher.packed_mask().tobytes())
        assert matcher.is_accepting()
    GRAMMAR_CACHE.clear()
    return masks, _snapshot(g.automaton), calls, g.evictions


@needs_native
@pytest.mark.parametrize("vocab", ["llama3", "qwen3"])
@pytest.mark.parametrize("name", ["patterns_formats", "function_call", "tree", "held_out"])
def test_native_interning_equals_the_callback(name: str, vocab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole cold pass: the same masks, states in the same order, index, memos and byte
    estimates either way; with the native interning the callback takes only what it must."""
    schema, text = _case(name)
    masks, snap, calls, _ = _pass(schema, text, vocab, True, monkeypatch)
    slow_masks, slow_snap, slow_calls, _ = _pass(schema, text, vocab, False, monkeypatch)
    assert masks == slow_masks
    for key in snap:
        assert snap[key] == slow_snap[key], key
    # most new sets are interned natively (else this test would compare the callback with itself)
    assert len(slow_calls) > 200 and len(calls) * 10 < len(slow_calls)


@needs_native
def test_a_table_without_room_hands_the_new_state_to_the_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first table has 64 rows: the set whose state would be the 65th goes to the callback
    (which grows the table), not to the native interning, and the pass is the callback path's."""
    schema, text = _case("patterns_formats")
    _masks, snap, calls, _ = _pass(schema, text, "llama3", True, monkeypatch)
    assert False in calls  # a set without repeats reached the callback: the table was full
    assert len(snap["states"]) > 64


def _two_node_row(c_intern: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[Any], list[bool]]:
    """The row of a state made of one string position on two nodes of one depth (as two callers of
    one shared machine leave it before their closures merge them): its cells, the configurations of
    the states they lead to, and the ``repeats`` flags the interning callback was called with."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema({"type": "string", "pattern": "^[a-z]{3,9}-[0-9]{2}$"}, vocab_by_name("llama3"))
    auto = g.automaton
    sid = auto.walk(auto.start, b'"ab')
    ((q, node),) = auto.states[sid].configs
    other = auto._push(q, node, 0)  # any other node of the same depth: plain steps never read it
    twin = auto._node(((q, other),), node.depth)
    calls: list[bool] = []
    real = Automaton._intern_plain

    def counting(self: Automaton, key: bytes, pairs: list, repeats: bool) -> int:
        calls.append(repeats)
        return real(self, key, pairs, repeats)

    with monkeypatch.context() as m:
        m.setattr(native, "c_intern", c_intern)
        m.setattr(Automaton, "_intern_plain", counting)
        both = auto._intern(frozenset({(q, node), (q, twin)}), False)
        auto.ensure_rows([both])
    row = auto.table[both].tolist()
    targets = [sorted((p, n.frames) for p, n in auto.states[t].configs) if t >= 0 else t for t in row]
    GRAMMAR_CACHE.clear()
    return row, targets, calls


@needs_native
def test_sets_with_a_repeated_nfa_state_go_to_the_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    """One NFA state on two nodes of one depth steps to sets that repeat NFA states: those are
    merged by the callback (``_canonical``, one node per state and depth), as without the native
    interning, and the row is the same."""
    row, targets, calls = _two_node_row(True, monkeypatch)
    slow_row, slow_targets, slow_calls = _two_node_row(False, monkeypatch)
    assert True in calls and calls.count(True) == slow_calls.count(True)
    assert row == slow_row and targets == slow_targets
    assert all(len({p for p, _f in t}) == len(t) for t in targets if isinstance(t, list))  # merged


@needs_native
def test_evictions_reset_the_native_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget small enough to evict on most steps: the same evictions and pass either way, and
    after each eviction the native count starts again from nothing."""
    schema, text = _case("patterns_formats")
    masks, snap, _calls, evictions = _pass(schema, text, "llama3", True, monkeypatch, memory_bytes=1 << 20)
    slow_masks, slow_snap, _slow, slow_evictions = _pass(schema, text, "llama3", False, monkeypatch,
                                                        memory_bytes=1 << 20)
    assert evictions > 5 and evictions == slow_evictions
    assert masks == slow_masks and snap == slow_snap
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(schema, vocab_by_name("llama3"))
    auto = g.automaton
    Matcher(g).packed_mask()
    assert auto.native_interned > 0
    auto.evict()
    assert auto.native_interned == 0 == native._module.nfa_tables_bytes(auto._native_tables)[2]


class _Boom(Exception):
    pass


def _assert_consistent(auto: Automaton) -> None:
    """After a raise mid-pass: every listed state is indexed under its configurations and every index
    or memo entry names a listed state; done rows are whole; the bytes recount the same."""
    n = len(auto.states)
    assert all(auto._index[(s.configs, s.accepting)] == i for i, s in enumerate(auto.states))
    assert all(0 <= sid < n for sid in auto._index.values()) and len(auto._index) == n
    assert all(0 <= sid < n for sid in auto._plain_memo.values())
    assert not (auto.table[:n][auto.row_done[:n]] == UNKNOWN).any()
    before = auto.state_bytes
    auto.count_native()
    assert auto.state_bytes == before


@needs_native
@pytest.mark.parametrize("fail_at", [1, 40, 300])
def test_a_state_class_raising_leaves_the_automaton_consistent(fail_at: int, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """The native interning's new state raises on its ``fail_at``-th (the class's ``__new__``: the
    native code makes states with the type's ``tp_new``, not ``__init__``): the mask raises that
    error; every listed state is indexed under its configurations and every index entry names a
    listed state; done rows are whole; the bytes recount the same; the grammar then masks as a
    fresh one does."""
    schema, text = _case("patterns_formats")
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(schema, vocab_by_name("llama3"))
    auto = g.automaton
    made = [0]

    class Failing(DfaState):
        __slots__ = ()

        def __new__(cls, *args: Any) -> Failing:
            made[0] += 1
            if made[0] == fail_at:
                raise _Boom
            return super().__new__(cls)

    real = Automaton.interner

    def interner(self: Automaton) -> tuple[Any, ...] | None:
        got = real(self)
        return None if got is None else (got[0], got[1], Failing, *got[3:])

    masks = []
    with monkeypatch.context() as m:
        m.setattr(Automaton, "interner", interner)
        matcher = Matcher(g)
        tokens = encode("llama3", text)
        with pytest.raises(_Boom):
            for token in tokens:
                matcher.packed_mask()
                matcher.accept_token(token)
    _assert_consistent(auto)
    # the same grammar goes on exactly: every mask of the text as a fresh grammar gives it
    matcher = Matcher(g)
    for token in tokens:
        masks.append(matcher.packed_mask().tobytes())
        matcher.accept_token(token)
    fresh, _snap, _calls, _ = _pass(schema, text, "llama3", True, monkeypatch)
    assert masks == fresh[:-1]


@needs_native
def test_a_malformed_interner_is_refused() -> None:
    """The interner tuple is checked before a row reads it: wrong length or types are errors."""
    GRAMMAR_CACHE.clear()
    schema, _text = _case("patterns_formats")
    g = compile_json_schema(schema, vocab_by_name("llama3"))
    auto = g.automaton
    good = auto.interner()
    assert good is not None
    sid = auto.walk(auto.start, b'{"sku": "')
    configs = auto.states[sid].configs
    args = (auto._native_tables, auto, sid, configs, auto.max_depth, {}, {}, {}, auto._intern_plain,
            auto._escape_step)
    for bad in [(), good[:-1], (tuple(good[0]), *good[1:]), (good[0], list(good[1]), *good[2:]),
                (*good[:2], 7, *good[3:]), (*good[:3], "400", *good[4:]), [*good]]:
        with pytest.raises((TypeError, ValueError)):
            native._module.plain_row(*args, bad)
    context = auto.row_context()
    assert context is not None
    trie = g.engine.index.trie
    with pytest.raises(TypeError):
        native._module.trie_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, trie.byte,
                                 trie.child_lo, trie.child_hi, trie.tok_lo, trie.tok_hi, trie.tok_ids,
                                 sid, None, None, None, lambda: None, None, None, None, (*context[:-1], (1, 2)))
    GRAMMAR_CACHE.clear()


def _escape_fault_pass(c_intern: bool, fail_at: int, monkeypatch: pytest.MonkeyPatch
                       ) -> tuple[dict[str, Any], list[bytes]]:
    """A cold pass whose ``fail_at``-th escape step raises (after the rows before it interned their
    plain sets, natively or by the callback): the automaton's snapshot then, checked consistent,
    and the masks of the whole text computed after it on the same grammar."""
    schema, text = _case("patterns_formats")
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(schema, vocab_by_name("llama3"))
    auto = g.automaton
    real = Automaton._escape_step
    seen = [0]

    def escape(self: Automaton, key: bytes, pairs: list, repeats: bool) -> int:
        seen[0] += 1
        if seen[0] == fail_at:
            raise _Boom
        return real(self, key, pairs, repeats)

    tokens = encode("llama3", text)
    with monkeypatch.context() as m:
        m.setattr(native, "c_intern", c_intern)
        m.setattr(Automaton, "_escape_step", escape)
        matcher = Matcher(g)
        with pytest.raises(_Boom):
            for token in tokens:
                matcher.packed_mask()
                matcher.accept_token(token)
        _assert_consistent(auto)
        assert (auto.native_interned > 0) == c_intern  # sets were interned natively before the fault
        snap = _snapshot(auto)
        seen[0] = -(1 << 30)  # no more faults
        matcher = Matcher(g)
        masks = []
        for token in tokens:
            masks.append(matcher.packed_mask().tobytes())
            matcher.accept_token(token)
    GRAMMAR_CACHE.clear()
    return snap, masks


@needs_native
@pytest.mark.parametrize("fail_at", [3, 25, 90])  # 25, 90: the raising row interned natively before
def test_an_escape_step_raising_mid_row_leaves_what_the_callback_path_leaves(fail_at: int,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An escape step raises in the middle of a row whose earlier plain sets were interned (in C,
    or by the callback with ``c_intern`` off): the same states, index, memos and bytes either way,
    all consistent, and the same grammar then masks the text as a fresh one does."""
    snap, masks = _escape_fault_pass(True, fail_at, monkeypatch)
    slow_snap, slow_masks = _escape_fault_pass(False, fail_at, monkeypatch)
    for key in snap:
        assert snap[key] == slow_snap[key], key
    fresh, _snap, _calls, _ = _pass(*_case("patterns_formats"), "llama3", True, monkeypatch)
    assert masks == slow_masks == fresh[:-1]


def test_native_states_hold_every_field_of_a_dfa_state() -> None:
    """The native interning sets a new state's ``configs`` and ``accepting`` itself (``new_state`` in
    _walk.c, without ``DfaState.__init__``): a field added to DfaState must be set there too."""
    assert set(DfaState.__slots__) == {"configs", "accepting"}
    assert DfaState.__init__.__code__.co_names == ("configs", "accepting")

