"""The chain of a run in one native pass (``run_chain`` in engine/_walk.c): the states a byte set's
run leads through while all its classes agree, with the rows built on the way, as the numpy path's
``runs._chain`` finds them through its remembered agreements.

Every comparison takes grammars after a cold mask pass (many states, rows and byte sets) and asks
both for the chain of every state whose row has a wide byte set, at several bounds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import encode, vocab_by_name

from exl2_enforcer import Matcher, compile_json_schema, compile_regex
from exl2_enforcer.engine import native, runs
from exl2_enforcer.engine.automaton import UNKNOWN, Automaton
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.grammar import GRAMMAR_CACHE

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

ROOT = Path(__file__).resolve().parent.parent

#: runs that agree, stop agreeing (``split``), loop on themselves (unbounded) and count (bounded),
#: beside the benchmark's formats
HELD_OUT = {
    "type": "object",
    "properties": {
        "site": {"type": "string", "format": "uri"},
        "mail": {"type": "string", "format": "email"},
        "slug": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        "hex": {"type": "string", "pattern": "^[0-9a-f]{8,40}$"},
        "note": {"type": "string", "pattern": "^[^,;]{0,30}[.!]$"},
        "split": {"type": "string", "pattern": "^[a-z]{5}[a-m]{5}$"},
    },
    "required": ["site", "mail", "slug", "hex", "note", "split"],
}
HELD_OUT_TEXT = json.dumps({"site": "https://docs.example.org/a/b-c?q=1&r=two#frag",
                            "mail": "first.last@sub.example.io", "slug": "a-long-slug-with-many-parts-2025",
                            "hex": "0123456789abcdef0123",
                            "note": "Déjà vu — no semicolons here!", "split": "vwxyzabcde"}, ensure_ascii=False)


def _case(name: str) -> tuple[dict, str]:
    if name == "held_out":
        return HELD_OUT, HELD_OUT_TEXT
    schema = json.loads((ROOT / "benchmarks/schemas" / f"{name}.schema.json").read_text())
    instance = json.loads((ROOT / "benchmarks/schemas" / f"{name}.instance.json").read_text())
    return schema, json.dumps(instance, ensure_ascii=False)


def _passed(name: str, vocab: str) -> Any:
    """A fresh grammar after a cold mask pass over the case's instance."""
    GRAMMAR_CACHE.clear()
    schema, text = _case(name)
    g = compile_json_schema(schema, vocab_by_name(vocab))
    matcher = Matcher(g)
    for token in encode(vocab, text):
        matcher.packed_mask()
        matcher.accept_token(token)
    return g


def _wide_states(auto: Automaton) -> list[tuple[int, bytes]]:
    """(state, classes of its widest byte set) for every state with a row and a wide set."""
    memo = runs.RunMemo(auto)
    out = []
    for sid in range(len(auto.states)):
        if auto.row_done[sid]:
            classes = native.widest_set(auto.table, sid, memo.class_size_array, runs.MIN_RUN_BYTES)
            if classes is not None:
                out.append((sid, classes))
    return out


@needs_native
@pytest.mark.parametrize("vocab", ["llama3", "qwen3"])
@pytest.mark.parametrize("name", ["patterns_formats", "held_out"])
def test_the_native_chain_is_the_numpy_chain(name: str, vocab: str) -> None:
    """For every wide state and bounds from 0 to past the longest token: the same states and the
    same cut as ``runs._chain`` (which reads the agreements it settles into a byte set)."""
    g = _passed(name, vocab)
    auto = g.automaton
    wide = _wide_states(auto)
    assert len(wide) > 20
    cuts = 0
    with auto.lock:
        memo = runs.RunMemo(auto)
        for sid, classes in wide:
            for bound in (0, 1, 4, 17, 80):
                got = native.run_chain(auto, classes, sid, bound, lambda: None)
                want = runs._chain(auto, memo, memo.byte_set(classes), [sid], bound)
                assert got == want, (sid, bound)
                cuts += got[1]
    # ``[a-z]{5}[a-m]{5}`` parts its letters after five: a cut (else the cut would be untested)
    assert cuts > 0 or name != "held_out"
    GRAMMAR_CACHE.clear()


@needs_native
def test_a_cold_chain_builds_its_rows_directly_and_as_step_row_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a state no row of the run exists yet: the chain builds them itself (no step_row call) and
    ends with the same rows, states and chain as with every row through step_row."""
    results = []
    for direct in (True, False):
        GRAMMAR_CACHE.clear()
        g = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*@x", vocab_by_name("llama3"))
        auto = g.automaton
        sid = auto.walk(auto.start, b"a")
        asked: list[int] = []
        real = Automaton.step_row

        def step_row(self: Automaton, s: int, c: int, real: Any = real, asked: list[int] = asked) -> int:
            asked.append(s)
            return int(real(self, s, c))

        with monkeypatch.context() as m:
            m.setattr(native, "direct_rows", direct)
            m.setattr(Automaton, "step_row", step_row)
            with auto.lock:
                auto.ensure_rows([sid])  # the run path reads the set off the first row (run_mask)
                classes = native.widest_set(auto.table, sid, runs.RunMemo(auto).class_size_array, 16)
                assert classes is not None
                chain = native.run_chain(auto, classes, sid, 60, lambda: None)
        n = len(auto.states)
        # after "a", 39 more of the 40 letters or digits: S_0 .. S_39, then all of them refused (no cut)
        assert (asked == []) == direct and len(chain[0]) == 40 and chain[1] is False
        results.append((chain, auto.table[:n].tolist(), [s.configs for s in auto.states]))
    assert results[0] == results[1]
    GRAMMAR_CACHE.clear()


@needs_native
def test_a_check_raising_mid_chain_leaves_whole_rows() -> None:
    """``check`` raises after the 10th row built: the chain raises, every done row is whole, and the
    same chain then comes out as on a fresh grammar."""
    GRAMMAR_CACHE.clear()
    g = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*@x", vocab_by_name("llama3"))
    auto = g.automaton
    sid = auto.walk(auto.start, b"a")
    calls = [0]

    def check() -> None:
        calls[0] += 1
        if calls[0] == 10:
            raise MaskTimeout("deadline")

    with auto.lock:
        auto.ensure_rows([sid])
        classes = native.widest_set(auto.table, sid, runs.RunMemo(auto).class_size_array, 16)
        assert classes is not None
        with pytest.raises(MaskTimeout):
            native.run_chain(auto, classes, sid, 60, check)
        n = len(auto.states)
        assert not (auto.table[:n][auto.row_done[:n]] == UNKNOWN).any()
        again = native.run_chain(auto, classes, sid, 60, lambda: None)
    GRAMMAR_CACHE.clear()
    fresh = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*@x", vocab_by_name("llama3")).automaton
    with fresh.lock:
        start = fresh.walk(fresh.start, b"a")
        assert start == sid
        assert native.run_chain(fresh, classes, start, 60, lambda: None) == again
    GRAMMAR_CACHE.clear()


@needs_native
def test_run_masks_with_the_native_chain_equal_the_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run mask of the held-out pass, native (chain and walk in C) against numpy (chain by
    remembered agreements, walk vectorised), on the same grammar; where the numpy path declines (too
    many tokens to walk on), against the trie walk."""
    g = _passed("held_out", "llama3")
    auto, tables = g.automaton, g.engine.index.run_tables
    compared = 0
    for sid, _classes in _wide_states(auto):
        got = runs.run_mask(auto, tables, sid, lambda: None, runs.RunMemo(auto))
        with monkeypatch.context() as m:
            m.setattr(native, "enabled", False)
            want = runs.run_mask(auto, tables, sid, lambda: None, runs.RunMemo(auto))
        if got is None:
            assert want is None, sid
            continue
        if want is None:  # past the numpy path's walk bound (MAX_WALKED): against the trie walk
            words = np.zeros_like(got[0])
            with auto.lock:
                native.trie_walk(auto, g.engine.index.trie, sid, words.view(np.uint32), lambda: None)
            want = (words, 0)
        assert np.array_equal(got[0], want[0]), sid
        compared += 1
    assert compared > 10
    GRAMMAR_CACHE.clear()


@needs_native
def test_malformed_classes_are_refused() -> None:
    """Classes out of order, repeated, past the automaton's, or none; a negative state or bound."""
    GRAMMAR_CACHE.clear()
    g = compile_regex("[a-z]{1,9}", vocab_by_name("llama3"))
    auto = g.automaton
    n = auto.n_classes
    for classes, sid, bound in [(b"", auto.start, 4), (bytes([1, 0]), auto.start, 4), (bytes([1, 1]), auto.start, 4),
                                (bytes([n]), auto.start, 4), (bytes([0]), -1, 4), (bytes([0]), auto.start, -1)]:
        with pytest.raises((ValueError, OverflowError)):
            native._module.run_chain(auto, auto.step_row, n, classes, sid, bound, lambda: None)
    GRAMMAR_CACHE.clear()


#: held-out runs for the chain: counted and unbounded classes, negated classes, sets of 200+ bytes,
#: UTF-8 letters (multi-byte runs), alternations whose branches part the set after a few bytes
CHAIN_REGEXES = [
    "[^,]{0,300}x", "[\\x20-\\x7e]{3,90}[^a]{2,5}", "[^x-z0-9]*@[a-z]+", "[é-ÿ]{2,40}(-[α-ω]{1,9})*",
    "(ab|a[b-d]|[a-c]{1,3}z){2,6}[0-9a-f]{8,40}", "\\w+(\\.\\w+){0,4}@[^\\n]{1,50}", "[a-m]{5}[n-z]{5}[^,]{0,20}",
    "[\\u4e00-\\u9fff]{1,30}[^\\u4e00-\\u9fff]{0,10}",
]


def _reachable(auto: Automaton, limit: int) -> list[int]:
    """Up to ``limit`` states reachable from the start, breadth first, with their rows built."""
    seen, at = [auto.start], 0
    while at < len(seen) and len(seen) < limit:
        auto.ensure_rows([seen[at]])
        for t in dict.fromkeys(auto.table[seen[at]].tolist()):
            if t >= 0 and t not in seen:
                seen.append(t)
        at += 1
    return seen


@needs_native
@pytest.mark.parametrize("regex", CHAIN_REGEXES)
def test_the_native_chain_is_the_numpy_chain_for_any_set_of_classes(regex: str) -> None:
    """Not only the widest set of a row: for every reachable state, that set and random sets of
    classes (a single class, all of them, any subset), at bounds from 0 to far past any token, the
    same chain and cut as ``runs._chain``."""
    GRAMMAR_CACHE.clear()
    auto = compile_regex(regex, vocab_by_name("llama3")).automaton
    rng = np.random.default_rng(sum(map(ord, regex)))
    compared = cuts = 0
    with auto.lock:
        memo = runs.RunMemo(auto)
        for sid in _reachable(auto, 150):
            sets = [bytes(sorted(rng.choice(auto.n_classes, size=k, replace=False).tolist()))
                    for k in (1, int(rng.integers(1, auto.n_classes + 1)), auto.n_classes)]
            widest = native.widest_set(auto.table, sid, memo.class_size_array, 1)
            for classes in sets + ([widest] if widest is not None else []):
                for bound in (0, 1, 4, 33, 2000):
                    got = native.run_chain(auto, classes, sid, bound, lambda: None)
                    want = runs._chain(auto, memo, memo.byte_set(classes), [sid], bound)
                    assert got == want, (regex, sid, classes, bound)
                    compared += 1
                    cuts += got[1]
    assert compared > 100 and cuts > 0
    GRAMMAR_CACHE.clear()


class _ColdView:
    """An automaton as run_chain sees it: a ``table`` that knows no cell at first and is replaced by
    a fresh array of a few rows (a prefix of the real one, or shorter) on every ``step_row``, which
    answers from the real automaton and raises once ``fail_after`` calls are done."""

    def __init__(self, auto: Automaton, fail_after: int | None) -> None:
        self.auto, self.n_classes, self.fail_after, self.calls = auto, auto.n_classes, fail_after, 0
        self.table = np.full((1, auto.n_classes), UNKNOWN, np.int32)

    def step_row(self, sid: int, c: int) -> int:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyError("step failed")
        nxt = int(self.auto.step_row(sid, c))
        known = self.auto.table[: 1 + self.calls % 5]
        self.table = np.concatenate([known, np.full((self.calls % 3 + 1, self.n_classes), UNKNOWN, np.int32)])
        return nxt


@needs_native
@pytest.mark.parametrize("fail_after", [None, 1, 4, 15])
def test_a_chain_over_a_table_replaced_on_every_row(fail_after: int | None) -> None:
    """The table is reallocated (and shrinks below the states the chain reaches) on every step: the
    chain drops its view of the old array and asks for states past the new one's rows, giving the
    chain of the real automaton, or the step's error where it raises."""
    GRAMMAR_CACHE.clear()
    auto = compile_regex("[a-z0-9]{1,40}(-[a-z0-9]{1,40})*@x", vocab_by_name("llama3")).automaton
    with auto.lock:
        sid = auto.walk(auto.start, b"a")
        auto.ensure_rows([sid])
        classes = native.widest_set(auto.table, sid, runs.RunMemo(auto).class_size_array, 16)
        assert classes is not None
        want = native._module.run_chain(auto, auto.step_row, auto.n_classes, classes, sid, 60, lambda: None)
        view = _ColdView(auto, fail_after)
        if fail_after is None:
            assert native._module.run_chain(view, view.step_row, auto.n_classes, classes, sid, 60, None) == want
            assert view.calls > 40
        else:
            with pytest.raises(KeyError):
                native._module.run_chain(view, view.step_row, auto.n_classes, classes, sid, 60, None)
    GRAMMAR_CACHE.clear()
