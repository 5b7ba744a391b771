"""The native token walks (engine/_walk.c) give the numpy walks' masks, bit for bit.

Each case compiles a schema twice, once per walk implementation, forces a valid
instance through both (so every DFA state on the way, and the states of the
tokens the walks try, are built separately), and compares every mask and the
masks of further states reached by seeded random walks.  Both are also checked
against the byte-by-byte reference of tests/enforcer_oracle.py on a sample.
On CI the extension must be built: a missing compiler is a failure there, not
a silent fallback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import encode, reference_text_allowed, token_table, vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.engine import native
from exl2_enforcer.engine.mask import MaskEngine, popcount
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.grammar import GRAMMAR_CACHE, SchemaOptions
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.trie import build_trie

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

CASES = {
    "function_call": ({"type": "object", "properties": {
        "name": {"enum": ["get_weather", "send_email"]},
        "arguments": {"type": "object", "properties": {
            "to": {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 3},
            "city": {"type": "string", "maxLength": 40},
            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
            "required": ["to", "city"], "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False},
        {"name": "send_email", "arguments": {"to": ["anna@example.jp"], "city": "Kyōto \"old\" town", "days": 3}}),
    "formats": ({"type": "object", "properties": {
        "host": {"type": "string", "format": "hostname"},
        "site": {"type": "string", "format": "uri"},
        "when": {"type": "string", "format": "date-time"},
        "ip": {"type": "string", "format": "ipv4"}},
        "required": ["host", "site", "when", "ip"]},
        {"host": "api.eu-west.example.com", "site": "https://www.example.org/p/tents?q=1#top",
         "when": "2024-03-01T10:20:30+01:00", "ip": "192.168.10.254"}),
    "patterns": ({"type": "array", "items": {"anyOf": [
        {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
        {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
        {"type": "number", "minimum": -5, "exclusiveMaximum": 1e6}]}},
        ["spring-sale-2024", "#a0B1c2", 12.5, "x"]),
}


@pytest.fixture
def numpy_walks(monkeypatch):
    monkeypatch.setattr(native, "enabled", False)


def test_extension_is_built_on_ci():
    """CI installs with a C compiler: the fast path must be the one under test there."""
    if in_ci():
        assert native.available, "engine/_walk.c was not built by `pip install -e .`"
        assert native.enabled, "EXL2_ENFORCER_NATIVE=0 is set on CI"


def _masks_along(schema, instance, name: str, seed: int, use_native: bool, monkeypatch) -> list[np.ndarray]:
    """Masks of the states a forced instance and seeded random walks reach, in visiting order."""
    monkeypatch.setattr(native, "enabled", use_native)
    vocab = vocab_by_name(name)
    GRAMMAR_CACHE.clear()  # a new grammar: no state or mask shared between the two runs
    g = compile_json_schema(schema, vocab)
    m = Matcher(g)
    masks = []
    for tid in encode(name, json.dumps(instance, ensure_ascii=False)):
        masks.append(m.packed_mask().copy())
        m.accept_token(tid)
    masks.append(m.packed_mask().copy())
    rng = np.random.default_rng(seed)
    for _walk in range(4):
        m = Matcher(g)
        for _step in range(25):
            allowed = m.allowed_ids()
            allowed = allowed[~np.isin(allowed, list(vocab.end_ids))]
            masks.append(m.packed_mask().copy())
            if allowed.size == 0:
                break
            m.accept_token(int(rng.choice(allowed)))
    return masks


@needs_native
@pytest.mark.parametrize("name", ["llama3", "qwen3", "gemma3"])
@pytest.mark.parametrize("case", list(CASES))
def test_native_masks_equal_numpy_masks(name, case, monkeypatch):
    schema, instance = CASES[case]
    seed = sum(map(ord, name + case))
    fast = _masks_along(schema, instance, name, seed, True, monkeypatch)
    slow = _masks_along(schema, instance, name, seed, False, monkeypatch)
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert np.array_equal(a, b), f"{name} {case}: mask {i} differs between the native and numpy walks"


@needs_native
@pytest.mark.parametrize("pattern, prefix", [
    ("[a-z0-9.-]{1,80}@[a-z]{2,10}", b"jo"),
    ('"([^"\\\\]|\\\\.){0,30}"', b'"a\\'),
    ("(ab|a)*c[0-9]{3}", b"aba"),
])
def test_native_walk_equals_the_bruteforce_reference(pattern, prefix):
    v = vocab_by_name("llama3")
    table = token_table(v)
    g = compile_regex(pattern, v)
    sid = g.automaton.walk(g.automaton.start, prefix)
    assert sid >= 0
    got = np.intersect1d(g.engine.index.unpack(g.engine.mask(sid)), g.engine.index.text_ids)
    ref = np.intersect1d(table.text_ids[reference_text_allowed(g.automaton, table, sid)], g.engine.index.text_ids)
    assert np.array_equal(got, np.sort(ref))


@needs_native
def test_native_walk_honours_the_deadline_check():
    """A walk over most of the vocabulary calls ``check`` while it runs; an exception ends it."""
    v = vocab_by_name("llama3")
    g = compile_regex("[ -~]{0,5}x", v)
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) >= 2:
            raise MaskTimeout("deadline")

    words = np.zeros(g.engine.index.n_words, np.uint32)
    with pytest.raises(MaskTimeout):
        native.trie_walk(g.automaton, g.engine.index.trie, g.automaton.start, words, check)
    # the same walk without a deadline completes, and the engine still answers exactly
    count, _ids, _states = native.trie_walk(g.automaton, g.engine.index.trie, g.automaton.start, None, lambda: None)
    assert count > 1000
    engine = MaskEngine(g.automaton, g.engine.index)
    assert engine.mask(g.automaton.start).any()


@needs_native
def test_native_walk_rejects_bad_arrays_without_crashing():
    v = vocab_by_name("llama3")
    g = compile_regex("[a-z]+", v)
    trie = build_trie(np.array([0, 1, 2]), [b"ab", b"a", b"b"])
    small = np.zeros(1, np.uint32)  # room for token ids 0..31 only
    big_ids = trie.tok_ids.copy()
    big_ids[0] = 1 << 20
    bad = trie.__class__(trie.byte, trie.child_lo, trie.child_hi, trie.tok_lo, trie.tok_hi, big_ids, trie.n_tokens)
    with pytest.raises(ValueError, match="outside the bitmask"):
        native.trie_walk(g.automaton, bad, g.automaton.start, small, lambda: None)
    short = trie.__class__(trie.byte, trie.child_lo[:-1], trie.child_hi, trie.tok_lo, trie.tok_hi, trie.tok_ids,
                           trie.n_tokens)
    with pytest.raises(ValueError, match="disagree in length"):
        native.trie_walk(g.automaton, short, g.automaton.start, small, lambda: None)
    wrong_dtype = trie.__class__(trie.byte, trie.child_lo.astype(np.int64), trie.child_hi, trie.tok_lo, trie.tok_hi,
                                 trie.tok_ids, trie.n_tokens)
    with pytest.raises(ValueError, match="child_lo"):
        native.trie_walk(g.automaton, wrong_dtype, g.automaton.start, small, lambda: None)
    count, _i, _s = native.trie_walk(g.automaton, trie, g.automaton.start, small, lambda: None)
    assert count == 3 and small[0] == 0b111


def test_numpy_walks_still_exact(numpy_walks):
    """The fallback (no compiler) path keeps its own exactness check."""
    v = vocab_by_name("llama3")
    table = token_table(v)
    g = compile_regex("[a-z0-9.-]{1,80}@[a-z]{2,10}", v)
    sid = g.automaton.walk(g.automaton.start, b"jo")
    got = np.intersect1d(g.engine.index.unpack(g.engine.mask(sid)), g.engine.index.text_ids)
    ref = np.intersect1d(table.text_ids[reference_text_allowed(g.automaton, table, sid)], g.engine.index.text_ids)
    assert np.array_equal(got, np.sort(ref))


def _pretty_masks(name: str, options: SchemaOptions, use_native: bool, ws_runs: bool,
                  monkeypatch) -> tuple[list[np.ndarray], int]:
    """Masks along a pretty-printed instance (indentation and newlines between tokens), and the
    number of DFA states the grammar made."""
    monkeypatch.setattr(native, "enabled", use_native)
    monkeypatch.setattr(native, "ws_runs", ws_runs)
    GRAMMAR_CACHE.clear()
    schema, instance = CASES["function_call"]
    g = compile_json_schema(schema, vocab_by_name(name), options)
    m = Matcher(g)
    masks = []
    for tid in encode(name, json.dumps(instance, ensure_ascii=False, indent=2)):
        masks.append(m.packed_mask().copy())
        m.accept_token(tid)
    masks.append(m.packed_mask().copy())
    return masks, len(g.automaton.states)


@needs_native
@pytest.mark.parametrize("name", ["llama3", "qwen3"])
@pytest.mark.parametrize("max_whitespace", [8, 20])
def test_whitespace_runs_count_without_states_and_keep_the_masks(name, max_whitespace, monkeypatch):
    """The native trie walk counts whitespace past a state at a whitespace loop instead of stepping
    it (engine/_walk.c ``ws``): the masks of the numpy walk, with fewer DFA states made than the
    native walk that steps every whitespace byte."""
    options = SchemaOptions(max_whitespace=max_whitespace)
    fast, fast_states = _pretty_masks(name, options, True, True, monkeypatch)
    stepped, stepped_states = _pretty_masks(name, options, True, False, monkeypatch)
    slow, _ = _pretty_masks(name, options, False, False, monkeypatch)
    assert len(fast) == len(slow) == len(stepped)
    for i, (a, b, c) in enumerate(zip(fast, slow, stepped)):
        assert np.array_equal(a, b), f"{name}: mask {i} differs between the native and numpy walks"
        assert np.array_equal(a, c), f"{name}: mask {i} differs with and without whitespace runs"
    assert fast_states < stepped_states


@needs_native
def test_a_whitespace_flag_table_of_the_wrong_size_is_refused():
    g = compile_regex("[ a]{0,9}b", vocab_by_name("llama3"))
    trie, auto = g.engine.index.trie, g.automaton
    module = native._module
    assert module is not None
    with pytest.raises(ValueError, match="256"):
        module.trie_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, trie.byte, trie.child_lo,
                         trie.child_hi, trie.tok_lo, trie.tok_hi, trie.tok_ids, auto.start, None, None, None,
                         lambda: None, b"\x01" * 10, auto.ws_budget, auto.ws_advance)


@needs_native
@pytest.mark.parametrize("vocab", ["llama3", "gemma3"])
def test_packed_ids_equal_the_numpy_packing(vocab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TokenIndex.pack`` in C and in numpy (both of its branches): the same words for id sets of every
    size, repeats and the last ids included; an id outside the words refused with nothing set."""
    GRAMMAR_CACHE.clear()
    index = compile_regex("[a-z]+", vocab_by_name(vocab)).engine.index
    rng = np.random.default_rng(7)
    n = index.n_bits
    sets = [np.zeros(0, np.int64), np.array([0, n - 1, n - 1, 31, 32]), rng.integers(0, n, 999),
            rng.integers(0, n, 1000), rng.integers(0, n, 60_000), np.arange(n)]
    for ids in sets:
        got = index.pack(ids)
        with monkeypatch.context() as m:
            m.setattr(native, "enabled", False)
            want = index.pack(ids)
        assert np.array_equal(got, want) and got.dtype == want.dtype
        assert popcount(got) == np.unique(ids).shape[0]
    words = np.zeros(index.n_words, np.uint32)
    for bad in ([5, n], [-1], [3, 2**40]):
        with pytest.raises(ValueError, match="outside the bitmask"):
            native.pack_ids(np.array(bad, np.int64), words)
        assert not words.any()
    with pytest.raises(TypeError):
        native.pack_ids(None, words)
    with pytest.raises(ValueError):  # ids of another width
        native.pack_ids(np.array([1, 2], np.int32), words)
    GRAMMAR_CACHE.clear()


def test_an_extension_of_another_version_is_refused_with_a_warning(tmp_path) -> None:
    """A build whose ``API_VERSION`` differs (an editable checkout updated without a rebuild) is not
    used: a RuntimeWarning names it and the numpy walks take over, instead of every mask failing."""
    import types

    stale = types.ModuleType("exl2_enforcer.engine._walk")
    stale.__file__ = str(tmp_path / "_walk.so")
    for version in (None, native.API_VERSION - 1):
        if version is not None:
            stale.API_VERSION = version  # type: ignore[attr-defined]
        with pytest.warns(RuntimeWarning, match="another version"):
            assert native._checked(stale) is None
    stale.API_VERSION = native.API_VERSION  # type: ignore[attr-defined]
    assert native._checked(stale) is stale
    if native.available:  # the built extension is this version's
        assert native._module is not None and native._module.API_VERSION == native.API_VERSION
