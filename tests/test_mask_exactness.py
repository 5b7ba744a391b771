"""Mask exactness: the fast token mask equals a brute-force byte-by-byte reference.

For every DFA state reached by seeded random walks (sampling from the fast mask),
the allowed set must be exactly:

* every text token ``t`` (non-empty bytes, not special) with
  ``automaton.walk(state, token_bytes[t]) >= 0``;
* the end ids iff the state accepts;
* nothing else (no special id, no id without text).

The reference walks each token's bytes through the automaton's transition table
(vectorised across tokens, no trie and no plain-content shortcut) and is itself
cross-checked against ``automaton.walk`` one token at a time: on a random sample
of tokens at every state, and on the whole vocabulary at the first states of
each walk.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import (
    SCHEMAS,
    bitmask_ids,
    literal_text_allowed,
    nonplain_ids,
    reference_text_allowed,
    token_table,
    vocab_by_name,
)

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher

FUNCTION_CALL = json.loads((SCHEMAS / "function_call.json").read_text(encoding="utf-8"))

CASES: dict[str, tuple[dict, SchemaOptions]] = {
    "function_call": (FUNCTION_CALL, SchemaOptions()),
    "function_call_compact": (FUNCTION_CALL, SchemaOptions(max_whitespace=0)),
    "max_length": ({"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 7},
        "t": {"type": "string", "minLength": 2, "maxLength": 4},
        "u": {"type": "string"}}, "required": ["s", "t"]}, SchemaOptions(max_whitespace=2)),
    "enum_unicode": ({"type": "object", "properties": {
        "日本": {"enum": ["東京", "大阪", "naïve café", "😀x", "a\"b\\c", "line\nbreak", 7, None]},
        "k": {"enum": ["Zürich", "Zug", "Z"]}}, "required": ["日本"]}, SchemaOptions()),
    "enum_unicode_all_escapes": ({"type": "object", "properties": {
        "日本": {"enum": ["東京", "naïve", "a\"b"]}}, "required": ["日本"]}, SchemaOptions(escapes="all")),
    "integer_ranges": ({"type": "array", "maxItems": 6, "items": {"anyOf": [
        {"type": "integer", "minimum": -120, "maximum": 4500},
        {"type": "integer", "exclusiveMinimum": 99999, "exclusiveMaximum": 100100},
        {"type": "integer", "multipleOf": 7, "minimum": -700, "maximum": -7}]}}, SchemaOptions(max_whitespace=1)),
    "nested_arrays": ({"type": "array", "minItems": 1, "maxItems": 4, "items": {
        "type": "array", "maxItems": 3, "items": {"type": "number", "minimum": -1.5, "maximum": 2.25}}},
        SchemaOptions(max_whitespace=3)),
    "recursive_tree": ({"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "string", "maxLength": 10},
        "children": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/node"}}},
        "required": ["value"]}}, "$ref": "#/$defs/node"}, SchemaOptions(max_depth=6, max_whitespace=2)),
    "extra_keys": ({"type": "object", "properties": {"name": {"type": "string"}, "nam": {"type": "integer"}},
                    "additionalProperties": {"type": "boolean"}, "maxProperties": 4}, SchemaOptions()),
    "formats": ({"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"}, "ip": {"type": "string", "format": "ipv4"},
        "mail": {"type": "string", "format": "email"}, "id": {"type": "string", "format": "uuid"}}},
        SchemaOptions(max_whitespace=1)),
    "extra_keys_all_escapes": ({"type": "object", "properties": {"név": {"type": "string", "maxLength": 3},
                                                                 "n": {"type": "null"}},
                                "additionalProperties": {"enum": [1, "ü"]}}, SchemaOptions(escapes="all")),
    "any_value": ({"type": "object", "additionalProperties": True}, SchemaOptions(max_depth=4, max_whitespace=2)),
    "pattern": ({"type": "array", "items": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"}},
                SchemaOptions(max_whitespace=0)),
}

#: (walks, max tokens per walk, states checked against automaton.walk over the whole vocabulary)
PLAN = {"mini": (14, 90, 6), "llama3": (5, 90, 2), "llama2": (6, 90, 2)}
MIN_STATES = {"mini": 20, "llama3": 8, "llama2": 8}


@pytest.fixture(scope="module", params=["mini", "llama3", "llama2"])
def vocab(request):
    v = vocab_by_name(request.param)
    return request.param, v


def _check_state(g, m: Matcher, table, rng, *, full_literal: bool) -> str | None:
    """Compare the fast mask of ``m``'s state with the reference; an error message or None."""
    vocab = g.vocab
    sid = m.state
    fast = m.allowed_ids()
    text_ok = reference_text_allowed(g.automaton, table, sid)
    accepting = g.automaton.is_accepting(sid)
    ref = table.text_ids[text_ok]
    if accepting:
        ref = np.union1d(ref, table.ends)
    ref = np.sort(ref)

    # the reference agrees with automaton.walk token by token
    rows = rng.choice(text_ok.shape[0], size=min(96, text_ok.shape[0]), replace=False)
    if full_literal:
        rows = np.arange(text_ok.shape[0])
    lit = literal_text_allowed(g.automaton, table, sid, rows)
    if not np.array_equal(lit, text_ok[rows]):
        bad = rows[lit != text_ok[rows]][:5]
        return f"reference disagrees with automaton.walk in state {sid} for ids {table.text_ids[bad].tolist()}"

    prefix = vocab.decode_bytes(m.history_ids) if hasattr(m, "history_ids") else None
    if not np.array_equal(fast, ref):
        extra = np.setdiff1d(fast, ref)[:8]
        missing = np.setdiff1d(ref, fast)[:8]
        def show(ids):
            return [(int(i), vocab.token_bytes[int(i)] if int(i) < vocab.n_ids else None) for i in ids]
        return (f"state {sid} (accepting={accepting}, prefix={prefix!r}): fast mask has {fast.size} ids, "
                f"reference {ref.size}; allowed but refused by walk: {show(extra)}; "
                f"walkable but masked out: {show(missing)}")
    # no special id other than the end ids, and end ids exactly when accepting
    specials = [int(i) for i in fast if i < vocab.n_ids and table.special[i] and i not in vocab.end_ids]
    if specials:
        return f"state {sid}: special ids allowed {specials[:8]}"
    ends_in = np.isin(table.ends, fast)
    if accepting != bool(ends_in.all()) or accepting != bool(ends_in.any()):
        return f"state {sid}: accepting={accepting} but end ids allowed={ends_in.tolist()}"
    # the bitmask at exactly the vocabulary width holds the same ids
    width = max(vocab.n_ids, int(table.ends.max()) + 1)
    bm = bitmask_ids(m, width)
    if not np.array_equal(bm, fast):
        return f"state {sid}: fill_bitmask ids differ from allowed_ids ({bm.size} vs {fast.size})"
    return None


def _choose(rng, m: Matcher, allowed: np.ndarray, table) -> int | None:
    """A random allowed token for exploring: uniform, short, or structural; None = stop here."""
    ends = np.isin(allowed, table.ends)
    if ends.any() and rng.random() < 0.2:
        return None
    pool = allowed[~ends]
    if pool.size == 0:
        return None
    r = rng.random()
    if r < 0.45:
        short = pool[table.token_len[pool] <= 2]
        if short.size:
            pool = short
    elif r < 0.75:
        nonplain = pool[nonplain_ids(table)[pool]]
        if nonplain.size:
            pool = nonplain
    return int(rng.choice(pool))


@pytest.mark.parametrize("case", list(CASES))
def test_fast_mask_equals_bruteforce(vocab, case):
    name, v = vocab
    schema, options = CASES[case]
    g = compile_json_schema(schema, v, options)
    table = token_table(v)
    rng = np.random.default_rng([sum(map(ord, name)), sum(map(ord, case)), 12345])
    walks, max_steps, n_full = PLAN[name]
    seen: set[int] = set()
    errors: list[str] = []
    full_left = n_full
    for _ in range(walks):
        m = Matcher(g)
        m.history_ids = []  # type: ignore[attr-defined]  # for error messages only
        for _step in range(max_steps):
            if m.state not in seen:
                seen.add(m.state)
                err = _check_state(g, m, table, rng, full_literal=full_left > 0)
                full_left -= 1
                if err:
                    errors.append(err)
                    if len(errors) >= 3:
                        break
            allowed = m.allowed_ids()
            assert allowed.size, f"empty mask in state {m.state}"
            tid = _choose(rng, m, allowed, table)
            if tid is None:
                break
            m.accept_token(tid)
            m.history_ids.append(tid)
        if errors:
            break
    print(f"{name}/{case}: {len(seen)} distinct states checked")
    assert not errors, "\n".join(errors)
    assert len(seen) >= MIN_STATES[name], f"only {len(seen)} distinct states reached"


def test_total_states_checked_mini():
    """Across all cases the mini vocabulary covers well over a thousand distinct states."""
    v = vocab_by_name("mini")
    table = token_table(v)
    total = 0
    errors = []
    for case, (schema, options) in CASES.items():
        g = compile_json_schema(schema, v, options)
        rng = np.random.default_rng([7, sum(map(ord, case))])
        seen: set[int] = set()
        for _ in range(10):
            m = Matcher(g)
            m.history_ids = []  # type: ignore[attr-defined]
            for _step in range(120):
                if m.state not in seen:
                    seen.add(m.state)
                    err = _check_state(g, m, table, rng, full_literal=False)
                    if err:
                        errors.append(f"{case}: {err}")
                allowed = m.allowed_ids()
                # deeper exploration: mostly short tokens, rarely stop
                ends = np.isin(allowed, table.ends)
                pool = allowed[~ends]
                if pool.size == 0 or (ends.any() and rng.random() < 0.05):
                    break
                short = pool[table.token_len[pool] <= 1]
                if short.size and rng.random() < 0.7:
                    pool = short
                tid = int(rng.choice(pool))
                m.accept_token(tid)
                m.history_ids.append(tid)
        total += len(seen)
    print(f"mini total: {total} distinct states checked")
    assert not errors, "\n".join(errors[:5])
    assert total >= 1000, f"only {total} distinct states checked"


# ----------------------------------------------------------------------------- regressions


# Regression: an early scalar tail of the trie walk (MaskEngine._walk_scalar) marked the
# frontier nodes alive without stepping their own byte, so b'{{' was allowed at the start
# of an object.  Fixed in the library while these tests were written; keep the check.
def test_scalar_tail_allows_no_dead_tokens():
    from exl2_enforcer.tokens.vocabulary import default_vocabulary

    v = default_vocabulary()
    g = compile_json_schema({"type": "object"}, v)
    m = Matcher(g)
    start = g.automaton.start
    dead = [int(t) for t in m.allowed_ids() if int(t) < v.n_ids and v.token_bytes[int(t)]
            and g.automaton.walk(start, v.token_bytes[int(t)]) < 0]
    assert dead == [], [v.token_bytes[t] for t in dead]
