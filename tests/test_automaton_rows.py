"""Transition rows: built from per-state edge groups, with one remembered step per target set.

Rows take two paths (configurations reading disjoint byte classes, or overlapping ones split by
class masks) and share a step memo that :meth:`Automaton.evict` must drop with the states.
Python's ``re`` and a grammar that never evicts are the oracles.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
from enforcer_oracle import vocab_by_name

from exl2_enforcer.engine.automaton import DEAD
from exl2_enforcer.grammar import GRAMMAR_CACHE, compile_json_schema, compile_regex_constraint


@pytest.fixture(scope="module")
def vocab():
    return vocab_by_name("mini")


@pytest.mark.parametrize("pattern", [
    "(ab|ac|a[b-d]e)*x",      # alternatives that read the same first byte
    "[a-c]*b[a-c]{2}",        # the classic NFA whose positions overlap on every class
    "(a|ab)(c|bcd)(d*)",      # a match can be split in two ways
    "([a-e]x|[c-e]y|e+)*",   # overlapping class ranges with different targets
])
def test_overlapping_configurations_match_re(vocab, pattern):
    g = compile_regex_constraint(pattern, vocab)
    full = re.compile(pattern)
    for n in range(6):
        for chars in itertools.product("abcdexy", repeat=n):
            text = "".join(chars)
            assert g.automaton.matches(text.encode()) == (full.fullmatch(text) is not None), (pattern, text)


SCHEMA = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "host": {"type": "string", "format": "hostname"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["sku", "host", "tags"],
}
TEXT = json.dumps({"sku": "QXR-0427", "host": "api.eu-west.example.com", "tags": ["ab", "cd-e"]}).encode()


def _fresh(vocab):
    GRAMMAR_CACHE.clear()  # a separate grammar, with its own automaton
    return compile_json_schema(SCHEMA, vocab).automaton


def test_eviction_drops_remembered_steps(vocab):
    """Steps remembered before an eviction name states of the old generation; after it,
    every step from a re-interned state must agree with an automaton that never evicted."""
    ref = _fresh(vocab)
    a = _fresh(vocab)
    for cut in (5, len(TEXT) // 2, len(TEXT) - 3):
        kept = a.states[a.walk(a.start, TEXT[:cut])]
        a.walk(a.start, TEXT)  # rows (and remembered steps) for the whole text
        a.evict()
        sid, ref_sid = a.reintern(kept), ref.walk(ref.start, TEXT[:cut])
        for b in TEXT[cut:]:
            for probe in {b, 0x22, 0x2C, 0x7D, ord("a"), ord("-")}:
                assert (a.step(sid, probe) == DEAD) == (ref.step(ref_sid, probe) == DEAD), (cut, probe)
            sid, ref_sid = a.step(sid, b), ref.step(ref_sid, b)
            assert sid >= 0
            assert a.is_accepting(sid) == ref.is_accepting(ref_sid)
        assert a.is_accepting(sid)


def test_eviction_keeps_accounting_honest(vocab):
    """After an eviction the automaton counts what a fresh one counts, and redoing the same work
    counts the same bytes again: remembered steps are rebuilt for the new generation, not reused."""
    a = _fresh(vocab)
    fresh_bytes = a.state_bytes
    a.walk(a.start, TEXT)
    grown = a.state_bytes
    assert grown > fresh_bytes
    a.evict()
    assert a.state_bytes == fresh_bytes
    assert a.walk(a.start, TEXT) >= 0
    assert a.state_bytes == grown  # the same work counts the same bytes again
