"""The native walks build missing plain rows themselves (``direct_row`` in engine/_walk.c, fed by
:meth:`Automaton.row_context`) instead of calling ``Automaton.step_row`` for each: the same rows,
state ids, memos and accounting as the callback path, and its fallbacks where that path leaves a row
to Python.

Each comparison runs the same mask pass twice on fresh grammars, with ``native.direct_rows`` on and
off: the callback path builds the same rows through ``step_row -> _native_row -> plain_row``, so any
difference (a row, a state's configurations, its id, a byte of accounting) is the direct path's.
The masks are also checked against the numpy walks with Python rows where a fallback is forced.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import encode, generate, vocab_by_name

from exl2_enforcer import Matcher, compile_json_schema, compile_regex
from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import UNKNOWN, Automaton
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.grammar import GRAMMAR_CACHE

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

ROOT = Path(__file__).resolve().parent.parent


def _case(name: str) -> tuple[dict, str]:
    schema_path = ROOT / "benchmarks/schemas" / f"{name}.schema.json"
    if not schema_path.exists():
        schema_path = ROOT / "tests/schemas" / f"{name}.json"
    instance = json.loads((ROOT / "benchmarks/schemas" / f"{name}.instance.json").read_text())
    return json.loads(schema_path.read_text()), json.dumps(instance, ensure_ascii=False)


@contextmanager
def _counting_step_row(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The states the walks ask ``step_row`` for (the callback path, or the direct path's fallback)."""
    asked: list[int] = []
    real = Automaton.step_row

    def step_row(self: Automaton, sid: int, c: int) -> int:
        asked.append(sid)
        return real(self, sid, c)

    with monkeypatch.context() as m:
        m.setattr(Automaton, "step_row", step_row)
        yield asked


def _snapshot(auto: Automaton) -> dict[str, Any]:
    """Everything the two paths must agree on: rows, states (ids and configurations), memos, bytes."""
    n = len(auto.states)
    return {
        "table": auto.table[:n].tolist(), "row_done": auto.row_done[:n].tolist(),
        "states": [(s.configs, s.accepting) for s in auto.states],
        "plain_memo": dict(auto._plain_memo), "escape_memo": dict(auto._escape_memo),
        "made": sorted(auto._plain_configs), "state_bytes": auto.state_bytes, "native_bytes": auto.native_bytes,
        "native_interned": auto.native_interned,
        "retained": auto.retained_bytes(), "generation": auto.generation,
    }


def _mask_pass(schema: dict, text: str, direct: bool, monkeypatch: pytest.MonkeyPatch,
               memory_bytes: int | None = None, prepare: Callable[[Automaton], None] | None = None,
               ) -> tuple[list[bytes], dict[str, Any], list[int], int]:
    """Masks of every step of ``text`` on a fresh grammar; the automaton's snapshot after; the
    states step_row was asked for; the evictions."""
    GRAMMAR_CACHE.clear()
    kwargs = {} if memory_bytes is None else {"memory_bytes": memory_bytes}
    g = compile_json_schema(schema, vocab_by_name("llama3"), **kwargs)
    if prepare is not None:
        prepare(g.automaton)
    masks = []
    with monkeypatch.context() as m, _counting_step_row(monkeypatch) as asked:
        m.setattr(native, "direct_rows", direct)
        matcher = Matcher(g)
        for token in encode("llama3", text):
            masks.append(matcher.packed_mask().tobytes())
            matcher.accept_token(token)
        masks.append(matcher.packed_mask().tobytes())
        assert matcher.is_accepting()
    GRAMMAR_CACHE.clear()
    return masks, _snapshot(g.automaton), asked, g.evictions


@needs_native
@pytest.mark.parametrize("name", ["patterns_formats", "function_call", "tree"])
def test_direct_rows_equal_the_callback_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole cold pass: same masks, rows, state ids, memos and retained bytes either way; the
    direct pass asks step_row for no row at all (else this test would compare the callback path
    with itself)."""
    schema, text = _case(name)
    masks, snap, asked, _ = _mask_pass(schema, text, True, monkeypatch)
    slow_masks, slow_snap, slow_asked, _ = _mask_pass(schema, text, False, monkeypatch)
    assert len(slow_asked) > 100 and asked == []
    assert masks == slow_masks
    for key in snap:
        assert snap[key] == slow_snap[key], key


@needs_native
def test_full_tables_fall_back_to_the_automaton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables with room for one NFA state: plain_row refuses nearly every row, the direct path hands
    each to step_row (which builds it in Python), and the pass equals the callback path's and the
    numpy walks' with Python rows."""
    monkeypatch.setattr(native, "PLAIN_TABLE_BYTES", 1)
    schema, text = _case("patterns_formats")
    masks, snap, asked, _ = _mask_pass(schema, text, True, monkeypatch)
    slow_masks, slow_snap, _slow_asked, _ = _mask_pass(schema, text, False, monkeypatch)
    assert len(asked) > 100  # the fallback ran
    assert masks == slow_masks and snap == slow_snap
    monkeypatch.setattr(native, "enabled", False)
    python_masks, _snap, _asked, _ = _mask_pass(schema, text, True, monkeypatch)
    assert masks == python_masks


@needs_native
def test_node_ids_past_int32_fall_back_to_the_automaton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node ids past int32 (an automaton evicted for long enough): plain_row refuses every row
    whose configurations hold such a node, and the direct path leaves it to step_row."""
    schema, text = _case("tree")

    def huge_ids(auto: Automaton) -> None:
        auto._next_uid = 2**31 + 7
        auto.evict()  # the start state again, its nodes to come past int32

    masks, snap, asked, _ = _mask_pass(schema, text, True, monkeypatch, prepare=huge_ids)
    slow_masks, slow_snap, _slow_asked, _ = _mask_pass(schema, text, False, monkeypatch, prepare=huge_ids)
    assert asked  # some rows held a node past int32
    assert masks == slow_masks and snap == slow_snap
    python_masks, _snap, _asked, _ = _mask_pass(schema, text, True, monkeypatch)
    assert masks == python_masks  # the same masks as with small ids


@needs_native
def test_evictions_between_masks_give_the_same_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget small enough to evict on most steps: each walk's context is of its own generation;
    the same evictions, masks and final state as the callback path."""
    schema, text = _case("patterns_formats")
    masks, snap, _asked, evictions = _mask_pass(schema, text, True, monkeypatch, memory_bytes=1 << 20)
    slow_masks, slow_snap, _slow_asked, slow_evictions = _mask_pass(schema, text, False, monkeypatch,
                                                                   memory_bytes=1 << 20)
    assert evictions > 5 and evictions == slow_evictions
    assert masks == slow_masks and snap == slow_snap


SYMBOLS = "!#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}"
#: a string any of 20 patterns may match: one cold trie walk from its start builds ~185 rows, with
#: ~280 new plain sets and ~15 steps out of the string (escapes)
PATTERNS = {"anyOf": [{"type": "string", "pattern": f"^[{SYMBOLS[i % len(SYMBOLS)]}-~]{{{1 + i % 5}}}"
                       f"[{SYMBOLS[(i * 7) % len(SYMBOLS)]}]+$"} for i in range(20)]}


def _walk_outcome(direct: bool, fault: Callable[[Automaton, int], None],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Automaton]:
    """A cold trie walk inside :data:`PATTERNS`'s string whose check callback calls ``fault(auto,
    calls)``: (the count or the exception's type, the automaton)."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(PATTERNS, vocab_by_name("llama3"))
    auto = g.automaton
    sid = auto.walk(auto.start, b'"')
    calls = [0]

    def check() -> None:
        calls[0] += 1
        fault(auto, calls[0])

    monkeypatch.setattr(native, "direct_rows", direct)
    try:
        with auto.lock:
            got: Any = native.trie_walk(auto, g.engine.index.trie, sid, None, check)[0]
    except Exception as exc:  # the outcome compared
        got = type(exc)
    GRAMMAR_CACHE.clear()
    return got, auto


def _consistent(auto: Automaton) -> None:
    """Done rows are whole; the accounting matches the tables and memos as a recount finds them."""
    n = len(auto.states)
    done = auto.row_done[:n]
    assert not (auto.table[:n][done] == UNKNOWN).any()
    _fixed, derived, _interned = native._module.nfa_tables_bytes(auto._native_tables)
    assert auto.native_bytes == derived
    before = auto.state_bytes
    auto.count_native()  # nothing left uncounted
    assert auto.state_bytes == before


@needs_native
@pytest.mark.parametrize("where", ["check", "intern", "escape"])
def test_a_callback_raising_mid_walk_leaves_the_automaton_consistent(where: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline passing after the 50th row, or an interning callback raising on its 100th call
    (an escape on its 8th):
    the walk raises as the callback path does, with the same rows, states and accounting left, all
    counted; the automaton then masks exactly."""
    class Stop(Exception):
        pass

    def fault(_auto: Automaton, calls: int) -> None:
        if where == "check" and calls == 50:
            raise MaskTimeout("deadline")

    outcomes = []
    for direct in (True, False):
        with monkeypatch.context() as m:
            if where != "check":
                # the interning callback, not the native interning (tests/test_native_intern.py faults that)
                m.setattr(native, "c_intern", where != "intern")
                name = "_intern_plain" if where == "intern" else "_escape_step"
                real = getattr(Automaton, name)
                seen = [0]

                def failing(self: Automaton, key: bytes, pairs: list, repeats: bool, real: Any = real,
                            seen: list[int] = seen) -> int:
                    seen[0] += 1
                    if seen[0] == (100 if where == "intern" else 8):
                        raise Stop
                    return int(real(self, key, pairs, repeats))

                m.setattr(Automaton, name, failing)
            got, auto = _walk_outcome(direct, fault, m)
        assert got in (MaskTimeout, Stop)
        _consistent(auto)
        outcomes.append((got, _snapshot(auto)))
    assert outcomes[0] == outcomes[1]


@needs_native
def test_an_eviction_inside_a_walk_stops_the_direct_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """An eviction from inside a walk's own callback (same thread: the lock lets it in) starts a new
    generation whose memos and states the walk's context does not hold.  The walk then goes on with
    ids of the old generation (a misuse: callers hold the lock so that no eviction lands there), and
    the direct path must do exactly what the callback path does from there on: ask step_row, not
    write rows with the old generation's memos."""
    monkeypatch.setattr(native, "ws_runs", False)  # every step through dfa_step
    evicted_at: list[int] = []
    outcomes = []
    for direct in (True, False):
        with _counting_step_row(monkeypatch) as asked:
            def fault(auto: Automaton, calls: int, asked: list[int] = asked) -> None:
                if calls == 50:
                    evicted_at.append(len(asked))
                    auto.evict()

            got, auto = _walk_outcome(direct, fault, monkeypatch)
            outcomes.append((got, _snapshot(auto), asked[evicted_at[-1]:]))
    assert evicted_at[0] == 0 < evicted_at[1]  # before the eviction: direct rows only, or callbacks only
    assert outcomes[0][2]  # after it the direct walk asked step_row
    assert outcomes[0] == outcomes[1]


@needs_native
def test_a_row_context_of_malformed_parts_is_refused() -> None:
    """The context tuple is checked before the walk reads it: wrong length or types are errors."""
    GRAMMAR_CACHE.clear()
    schema, _text = _case("patterns_formats")
    g = compile_json_schema(schema, vocab_by_name("llama3"))
    auto, trie = g.automaton, g.engine.index.trie
    good = auto.row_context()
    assert good is not None
    for bad in [(), good[:-1], (None, *good[1:]), (good[0], tuple(auto.states), *good[2:]), [*good]]:
        with pytest.raises((TypeError, ValueError)):
            native._module.trie_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, trie.byte,
                                     trie.child_lo, trie.child_hi, trie.tok_lo, trie.tok_hi, trie.tok_ids,
                                     auto.start, None, None, None, lambda: None, None, None, None, bad)
    GRAMMAR_CACHE.clear()


@needs_native
def test_direct_walks_leak_no_reference_even_when_callbacks_raise() -> None:
    """600 cold walks building rows directly, three in four ended by a raising check after their
    first rows: no argument, the tables or the start state's configurations gain a reference."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(PATTERNS, vocab_by_name("llama3"))
    auto, trie = g.automaton, g.engine.index.trie
    start = auto.walk(auto.start, b'"')
    state = auto.states[start]
    configs = state.configs

    def fine() -> None:
        return None

    def boom() -> None:
        raise MaskTimeout("deadline")

    def run(n: int) -> None:
        for i in range(n):
            auto.evict()
            sid = auto.reintern(state)  # interned with the same configurations object
            with auto.lock:
                try:
                    native.trie_walk(auto, trie, sid, None, fine if i % 4 == 0 else boom)
                except MaskTimeout:
                    pass

    watched = [auto, trie.byte, trie.tok_ids, auto._native_tables, configs, fine, boom]
    run(20)  # first-call caches are not leaks
    before = [sys.getrefcount(o) for o in watched]
    run(600)
    assert [sys.getrefcount(o) for o in watched] == before
    GRAMMAR_CACHE.clear()


@needs_native
def test_tables_filling_mid_pass_hand_the_rest_to_the_automaton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables with room for a few dozen NFA states, under a budget that evicts on most steps: each
    pass builds rows directly until the tables fill, then hands the rest to step_row, and an eviction
    empties them again.  Both transitions give the callback path's pass, and the numpy walks' masks."""
    schema, text = _case("patterns_formats")
    GRAMMAR_CACHE.clear()
    n_classes = compile_json_schema(schema, vocab_by_name("llama3")).automaton.n_classes
    # the cells of 40 NFA states; the reaches and scratch count against it too: a few dozen states
    monkeypatch.setattr(native, "PLAIN_TABLE_BYTES", 40 * 8 * n_classes)
    masks, snap, asked, evictions = _mask_pass(schema, text, True, monkeypatch, memory_bytes=1 << 20)
    slow_masks, slow_snap, slow_asked, slow_evictions = _mask_pass(schema, text, False, monkeypatch,
                                                                   memory_bytes=1 << 20)
    assert 0 < len(asked) < len(slow_asked)  # some rows direct, some left to the automaton
    assert evictions > 0 and evictions == slow_evictions
    assert masks == slow_masks and snap == slow_snap
    monkeypatch.setattr(native, "enabled", False)
    python_masks, _snap, _asked, _ = _mask_pass(schema, text, True, monkeypatch, memory_bytes=1 << 20)
    assert masks == python_masks


def _wrapped_walk(direct: bool, name: str, wrapper: Callable[[Any, Any], Any],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Automaton, list[int]]:
    """A cold trie walk inside :data:`PATTERNS`'s string with ``Automaton.<name>`` replaced by
    ``wrapper(real, grammar)``: (the count or the exception's type, the automaton, the states the
    walks asked step_row for)."""
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(PATTERNS, vocab_by_name("llama3"))
    auto = g.automaton
    sid = auto.walk(auto.start, b'"')
    with monkeypatch.context() as m, _counting_step_row(monkeypatch) as asked:
        m.setattr(native, "direct_rows", direct)
        # every new plain set through the interning callback (the native interning has tests of its own)
        m.setattr(native, "c_intern", name != "_intern_plain")
        m.setattr(Automaton, name, wrapper(getattr(Automaton, name), g))
        try:
            with auto.lock:
                got: Any = native.trie_walk(auto, g.engine.index.trie, sid, None, lambda: None)[0]
        except Exception as exc:  # the outcome compared
            got = type(exc)
    GRAMMAR_CACHE.clear()
    return got, auto, asked


def _rows_right(auto: Automaton) -> None:
    """Every done row holds, in each class, the state the automaton's own cell step gives
    (:meth:`Automaton._cell_target`, which interns by configurations: the same id for the same
    state): a check of the rows that does not share plain_row's code."""
    n = len(auto.states)
    table, done = auto.table[:n].copy(), auto.row_done[:n].copy()
    with auto.lock:
        for sid in range(n):
            if done[sid]:
                assert [auto._cell_target(sid, c) for c in range(auto.n_classes)] == table[sid].tolist(), sid


@needs_native
@pytest.mark.parametrize(("name", "at"), [("_intern_plain", 1), ("_intern_plain", 7), ("_intern_plain", 60),
                                         ("_escape_step", 1), ("_escape_step", 5)])
def test_a_walk_inside_an_interning_callback_builds_its_own_rows(name: str, at: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A second cold walk (from the start state, then from inside the string) run by an interning
    callback of a row under way: it builds its rows directly in the same tables while the outer row
    still works in their scratch (the inner one takes its own), and both walks end as on the
    callback path, with the same rows, states and accounting, all counted.  From an escape callback
    the outer row interns its plain sets natively, before and after the inner walks."""
    outcomes = []
    for direct in (True, False):
        inner: list[int] = []

        def wrapper(real: Any, g: Any, inner: list[int] = inner) -> Any:
            seen = [0]

            def intern(self: Automaton, key: bytes, pairs: list, repeats: bool) -> int:
                seen[0] += 1
                if seen[0] == at:
                    done = int(self.row_done.sum())
                    for sid in (self.start, self.walk(self.start, b'"')):
                        native.trie_walk(self, g.engine.index.trie, sid, None, lambda: None)
                    inner.append(int(self.row_done.sum()) - done)
                return int(real(self, key, pairs, repeats))
            return intern

        got, auto, asked = _wrapped_walk(direct, name, wrapper, monkeypatch)
        assert inner and inner[0] > 10  # the inner walks built rows
        if direct:
            assert asked == []  # ... directly, with the outer row under way
        _consistent(auto)
        _rows_right(auto)
        outcomes.append((got, _snapshot(auto)))
    assert outcomes[0] == outcomes[1]


@needs_native
@pytest.mark.parametrize("name", ["_intern_plain", "_escape_step"])
def test_a_callback_raising_at_any_call_leaves_what_the_callback_path_leaves(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interning (or escape) callback raising on its k-th call, for each of its first calls and
    then every 37th: the same exception, rows, states and accounting as the callback path, all
    counted."""
    class Stop(Exception):
        pass

    for at in [*range(1, 16), *range(16, 300, 37)]:
        outcomes = []
        for direct in (True, False):
            def wrapper(real: Any, _g: Any, at: int = at) -> Any:
                seen = [0]

                def failing(self: Automaton, key: bytes, pairs: list, repeats: bool) -> int:
                    seen[0] += 1
                    if seen[0] == at:
                        raise Stop
                    return int(real(self, key, pairs, repeats))
                return failing

            got, auto, _asked = _wrapped_walk(direct, name, wrapper, monkeypatch)
            _consistent(auto)
            outcomes.append((got, _snapshot(auto)))
        assert outcomes[0] == outcomes[1], at


@needs_native
def test_rows_of_more_than_224_byte_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A regex whose bytes fall into more than 224 classes (each ASCII character but NUL, and each
    UTF-8 continuation and lead byte, of its own): the change bits of a tabulated NFA state span all
    eight words, and random walks give the same masks and rows with direct rows on and off, and the
    numpy walks' masks."""
    chars = [chr(c) for c in range(0x01, 0x80)] + [chr(c) for c in range(0x80, 0xC0)]
    chars += [chr(0x80 + 0x40 * i) for i in range(30)] + [chr(0x800 + 0x1000 * i) for i in range(15)]
    chars += [chr(0x10000 + 0x40000 * i) for i in range(4)] + [chr(0x100000)]
    pattern = "(" + "|".join(re.escape(ch) + re.escape(chars[(i * 37 + 11) % len(chars)]) * (1 + i % 3)
                             for i, ch in enumerate(chars)) + ")+x"
    vocab = vocab_by_name("llama3")
    GRAMMAR_CACHE.clear()
    first = compile_regex(pattern, vocab)
    assert first.automaton.n_classes > 224
    rng = np.random.default_rng(3)
    for _ in range(2):
        ids = generate(first, rng, budget=40).ids
        runs = []
        for direct, enabled in [(True, True), (False, True), (True, False)]:
            with monkeypatch.context() as m:
                m.setattr(native, "direct_rows", direct)
                m.setattr(native, "enabled", enabled)
                GRAMMAR_CACHE.clear()
                g = compile_regex(pattern, vocab)
                matcher, masks = Matcher(g), []
                for token in ids:
                    masks.append(matcher.packed_mask().tobytes())
                    matcher.accept_token(token)
                masks.append(matcher.packed_mask().tobytes())
                runs.append((masks, _snapshot(g.automaton)))
        assert runs[0] == runs[1]
        assert runs[0][0] == runs[2][0]
    GRAMMAR_CACHE.clear()


@needs_native
def test_matchers_of_one_grammar_filling_masks_in_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads, each with its own matcher of one grammar, fill the masks of the same text at
    once under a budget that evicts on most steps: the walks (each holding the automaton's lock
    around its direct rows) give every thread the single-threaded masks."""
    schema, text = _case("patterns_formats")
    ids = encode("llama3", text)
    reference, _snap, _asked, _ = _mask_pass(schema, text, True, monkeypatch)
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(schema, vocab_by_name("llama3"), memory_bytes=1 << 20)
    wrong: list[Any] = []

    def fill(k: int) -> None:
        try:
            matcher = Matcher(g)
            for i, token in enumerate(ids):
                if matcher.packed_mask().tobytes() != reference[i]:
                    wrong.append((k, i))
                matcher.accept_token(token)
        except Exception as exc:  # reported below
            wrong.append((k, repr(exc)))

    threads = [threading.Thread(target=fill, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong[:5]
    assert g.evictions > 0
    GRAMMAR_CACHE.clear()
