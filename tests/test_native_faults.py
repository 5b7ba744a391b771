"""Faults the native token walks (engine/_walk.c) must survive, each found by review.

Memory safety: bad start states, malformed tries (overlapping ranges), overflowing byte
offsets, buffers of the wrong dtype, a table reallocated on every row build, callbacks
that raise, and no reference leaked over 10,000 walks.  Exactness: an empty trie (a
byte-level vocabulary has no token after a closing quote) and the masks of negated
classes, unicode, long whitespace, recursion, maxLength strings and end ids on all five
shared tokenizers, against the numpy walks and the brute-force reference.  Threads: two
matchers of one grammar computing masks at once.  The deadline check inside warm walks.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer import compile_json_schema, compile_regex
from exl2_enforcer.engine import native
from exl2_enforcer.engine.automaton import UNKNOWN, Automaton
from exl2_enforcer.errors import MaskTimeout
from exl2_enforcer.grammar import GRAMMAR_CACHE
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.trie import TokenTrie, build_trie
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")

TOKENIZERS = ["llama2", "llama3", "qwen3", "gemma3", "deepseek_v3"]


def _small() -> tuple[Automaton, TokenTrie]:
    g = compile_regex("[a-z]+", vocab_by_name("llama3"))
    return g.automaton, build_trie(np.array([0, 1, 2]), [b"ab", b"a", b"b"])


def _rows_walk(auto, flat, start, length, ids, rows, state, offset, words, check) -> int:
    """Read token rows ``rows`` from byte ``offset`` on in ``state``: the cut rows of a one-state chain."""
    none = np.zeros(0, np.int64)
    no_layout = (np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.int32), np.zeros(0, np.uint8))
    return native._module.groups_walk(auto, auto.step_row, auto.n_classes, auto.class_of_byte, flat, start, length,
                                      ids, np.array([state], np.int64), 0, none, np.zeros(0, np.int32), none, none,
                                      *no_layout, rows, offset, words, check, 1 << 30)


class ColdView:
    """An automaton as the walks see it, whose ``table`` knows no cell at first.

    Every step goes through ``step_row``, which answers from the real automaton and then
    replaces ``table`` by a fresh, larger array (as :meth:`Automaton._intern` does when it
    grows): the walk must drop its view of the old array and read states beyond its rows.
    """

    def __init__(self, auto: Automaton, *, fail_after: int | None = None) -> None:
        self.auto = auto
        self.n_classes = auto.n_classes
        self.class_of_byte = auto.class_of_byte
        self.table = np.full((1, auto.n_classes), UNKNOWN, np.int32)
        self.calls = 0
        self.fail_after = fail_after

    def step_row(self, sid: int, c: int) -> int:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyError("step failed")
        nxt = self.auto.step_row(sid, c)
        known = self.auto.table[: 1 + self.calls % 7]  # a prefix of the rows: later states lie beyond it
        self.table = np.concatenate([known, np.full((self.calls % 3 + 1, self.n_classes), UNKNOWN, np.int32)])
        return nxt


def _ids(words: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))


# ----------------------------------------------------------------------------- memory safety


@needs_native
@pytest.mark.parametrize("start", [-1, -1_000_000, -(1 << 31)])
def test_a_negative_start_state_is_a_value_error(start):
    """A negative start used to index before the table (a crash for large ones)."""
    auto, trie = _small()
    with pytest.raises(ValueError, match=f"DFA state {start} "):
        native.trie_walk(auto, trie, start, np.zeros(1, np.uint32), lambda: None)


@pytest.mark.parametrize("use_native", [True, False])
def test_the_engine_refuses_a_state_id_that_is_not_a_state(use_native, monkeypatch):
    """``MaskEngine.mask(-1)`` gave a garbage mask (numpy wrapped around to the last state)."""
    if use_native and not native.available:
        pytest.skip("C extension not built")
    monkeypatch.setattr(native, "enabled", use_native)
    GRAMMAR_CACHE.clear()
    g = compile_regex("[a-z]{0,3}x", vocab_by_name("llama3"))
    for sid in (-1, len(g.automaton.states)):
        with pytest.raises(ValueError, match=f"sid {sid} is not a DFA state"):
            g.engine.mask(sid)
        with pytest.raises(ValueError, match=f"sid {sid} is not a DFA state"):
            g.engine.salvage_mask(sid)


@needs_native
def test_overlapping_child_ranges_are_refused_not_overrun():
    """Children shared by two nodes are pushed twice: the stack sized for a tree overflowed."""
    auto, _trie = _small()
    n = 40
    byte = np.full(n, ord("a"), np.uint8)
    byte[0] = 0
    # node k's children are k+1 .. n-1: every node is everyone's grandchild
    lo = np.arange(1, n + 1, dtype=np.int32)
    hi = np.full(n, n, np.int32)
    z = np.zeros(n, np.int32)
    bad = TokenTrie(byte, lo, hi, z, z.copy(), np.zeros(0, np.int32), 0)
    with pytest.raises(ValueError, match="overlap"):
        native.trie_walk(auto, bad, auto.start, None, lambda: None)
    # node k's children are k+1 and k+2: the stack stays small, but the paths are Fibonacci(n) many
    fib = TokenTrie(byte, lo, np.minimum(lo + 2, n).astype(np.int32), z, z.copy(), np.zeros(0, np.int32), 0)
    with pytest.raises(ValueError, match="overlap"):
        native.trie_walk(auto, fib, auto.start, None, lambda: None)


@needs_native
def test_overlapping_token_ranges_do_not_overrun_the_outputs():
    """Each node naming every token wrote past ``out_ids`` (sized for the tokens, once each)."""
    auto, trie = _small()
    n = trie.n_nodes
    every = TokenTrie(trie.byte, trie.child_lo, trie.child_hi, np.zeros(n, np.int32), np.full(n, 3, np.int32),
                      trie.tok_ids, trie.n_tokens)
    with pytest.raises(ValueError, match="more tokens than"):
        native.trie_walk(auto, every, auto.start, None, lambda: None, with_states=True)


@needs_native
def test_overflowing_byte_offsets_are_refused():
    """``start + offset`` wrapped to a negative byte position that passed the range checks."""
    auto, _trie = _small()
    flat = np.frombuffer(b"abba", np.uint8)
    start = np.array([1 << 62], np.int64)
    length = np.array([-(1 << 62) + 2], np.int64)  # start + length == 2: inside ``flat``
    ids = np.array([5], np.int64)
    words = np.zeros(1, np.uint32)
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="byte range of token row 0"):
        _rows_walk(auto, flat, start, length, ids, one, auto.start, 1 << 62, words, lambda: None)
    assert not words.any()


@needs_native
def test_buffers_of_a_wrong_dtype_are_refused():
    """Same-size floats were read as integers (a float32 mask, a float32 table)."""
    auto, trie = _small()
    with pytest.raises(ValueError, match="words must hold integers"):
        native.trie_walk(auto, trie, auto.start, np.zeros(1, np.float32), lambda: None)
    float_ids = TokenTrie(trie.byte, trie.child_lo, trie.child_hi, trie.tok_lo, trie.tok_hi,
                          trie.tok_ids.astype(np.float32), trie.n_tokens)
    with pytest.raises(ValueError, match="tok_ids must hold integers"):
        native.trie_walk(auto, float_ids, auto.start, np.zeros(1, np.uint32), lambda: None)
    view = ColdView(auto)
    view.table = auto.table.astype(np.float32)
    with pytest.raises(ValueError, match="automaton.table"):
        native.trie_walk(view, trie, auto.start, np.zeros(1, np.uint32), lambda: None)
    with pytest.raises(ValueError, match="contiguous"):
        native.trie_walk(auto, trie, auto.start, np.zeros(4, np.uint32)[::2], lambda: None)
    # the callers' own dtypes: signed or unsigned 32-bit words both work
    for dtype in (np.uint32, np.int32):
        words = np.zeros(1, dtype)
        assert native.trie_walk(auto, trie, auto.start, words, lambda: None)[0] == 3
        assert _ids(words).tolist() == [0, 1, 2]


@needs_native
def test_a_table_reallocated_on_every_row_build_gives_the_same_mask():
    """The walk re-reads ``automaton.table`` after each callback and steps states beyond its rows."""
    v = vocab_by_name("llama3")
    table = token_table(v)
    g = compile_regex(r"[a-z0-9_]{1,12}(\.[a-z]{2,4}){0,2}", v)
    auto = g.automaton
    sid = auto.walk(auto.start, b"ab")
    view = ColdView(auto)
    words = np.zeros(g.engine.index.n_words, np.uint32)
    native.trie_walk(view, g.engine.index.trie, sid, words, lambda: None)
    assert view.calls > 100
    assert np.array_equal(_ids(words), np.setdiff1d(reference_allowed_ids(g, table, sid), table.ends))


@needs_native
def test_walks_leak_no_reference_even_when_callbacks_raise():
    """10,000 walks, half of them ended by a raising ``step`` or ``check``: no argument gains a reference."""
    auto, trie = _small()
    words = np.zeros(1, np.uint32)
    flat, start, length = np.frombuffer(b"abba", np.uint8), np.array([0, 2], np.int64), np.array([2, 2], np.int64)
    tids, rows = np.array([5, 7], np.int64), np.array([0, 1], np.int64)

    def fine() -> None:
        return None

    def boom() -> None:
        raise MaskTimeout("deadline")

    watched = [auto, trie.byte, trie.child_lo, trie.tok_ids, words, flat, start, tids, rows, fine, boom]

    def run(n: int) -> None:
        for i in range(n):
            view = ColdView(auto, fail_after=1 if i % 4 == 1 else None)
            check = boom if i % 4 == 2 else fine
            try:
                native.trie_walk(view, trie, auto.start, words, check)
                native.trie_walk(view, trie, auto.start, None, check, with_states=True)
                _rows_walk(view, flat, start, length, tids, rows, auto.start, 0, words, check)
            except (KeyError, MaskTimeout):
                pass

    run(100)  # first-call caches (interned strings, method caches) are not leaks
    before = [sys.getrefcount(o) for o in watched]
    run(10_000)
    assert [sys.getrefcount(o) for o in watched] == before
    assert _ids(words).tolist() == [0, 1, 2, 5, 7]


# ----------------------------------------------------------------------------- exactness


@needs_native
def test_an_empty_trie_has_no_tokens():
    """The root of an empty trie has the empty child range 0:0, which was refused."""
    auto, _trie = _small()
    empty = build_trie(np.zeros(0, np.int64), [])
    words = np.zeros(1, np.uint32)
    assert native.trie_walk(auto, empty, auto.start, words, lambda: None)[0] == 0
    count, ids, ends = native.trie_walk(auto, empty, auto.start, None, lambda: None, with_states=True)
    assert count == 0 and ids.shape == (0,) and ends.shape == (0,) and not words.any()


@needs_native
def test_a_byte_level_vocabulary_masks_strings_like_the_numpy_walk(monkeypatch):
    """Single-byte tokens only: no token follows a closing quote, so the post-quote trie is empty."""
    pieces = [bytes([b]) for b in range(256)] + [b"</s>"]
    v = TokenVocabulary(pieces, end_ids=[256], special_ids=[256], source="single bytes")
    table = token_table(v)
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 4}}, "required": ["a"]}
    text = b'{"a":"x\xc3\xa9"}'
    masks = {}
    for use_native in (True, False):
        monkeypatch.setattr(native, "enabled", use_native)
        GRAMMAR_CACHE.clear()
        g = compile_json_schema(schema, v)
        m = Matcher(g)
        masks[use_native] = []
        for b in text:
            ids = g.engine.index.unpack(m.packed_mask())
            assert np.array_equal(ids, reference_allowed_ids(g, table, m.state)), (use_native, m.state)
            masks[use_native].append(ids)
            m.accept_token(b)
        assert m.is_accepting()
    assert all(np.array_equal(a, b) for a, b in zip(masks[True], masks[False]))


TREE = {"$defs": {"node": {"type": "object", "properties": {
    "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 3}},
    "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/node"}

#: (constraint, a text it accepts): negated classes, unicode, long whitespace, recursion, maxLength
SHAPES = {
    "negated": ("regex", r'"([^"\\\x00-\x1f]|\\["\\/bfnrt]){0,24}" [^a-z0-9]{1,4}', '"a \\"b\\" Ω" ;;'),
    "unicode": ("regex", r"[α-ωА-я中文]{1,6}( [à-ÿ]{1,3})?", "αБ中 éü"),
    "whitespace": ("regex", r"[ ]{0,48}\{[\n\t ]{0,40}\}", " " * 40 + "{\n\t  " + " " * 20 + "}"),
    "recursion": ("schema", TREE, json.dumps({"v": 1, "kids": [{"v": 2, "kids": [{"v": 3, "kids": [{"v": 4}]}]}]})),
    "max_length": ("schema", {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 7},
                              "maxItems": 2}, json.dumps(["ab", "wörter"], ensure_ascii=False)),
}


def _compile(kind: str, constraint, v: TokenVocabulary):
    return compile_regex(constraint, v) if kind == "regex" else compile_json_schema(constraint, v)


def _longest_allowed(allowed: np.ndarray, tb: list[bytes | None], rest: bytes) -> int:
    """The longest allowed token that spells a prefix of ``rest`` (how the text is fed)."""
    best, best_len = -1, 0
    for tid in allowed.tolist():
        piece = tb[tid]
        if piece and len(piece) > best_len and rest.startswith(piece):
            best, best_len = tid, len(piece)
    assert best >= 0, f"no allowed token starts {rest[:20]!r}"
    return best


@needs_native
@pytest.mark.parametrize("name", TOKENIZERS)
def test_native_masks_are_exact_on_every_tokenizer(name, monkeypatch):
    """Along each text, fed by its longest allowed tokens: native mask == numpy mask == brute-force
    reference (end ids included where the state accepts)."""
    v = vocab_by_name(name)
    table = token_table(v)
    tb = v.token_bytes
    for shape, (kind, constraint, text) in SHAPES.items():
        seen: dict[bool, list[np.ndarray]] = {}
        fed: list[int] = []
        for use_native in (True, False):
            monkeypatch.setattr(native, "enabled", use_native)
            GRAMMAR_CACHE.clear()  # separate automata: each walk builds its own rows
            g = _compile(kind, constraint, v)
            m = Matcher(g)
            seen[use_native] = []
            rest = text.encode()
            step = 0
            while True:
                ids = g.engine.index.unpack(m.packed_mask())
                seen[use_native].append(ids)
                if use_native:
                    ref = reference_allowed_ids(g, table, m.state)
                    assert np.array_equal(ids, ref), f"{name} {shape}: native != reference after {rest!r}"
                    if rest:
                        fed.append(_longest_allowed(ids, tb, rest))
                if not rest:
                    break
                m.accept_token(fed[step])
                rest = rest[len(tb[fed[step]] or b""):]
                step += 1
            assert m.is_accepting(), f"{name} {shape}: the text is not accepted"
        assert len(seen[True]) == len(seen[False])
        for i, (a, b) in enumerate(zip(seen[True], seen[False])):
            assert np.array_equal(a, b), f"{name} {shape}: mask {i} differs between native and numpy"


# ----------------------------------------------------------------------------- threads and deadlines


@needs_native
def test_two_matchers_of_one_grammar_compute_masks_at_once(monkeypatch):
    """Both threads walk cold states of one automaton (rows built under its RLock) and agree with numpy."""
    v = vocab_by_name("qwen3")
    schema = {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 4}
    text = json.dumps(["anna.b@example.jp", "x_y@mail.example.com", "z@q.io"])
    from enforcer_oracle import encode

    tokens = encode("qwen3", text)
    monkeypatch.setattr(native, "enabled", False)
    GRAMMAR_CACHE.clear()
    slow = Matcher(compile_json_schema(schema, v))
    expected = []
    for tid in tokens:
        expected.append(slow.packed_mask().copy())
        slow.accept_token(tid)
    monkeypatch.setattr(native, "enabled", True)
    GRAMMAR_CACHE.clear()
    g = compile_json_schema(schema, v)
    barrier = threading.Barrier(2)
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            m = Matcher(g)
            barrier.wait()
            got[k] = []
            for tid in tokens:
                got[k].append(m.packed_mask().copy())
                m.accept_token(tid)
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(2):
        for i, (a, b) in enumerate(zip(got[k], expected)):
            assert np.array_equal(a, b), f"thread {k}: mask {i} differs"


@needs_native
def test_a_warm_walk_still_calls_the_deadline_check():
    """With every row built no step calls back: ``check`` must still run every few thousand nodes."""
    v = vocab_by_name("llama3")
    g = compile_regex("[ -~]{0,12}", v)
    auto, trie = g.automaton, g.engine.index.trie
    count, _i, _s = native.trie_walk(auto, trie, auto.start, None, lambda: None)  # builds the rows
    assert count > 50_000
    calls = []
    native.trie_walk(auto, trie, auto.start, None, lambda: calls.append(1))
    assert len(calls) >= count // 4096 // 2  # trie nodes >= tokens found; a check per 4,096 nodes

    def deadline() -> None:
        raise MaskTimeout("deadline")

    with pytest.raises(MaskTimeout):
        native.trie_walk(auto, trie, auto.start, None, deadline)


@needs_native
def test_an_eviction_from_another_thread_waits_for_the_walk():
    """The memory budget's eviction, asked from another thread while a native walk runs (here from
    inside its deadline check), must not drop the rows under the walk: the walk holds the
    automaton's lock, the other thread's non-blocking eviction declines, and the mask stays exact."""
    v = vocab_by_name("llama3")
    table = token_table(v)
    GRAMMAR_CACHE.clear()
    g = compile_regex(r"[a-z]{1,6}(\.[a-z0-9]{1,5}){0,3}@[a-z]{2,8}", v)
    auto = g.automaton
    sid = auto.walk(auto.start, b"ab.c")
    asked: list[bool] = []

    def evict_elsewhere() -> None:
        g.memory_bytes = 0  # over budget: enforce_budget would evict if it got the lock
        t = threading.Thread(target=lambda: asked.append(g.enforce_budget()))
        t.start()
        t.join()

    g.engine.chunk_hook = lambda: None if asked else evict_elsewhere()
    packed = g.engine.mask(sid)
    g.engine.chunk_hook = None
    assert asked == [False] and g.evictions == 0
    assert np.array_equal(g.engine.index.unpack(packed), reference_allowed_ids(g, table, sid))
    assert g.enforce_budget() and g.evictions == 1  # with the walk over, the same call evicts
