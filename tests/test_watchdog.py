"""The engine-level watchdog: GuardPolicy rules, trips and reactions (no inference library).

A slow constraint is simulated with the mask engine's ``chunk_hook`` test hook,
which sleeps between chunks of walk work exactly where a slow computation
would spend its time.  jsonschema is the oracle for salvaged outputs.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from enforcer_oracle import validator_for

from exl2_enforcer import grammar as G
from exl2_enforcer.errors import EnforcerError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary
from exl2_enforcer.watchdog import GuardedMatcher, GuardPolicy

FREE_TEXT = {"type": "object", "properties": {"reason": {"type": "string"}, "n": {"type": "integer"}},
             "required": ["reason", "n"]}


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _run(gm: GuardedMatcher, rng: np.random.Generator, *, budget: int, prefer=None, width=None) -> None:
    """Sample from the guarded mask until an end token or the budget (a stand-in job loop)."""
    vocab = gm.matcher.grammar.vocab
    width = width or vocab.n_ids
    ends = set(int(e) for e in vocab.end_ids)
    for _ in range(budget):
        allowed = gm.allowed_ids(width)
        assert allowed.size, "the guard must never offer an empty set"
        pool = allowed
        if prefer is not None and not gm.tripped:
            preferred = allowed[prefer[allowed]]
            pool = preferred if preferred.size else allowed
        tok = int(rng.choice(pool))
        gm.accept_token(tok)
        if tok in ends:
            return


def test_slow_constraint_trips_the_token_deadline_and_stays_bounded(vocab):
    G.GRAMMAR_CACHE.clear()
    g = compile_json_schema(FREE_TEXT, vocab)
    g.engine.chunk_hook = lambda: time.sleep(0.012)
    policy = GuardPolicy(token_deadline_ms=20)
    gm = GuardedMatcher(Matcher(g), policy, job_id="slow")
    _run(gm, np.random.default_rng(0), budget=300)
    assert gm.tripped and "deadline" in gm.stats.trip_reason
    # one chunk (12 ms) may start just before the deadline; allow scheduling noise on top
    assert gm.stats.call_seconds_max < 0.020 + 0.012 + 0.030, gm.stats.as_dict()
    assert gm.matcher.ended and gm.matcher.complete_value
    assert validator_for(FREE_TEXT).is_valid(json.loads(gm.matcher.text_bytes()))
    G.GRAMMAR_CACHE.clear()


def test_free_text_explosion_trips_and_salvage_validates(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    index = g.index
    plain = np.zeros(vocab.n_ids, bool)
    plain[index.slices["plain"].ids] = True
    policy = GuardPolicy(explosion_threshold=1000, explosion_steps=20)
    gm = GuardedMatcher(Matcher(g), policy, job_id="ramble")
    _run(gm, np.random.default_rng(1), budget=400, prefer=plain)
    assert gm.tripped and "consecutive steps" in gm.stats.trip_reason
    assert gm.matcher.complete_value
    assert validator_for(FREE_TEXT).is_valid(json.loads(gm.matcher.text_bytes()))


def test_long_free_text_string_trips(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    plain = np.zeros(vocab.n_ids, bool)
    plain[g.index.slices["plain"].ids] = True
    gm = GuardedMatcher(Matcher(g), GuardPolicy(max_string_bytes=200), job_id="long")
    _run(gm, np.random.default_rng(2), budget=400, prefer=plain)
    assert gm.tripped and "longer than 200 bytes" in gm.stats.trip_reason
    assert validator_for(FREE_TEXT).is_valid(json.loads(gm.matcher.text_bytes()))


def test_complete_but_not_stopping_trips_and_requests_cancel(vocab):
    g = compile_json_schema({"type": "boolean"}, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(end_stall_steps=3), job_id="eos-loop")
    true_id = next(i for i, b in enumerate(vocab.token_bytes) if b == b"true")
    gm.accept_token(true_id)
    end = int(min(vocab.end_ids))
    for _ in range(3):  # the generator keeps going: its stop tokens lack this end id
        assert set(gm.allowed_ids().tolist()) <= set(vocab.end_ids)
        gm.accept_token(end)
    assert gm.tripped and "did not stop" in gm.stats.trip_reason
    assert gm.cancel_requested


def test_job_deadline_trips(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(job_deadline_s=0.05, on_trip="stop"), job_id="late")
    gm.allowed_ids()
    time.sleep(0.06)
    ids = gm.allowed_ids()
    assert gm.tripped and "job deadline" in gm.stats.trip_reason
    assert set(ids.tolist()) == set(vocab.end_ids)


@pytest.mark.parametrize("action", ["salvage", "stop", "cancel"])
def test_max_tokens_and_trip_actions(vocab, action):
    g = compile_json_schema(FREE_TEXT, vocab)
    plain = np.zeros(vocab.n_ids, bool)
    plain[g.index.slices["plain"].ids] = True
    gm = GuardedMatcher(Matcher(g), GuardPolicy(max_tokens=30, on_trip=action), job_id=action)
    _run(gm, np.random.default_rng(3), budget=200, prefer=plain)
    assert gm.tripped and "max_tokens" in gm.stats.trip_reason
    assert gm.matcher.ended
    assert gm.matcher.complete_value == (action == "salvage")
    assert gm.cancel_requested == (action == "cancel")


def test_policy_rejects_bad_values():
    with pytest.raises(EnforcerError, match="on_trip"):
        GuardPolicy(on_trip="explode")
    with pytest.raises(EnforcerError, match="token_deadline_ms"):
        GuardPolicy(token_deadline_ms=0)


def test_stats_are_recorded(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), job_id="stats")
    _run(gm, np.random.default_rng(4), budget=50)
    d = gm.stats.as_dict()
    assert d["steps"] > 0 and d["calls"] >= d["steps"] and d["allowed_max"] > 0
