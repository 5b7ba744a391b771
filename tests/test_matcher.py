"""The Matcher contract: history, forks, refusals, masks sized to the logits, threads."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from enforcer_oracle import SCHEMAS, bitmask_ids, encode, token_table, unpack_bits, vocab_by_name

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, TokenRejected
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

FUNCTION_CALL = json.loads((SCHEMAS / "function_call.json").read_text(encoding="utf-8"))
OBJ = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "string", "maxLength": 5}}, "required": ["a"]}
WALK_SCHEMAS = {
    "function_call": (FUNCTION_CALL, SchemaOptions()),
    "tree_depth3": ({"$defs": {"n": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "required": ["v"]}},
        "$ref": "#/$defs/n"}, SchemaOptions(max_depth=3)),
    "short_strings": ({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2}, "maxItems": 3},
                      SchemaOptions(max_whitespace=0)),
    "numbers": ({"type": "array", "items": {"type": "number", "exclusiveMinimum": -1, "maximum": 0.5},
                 "minItems": 2, "maxItems": 2}, SchemaOptions()),
    "date_time": ({"type": "string", "format": "date-time"}, SchemaOptions()),
    "nested_any": ({"type": "array", "items": True, "maxItems": 3}, SchemaOptions(max_depth=2)),
}


@pytest.fixture(scope="module")
def mini():
    return vocab_by_name("mini")


def _ends(vocab) -> np.ndarray:
    return np.array(sorted(vocab.end_ids), dtype=np.int64)


def _ids(vocab, text: str) -> list[int]:
    return encode("mini", text)


# ----------------------------------------------------------------------------- history


def test_rollback_and_reset_restore_states_and_masks(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    ids = _ids(mini, '{"a": 42, "b": "xy"}')
    states, masks = [m.state], [m.allowed_ids()]
    for t in ids:
        m.accept_token(t)
        states.append(m.state)
        masks.append(m.allowed_ids())
    assert m.is_accepting()
    m.rollback(0)
    assert m.state == states[-1]
    m.rollback(3)
    assert m.state == states[-4]
    assert np.array_equal(m.allowed_ids(), masks[-4])
    for t in ids[-3:]:  # replaying gives the same states again
        m.accept_token(t)
    assert m.state == states[-1]
    with pytest.raises(ValueError):
        m.rollback(len(ids) + 1)
    with pytest.raises(ValueError):
        m.rollback(-1)
    assert m.state == states[-1]
    m.rollback(len(ids))
    assert m.state == states[0] == g.automaton.start
    m.accept_token(ids[0])
    m.reset()
    assert m.state == g.automaton.start and np.array_equal(m.allowed_ids(), masks[0])


def test_rollback_after_end_token(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    for t in _ids(mini, '{"a": 1}'):
        m.accept_token(t)
    end = int(_ends(mini)[0])
    m.accept_token(end)
    assert m.is_complete()
    with pytest.raises(TokenRejected):
        m.accept_token(_ids(mini, "}")[0])
    m.rollback(1)
    assert m.is_accepting()
    m.accept_token(end)  # may end again


def test_fork_is_independent(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    for t in _ids(mini, '{"a": 4'):
        m.accept_token(t)
    before_state, before_hist = m.state, list(m.history)
    before_mask = m.allowed_ids()
    f = m.fork()
    assert f.state == m.state
    f.accept_token(_ids(mini, "2")[0])
    assert m.state == before_state and m.history == before_hist
    assert np.array_equal(m.allowed_ids(), before_mask)
    assert f.state != m.state
    # and the other way round
    f_state, f_hist = f.state, list(f.history)
    for t in _ids(mini, ', "b": "q"}'):
        m.accept_token(t)
    assert f.state == f_state and f.history == f_hist
    m.reset()
    assert f.state == f_state
    f.rollback(1)
    assert f.state == before_state
    assert m.state == g.automaton.start


# ----------------------------------------------------------------------------- refusals


def test_refused_tokens_raise_and_leave_state(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    for t in _ids(mini, '{"a": '):
        m.accept_token(t)
    state, hist, mask = m.state, list(m.history), m.allowed_ids()
    bos = next(i for i in sorted(mini.special_ids) if i not in mini.end_ids)
    refused = [_ids(mini, "}")[0], _ids(mini, '"')[0], bos, int(_ends(mini)[0]), mini.n_ids + 5, -1]
    for t in refused:
        assert t not in set(mask.tolist())
        with pytest.raises(TokenRejected) as info:
            m.accept_token(t)
        assert info.value.token_id == t
        assert m.state == state and m.history == hist
        assert not m.try_accept(t)
        assert m.state == state
    assert np.array_equal(m.allowed_ids(), mask)
    # every token outside the mask is refused, every token in it is accepted (sampled)
    rng = np.random.default_rng(0)
    outside = np.setdiff1d(np.arange(mini.n_ids), mask)
    for t in rng.choice(outside, 200, replace=False):
        assert not m.fork().try_accept(int(t))
    for t in mask:
        assert m.fork().try_accept(int(t))


def test_is_complete_after_closed_object(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    ids = _ids(mini, '{"a": 7}')
    for t in ids[:-1]:
        m.accept_token(t)
        assert not m.is_complete()
    m.accept_token(ids[-1])
    assert m.is_accepting() and m.is_complete()
    assert np.array_equal(m.allowed_ids(), _ends(mini))
    # a number at the root can still grow: accepting but not complete
    g2 = compile_json_schema({"type": "integer"}, mini)
    m2 = Matcher(g2)
    m2.accept_token(_ids(mini, "7")[0])
    assert m2.is_accepting() and not m2.is_complete()
    assert np.isin(_ends(mini), m2.allowed_ids()).all()


@pytest.mark.parametrize("case", list(WALK_SCHEMAS))
def test_mask_never_empty_and_ends_only_when_accepting(mini, case):
    schema, options = WALK_SCHEMAS[case]
    g = compile_json_schema(schema, mini, options)
    ends = _ends(mini)
    table = token_table(mini)
    rng = np.random.default_rng(sum(map(ord, case)))
    steps = 0
    for _walk in range(12):
        m = Matcher(g)
        for _ in range(80):
            allowed = m.allowed_ids()
            steps += 1
            assert allowed.size >= 1, f"empty mask in state {m.state}"
            has_end = np.isin(ends, allowed)
            assert has_end.all() == m.is_accepting() and has_end.any() == m.is_accepting()
            if m.is_complete():
                assert np.array_equal(allowed, ends)
            text = allowed[~np.isin(allowed, ends)]
            if text.size == 0:
                break
            if has_end.any() and rng.random() < 0.1:
                break
            short = text[table.token_len[text] <= 2]
            pool = short if short.size and rng.random() < 0.7 else text
            m.accept_token(int(rng.choice(pool)))
    assert steps > 40


# Regression: after an end token, allowed_ids() returned the whole state mask and accept_token()
# refused even the end ids that fill_bitmask() allowed.
def test_mask_and_accept_agree_after_end(mini):
    g = compile_json_schema({"type": "integer"}, mini)
    m = Matcher(g)
    m.accept_token(_ids(mini, "12")[0])
    m.accept_token(int(_ends(mini)[0]))
    from_allowed = m.allowed_ids()
    from_bitmask = bitmask_ids(m, mini.n_ids)
    assert np.array_equal(from_allowed, from_bitmask), (from_allowed.size, from_bitmask.tolist())
    assert all(m.fork().try_accept(int(t)) for t in from_bitmask)


# ----------------------------------------------------------------------------- logits width


def _random_states(g, vocab, rng, n_walks=6, steps=40):
    """Matchers (forks) at states reached by random walks."""
    ends = _ends(vocab)
    out = []
    for _ in range(n_walks):
        m = Matcher(g)
        for _ in range(steps):
            out.append(m.fork())
            allowed = m.allowed_ids()
            text = allowed[~np.isin(allowed, ends)]
            if text.size == 0 or (text.size < allowed.size and rng.random() < 0.15):
                out.append(m.fork())
                break
            m.accept_token(int(rng.choice(text)))
    return out


@pytest.mark.parametrize("vname", ["mini", "llama3"])
def test_fill_bitmask_respects_logits_width(vname):
    vocab = vocab_by_name(vname)
    g = compile_json_schema(FUNCTION_CALL, vocab)
    rng = np.random.default_rng(11)
    n = vocab.n_ids
    widths = [n - 1, n - 37, (n // 32) * 32, n + 1, n + 77, n + 256]
    if vname == "llama3":
        assert n == 128256
    checked = 0
    for m in _random_states(g, vocab, rng):
        allowed = m.allowed_ids()
        for w in widths:
            n_words = (w + 31) // 32
            out = np.full(n_words + 3, -1, dtype=np.int32)  # garbage everywhere
            below = allowed[allowed < w]
            if below.size == 0:
                with pytest.raises(EnforcerError):
                    m.fill_bitmask(out, w)
                continue
            m.fill_bitmask(out, w)
            ids = unpack_bits(out[:n_words], n_words * 32)
            assert ids.size == 0 or ids.max() < w, f"bits at or beyond width {w}: {ids[ids >= w][:5]}"
            assert np.array_equal(ids, below), f"width {w}: {ids.size} ids vs {below.size} expected"
            assert (out[n_words:] == -1).all(), "wrote past ceil(width/32) words"
            checked += 1
    assert checked > 100


def test_allowed_ids_with_logits_width(mini):
    g = compile_json_schema(OBJ, mini)
    m = Matcher(g)
    for t in _ids(mini, '{"a": 5}'):
        m.accept_token(t)
    ends = _ends(mini)
    assert m.allowed_ids(int(ends[0])).size == 0
    assert np.array_equal(m.allowed_ids(int(ends[0]) + 1), ends[:1])
    assert np.array_equal(m.allowed_ids(), ends)


# ----------------------------------------------------------------------------- threads


def _fresh_vocab(vocab: TokenVocabulary) -> TokenVocabulary:
    """An equal vocabulary object with no cached token index (cold)."""
    return TokenVocabulary(vocab.token_bytes, special_ids=vocab.special_ids, end_ids=vocab.end_ids,
                           kind=vocab.kind, source=vocab.source + " (copy)")


def _fresh_grammar(schema, vocab, **kw):
    return compile_json_schema({**schema, "$comment": f"fresh {uuid.uuid4()}"}, vocab, **kw)


def _thread_walk(g, width: int, seed: int, barrier: threading.Barrier | None, n_walks: int, steps: int):
    """Random walks choosing from fill_bitmask; returns [(tokens, [mask words per step])]."""
    rng = np.random.default_rng(seed)
    ends = _ends(g.vocab)
    if barrier is not None:
        barrier.wait()
    runs = []
    for _ in range(n_walks):
        m = Matcher(g)
        toks, masks = [], []
        for _ in range(steps):
            out = np.zeros((width + 31) // 32, dtype=np.int32)
            m.fill_bitmask(out, width)
            masks.append(out.copy())
            ids = unpack_bits(out, width)
            text = ids[~np.isin(ids, ends)]
            if text.size == 0 or (text.size < ids.size and rng.random() < 0.1):
                break
            t = int(rng.choice(text))
            m.accept_token(t)
            toks.append(t)
        runs.append((toks, masks))
    return runs


def _replay(g, width: int, toks: list[int]) -> list[np.ndarray]:
    m = Matcher(g)
    masks = []
    for t in toks + [None]:
        out = np.zeros((width + 31) // 32, dtype=np.int32)
        m.fill_bitmask(out, width)
        masks.append(out)
        if t is not None:
            m.accept_token(t)
    return masks


@pytest.mark.parametrize("vname,cache_bytes", [("mini", 256 << 20), ("mini", 24 << 10), ("llama3", 256 << 20)])
def test_threads_share_one_grammar(vname, cache_bytes):
    base = vocab_by_name(vname)
    vocab = _fresh_vocab(base)
    schema = FUNCTION_CALL
    g = _fresh_grammar(schema, vocab, mask_cache_bytes=cache_bytes)  # cold: no mask computed yet
    width = vocab.n_ids + 40
    n_threads = 8
    n_walks, steps = (4, 60) if vname == "mini" else (3, 50)
    barrier = threading.Barrier(n_threads)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        futures = [pool.submit(_thread_walk, g, width, 1000 + i, barrier, n_walks, steps) for i in range(n_threads)]
        results = [f.result(timeout=300) for f in futures]
    # a single-threaded recomputation on another fresh compile gives the same masks
    g2 = _fresh_grammar(schema, _fresh_vocab(base))
    total = 0
    for i, runs in enumerate(results):
        for toks, masks in runs:
            ref = _replay(g2, width, toks)
            assert len(masks) in (len(ref), len(ref) - 1)
            for k, (a, b) in enumerate(zip(masks, ref)):
                assert np.array_equal(a, b), f"thread {i}: mask differs after {k} tokens {toks[:k]}"
                total += 1
    assert total > 50
    # the shared grammar is still consistent afterwards, single-threaded
    for toks, masks in results[0]:
        assert all(np.array_equal(a, b) for a, b in zip(masks, _replay(g, width, toks)))


def test_misuse_names_the_parameter(mini):
    m = Matcher(compile_json_schema({"type": "integer"}, mini))
    with pytest.raises(TypeError, match=r"token_id must be an int, got 'a' \(str\)"):
        m.accept_token("a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="token_id must be an int, got 1.5"):
        m.accept_token(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"token_id must be an int, got True \(bool\)"):
        m.try_accept(True)
    assert m.tokens == []
    digit = _ids(mini, "7")[0]
    m.accept_token(np.int64(digit))  # numpy integers are token ids too
    assert m.tokens == [digit]
    with pytest.raises(ValueError, match=r"rollback\(n\) needs 0 <= n <= 1 \(the tokens accepted\), got 2"):
        m.rollback(2)
    with pytest.raises(ValueError, match=r"rollback\(n\) needs 0 <= n <= 1 \(the tokens accepted\), got -1"):
        m.rollback(-1)
    with pytest.raises(ValueError, match="logits_width must be >= 0, got -3"):
        m.allowed_ids(-3)
    assert m.tokens == [digit]  # nothing was lost
