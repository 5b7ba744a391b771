"""``Automaton.slice_advance`` reaches the very state that stepping through the bytes reaches.

A token made only of slice elements (plain string characters, whitespace bytes) is accepted in
one step from the loop's head for the new count (``Matcher`` uses it), so a ``maxLength`` string
costs one DFA state per token, not one per character.  Here every plain or whitespace token of
a sample is advanced both ways from states inside several kinds of loops.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from enforcer_oracle import encode, reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher

SCHEMAS = {
    "bounded": {"type": "string", "minLength": 3, "maxLength": 40},
    "huge": {"type": "string", "maxLength": 1_000_000_000},
    "unbounded_min": {"type": "string", "minLength": 12},
    "two_open": {"anyOf": [{"type": "object", "properties": {"a": {"type": "string", "maxLength": 30}},
                            "required": ["a"]},
                           {"type": "object", "properties": {"a": {"type": "string", "maxLength": 30},
                                                             "b": {"type": "integer"}}, "required": ["a", "b"]}]},
    "array_ws": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 4},
}
PREFIXES = {"bounded": ['"', '"ab'], "huge": ['"', '"x y'], "unbounded_min": ['"', '"abcdefghij'],
            "two_open": ['{"a": "', '{"a": "xy'], "array_ws": ['[', '["ab", ', '["abcdef']}


@pytest.mark.parametrize("case", list(SCHEMAS))
def test_slice_advance_equals_the_byte_walk(case):
    v = vocab_by_name("llama3")
    g = compile_json_schema(SCHEMAS[case], v)
    a = g.automaton
    index = g.engine.index
    rng = np.random.default_rng(3)
    advanced = 0
    for prefix in PREFIXES[case]:
        sid = a.walk(a.start, prefix.encode())
        assert sid >= 0
        for kind, sizes in index.slice_sizes.items():
            members = np.flatnonzero(sizes > 0)
            for tid in rng.choice(members, size=min(300, members.size), replace=False).tolist():
                fast = a.slice_advance(sid, kind, int(sizes[tid]))
                slow = a.walk(sid, v.token_bytes[tid])
                if fast is not None:
                    advanced += 1
                    assert fast == slow, (case, prefix, kind, v.token_bytes[tid])
                    assert a.is_accepting(fast) == a.is_accepting(slow)
    assert advanced > 100  # the fast step applied in these loops


def test_long_bounded_text_passes_and_one_character_too_many_is_refused():
    v = vocab_by_name("llama3")
    schema = {"type": "object", "properties": {"notes": {"type": "string", "maxLength": 300}}, "required": ["notes"]}
    g = compile_json_schema(schema, v)
    text = ("word " * 60)[:300]
    ok = json.dumps({"notes": text})
    m = Matcher(g)
    for tid in encode("llama3", ok):
        m.accept_token(tid)
    assert m.is_accepting()
    jsonschema.validate(json.loads(ok), schema)
    m = Matcher(g)
    over = json.dumps({"notes": text + "x"})
    accepted = 0
    for tid in encode("llama3", over):
        if not m.try_accept(tid):
            break
        accepted += 1
    assert accepted < len(encode("llama3", over))  # refused before the end


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 5, "maxLength": 30},
    {"type": "object", "required": ["t", "n"],
     "properties": {"t": {"type": "string", "minLength": 2, "maxLength": 18}, "n": {"type": "integer"}}},
    {"type": "array", "items": {"type": "string", "maxLength": 6}, "minItems": 2, "maxItems": 3},
], ids=["min_max", "member", "items"])
def test_plain_string_masks_shared_between_positions_stay_exact(schema):
    """States of one bounded string share masks by (budget, characters needed, state after the
    quote); every mask along the string, up to and past its limits, is the reference's."""
    v = vocab_by_name("llama3")
    table = token_table(v)
    g = compile_json_schema(schema, v)
    rng = np.random.default_rng(5)
    ends = list(v.end_ids)
    for _walk in range(4):
        m = Matcher(g)
        for _step in range(40):
            got = np.sort(m.allowed_ids())
            assert np.array_equal(got, np.sort(reference_allowed_ids(g, table, m.state))), m.text_bytes()
            pool = got[~np.isin(got, ends)]
            if pool.size == 0:
                break
            short = pool[table.token_len[pool] <= 2]
            m.accept_token(int(rng.choice(short if short.size and rng.random() < 0.8 else pool)))


@pytest.mark.parametrize("case", ["two_open", "array_ws", "bounded"])
def test_slice_budget_is_remembered_per_state_and_forgotten_by_an_eviction(case):
    """``slice_budget`` remembers its answer per state: after a mask pass the remembered answer of
    every state is the one ``_slice_budget`` computes now, a new entry counts its bytes once, asking
    again counts nothing, and an eviction forgets them all (ids name other states after it)."""
    from exl2_enforcer.engine.automaton import _MEMO_BYTES

    v = vocab_by_name("llama3")
    g = compile_json_schema(SCHEMAS[case], v)
    a = g.automaton
    text = {"two_open": '{"a": "two words", "b": 12}', "array_ws": '[ "ab" ,  "cdefgh"]',
            "bounded": '"a few words here"'}[case]
    m = Matcher(g)
    for tid in encode("llama3", text):
        m.packed_mask()
        m.accept_token(tid)
    assert a._slice_budgets  # the pass asked
    fresh = [sid for sid in range(len(a.states)) if sid not in a._slice_budgets]
    frames_before = len(a._slice_frames)
    before = a.state_bytes
    answers = [a.slice_budget(sid) for sid in range(len(a.states))]
    # a new budget entry and a new per-node frame entry (the stack nodes first met here) count once each
    new_frames = len(a._slice_frames) - frames_before
    assert new_frames >= 0
    assert a.state_bytes == before + _MEMO_BYTES * (len(fresh) + new_frames)
    assert answers == [a._slice_budget(sid) for sid in range(len(a.states))]
    assert any(x is not None for x in answers) and None in answers
    again = a.state_bytes
    assert [a.slice_budget(sid) for sid in range(len(a.states))] == answers and a.state_bytes == again
    a.evict()
    assert a._slice_budgets == {} and a._slice_frames == {}
