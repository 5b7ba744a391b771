"""The engine-level watchdog: GuardPolicy rules, the hard bound, trips and reactions (no inference library).

No assertion here reads a wall clock.  Cost limits are exercised with the deterministic work
budget (``token_fuel``), deadlines with an injected clock, and the hard bound with an engine
that *hangs* (a ``before_compute`` hook blocked on an event): the guarded call must come back
while the hook is still blocked, however loaded the machine is.  jsonschema is the oracle for
every value.
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pytest
from enforcer_oracle import validator_for
from engine_hooks import Hang

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, TokenRejected
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary
from exl2_enforcer.watchdog import (
    GuardedMatcher,
    GuardPolicy,
    PolicyError,
    WorkBudget,
    freeze_compiled,
)

#: a per-call deadline no loaded machine misses: for tests about the other rules (deadline cuts
#: have their own tests, with a hung engine)
CALM_MS = 60_000.0
FREE_TEXT = {"type": "object", "properties": {"reason": {"type": "string"}, "n": {"type": "integer"}},
             "required": ["reason", "n"]}


def unique(schema: dict) -> dict:
    """The same language under a new grammar-cache key (cold masks, private hooks)."""
    return {**schema, "$comment": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now




def _run(gm: GuardedMatcher, rng: np.random.Generator, *, budget: int, prefer=None, width=None) -> None:
    """Sample from the guarded mask until an end token or the budget (a stand-in job loop)."""
    vocab = gm.matcher.grammar.vocab
    width = width or vocab.n_ids
    ends = {int(e) for e in vocab.end_ids}
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


def _value(gm: GuardedMatcher):
    assert gm.complete_value, gm.matcher.text_bytes()
    return json.loads(gm.matcher.text_bytes())


def _plain(g, vocab) -> np.ndarray:
    plain = np.zeros(vocab.n_ids, bool)
    plain[g.index.slices["plain"].ids] = True
    return plain


# ----------------------------------------------------------------------------- the hard bound


@pytest.mark.timeout(120)
def test_hung_engine_call_returns_with_a_plan_token_and_the_value_validates(vocab):
    """The engine hangs in the first cold mask: the call returns anyway (the hook is still
    blocked), trips, and the fallback follows the recorded completion plan to a valid value."""
    g = compile_json_schema(unique(FREE_TEXT), vocab)
    m = Matcher(g)
    gm = GuardedMatcher(m, GuardPolicy(token_deadline_ms=20), job_id="hung")
    assert gm.plans.record(m.state, 4096)  # what a filter does at compile time
    hang = Hang(g)
    g.engine.before_compute = hang
    try:
        first = gm.allowed_ids()
        assert hang.entered.is_set() and not hang.release.is_set()  # still blocked: the call did not wait
        assert gm.tripped and "per-token deadline" in gm.stats.trip_reason
        assert first.tolist() == [gm.plans.next_hop(m.state)[0]]
        gm.accept_token(int(first[0]))
        _run(gm, np.random.default_rng(0), budget=60)
        assert not hang.release.is_set() and gm.stats.fallback_calls >= 2
        assert validator_for(FREE_TEXT).is_valid(_value(gm)) and not gm.cut
    finally:
        hang.release.set()
        g.engine.before_compute = None


@pytest.mark.timeout(120)
def test_hung_engine_without_a_plan_cuts_the_value_and_says_so(vocab):
    """No completion is known in time (plans capped at 1 byte): only end tokens, ``cut`` set,
    and the value is reported incomplete rather than passed off as valid."""
    g = compile_json_schema(unique(FREE_TEXT), vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(token_deadline_ms=20, plan_max_bytes=1), job_id="cut")
    hang = Hang(g)
    g.engine.before_compute = hang
    try:
        ids = gm.allowed_ids()
        assert set(ids.tolist()) == set(vocab.end_ids) and gm.cut and gm.tripped
        gm.accept_token(int(ids[0]))
        assert gm.matcher.ended and not gm.complete_value
    finally:
        hang.release.set()
        g.engine.before_compute = None


def test_late_engine_result_is_picked_up_and_the_job_goes_on(vocab):
    """The call that gave up does not lose the work: once the worker finishes, the next call
    uses the engine again (salvage masks), and the value completes valid."""
    g = compile_json_schema(unique(FREE_TEXT), vocab)
    m = Matcher(g)
    gm = GuardedMatcher(m, GuardPolicy(token_deadline_ms=20), job_id="late")
    gm.plans.record(m.state, 4096)
    hang = Hang(g)
    g.engine.before_compute = hang
    gm.allowed_ids()
    assert gm.tripped
    hang.release.set()
    g.engine.before_compute = None
    assert gm.wait_idle(30.0)
    gm.policy = GuardPolicy(token_deadline_ms=CALM_MS)  # later calls: no load-dependent trip
    before = gm.stats.fallback_calls
    _run(gm, np.random.default_rng(1), budget=200)
    assert gm.stats.fallback_calls == before  # the engine answered every later call
    assert validator_for(FREE_TEXT).is_valid(_value(gm))


def test_fuel_budget_trips_deterministically_and_salvage_validates(vocab):
    """``token_fuel`` bounds the chunks of mask work per call: a cold state needing more trips
    the same way on every machine; the fallback still closes the value validly."""
    g = compile_json_schema(unique(FREE_TEXT), vocab)
    m = Matcher(g)
    gm = GuardedMatcher(m, GuardPolicy(token_fuel=1), job_id="fuel")
    gm.plans.record(m.state, 4096)
    _run(gm, np.random.default_rng(2), budget=100)
    assert gm.tripped and "fuel of 1 chunks" in gm.stats.trip_reason
    assert validator_for(FREE_TEXT).is_valid(_value(gm))


def test_costly_any_order_object_trips_the_budget_and_completes_validly(vocab):
    """Case 1 of issue 11 in small: many optional properties in any order make cold states
    costly; with a work budget the job trips, and the completion plan closes a valid value."""
    schema = {"type": "object", "properties": {f"p{i:02d}": {"type": "integer"} for i in range(40)}}
    g = compile_json_schema(unique(schema), vocab, SchemaOptions(property_order="any", max_whitespace=1))
    m = Matcher(g)
    gm = GuardedMatcher(m, GuardPolicy(token_fuel=2), job_id="wide")
    gm.plans.record(m.state, 4096)
    _run(gm, np.random.default_rng(5), budget=200)
    assert gm.tripped and "fuel" in gm.stats.trip_reason
    assert validator_for(schema).is_valid(_value(gm))


def test_work_budget_counts_the_engines_checks():
    """The engine checks ``perf_counter() > deadline``; the budget answers "passed" once its fuel is spent."""
    b = WorkBudget(math.inf, fuel=2)
    assert not (1.0 > b) and not (1.0 > b) and (1.0 > b) and b.exhausted
    assert 5.0 > WorkBudget(1.0) and not WorkBudget(1.0).exhausted


# ----------------------------------------------------------------------------- rules


def test_default_policy_lets_a_2000_token_free_text_field_complete_untouched(vocab):
    """With ``GuardPolicy()``'s rules a long, ordinary free-text answer is the model's to finish
    (the per-call deadline is set far out: whether a loaded machine meets 50 ms is a benchmark's
    question; every rule keeps its default)."""
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(token_deadline_ms=CALM_MS), job_id="essay")
    tb = vocab.token_bytes
    words = [i for i in g.index.slices["plain"].ids.tolist() if tb[i] and tb[i][:1] == b" " and tb[i][1:].isalpha()
             and 3 <= len(tb[i]) <= 7]
    rng = np.random.default_rng(3)
    single = g.index.single_byte_ids
    for b in b'{"reason":"':
        gm.allowed_ids()
        gm.accept_token(int(single[b]))
    for _ in range(2000):
        allowed = gm.allowed_ids()
        tok = int(rng.choice(words))
        assert tok in set(allowed.tolist())
        gm.accept_token(tok)
    for b in b'","n":7}':
        gm.allowed_ids()
        gm.accept_token(int(single[b]))
    gm.allowed_ids()
    gm.accept_token(int(min(vocab.end_ids)))
    assert not gm.tripped, gm.stats.trip_reason
    value = _value(gm)
    assert validator_for(FREE_TEXT).is_valid(value) and len(value["reason"]) > 2000 * 3


def test_runaway_number_trips_the_digit_cap_and_salvage_validates(vocab):
    """A model stuck on digits: the default cap (128) trips and salvage ends the number."""
    schema = {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}
    g = compile_json_schema(schema, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(token_deadline_ms=CALM_MS), job_id="digits")
    single = g.index.single_byte_ids
    for b in b'{"n":1':
        gm.allowed_ids()
        gm.accept_token(int(single[b]))
    digits = [i for i, t in enumerate(vocab.token_bytes) if t and t.isdigit()]
    steps = 0
    while not gm.tripped:
        allowed = set(gm.allowed_ids().tolist())
        tok = next(d for d in digits if d in allowed)
        gm.accept_token(tok)
        steps += 1
        assert steps < 1000, "the digit cap never tripped"
    assert "consecutive digits" in gm.stats.trip_reason
    _run(gm, np.random.default_rng(4), budget=50)
    value = _value(gm)
    assert validator_for(schema).is_valid(value)


def test_long_free_text_string_trips(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(max_string_bytes=200, token_deadline_ms=CALM_MS), job_id="long")
    _run(gm, np.random.default_rng(2), budget=400, prefer=_plain(g, vocab))
    assert gm.tripped and "longer than 200 bytes" in gm.stats.trip_reason
    assert validator_for(FREE_TEXT).is_valid(_value(gm))


def test_explosion_rule_is_opt_in(vocab):
    """Off by default; with a threshold it trips after that many wide steps and salvage validates."""
    assert GuardPolicy().explosion_threshold is None
    g = compile_json_schema(FREE_TEXT, vocab)
    policy = GuardPolicy(explosion_threshold=1000, explosion_steps=20, token_deadline_ms=CALM_MS)
    gm = GuardedMatcher(Matcher(g), policy, job_id="ramble")
    _run(gm, np.random.default_rng(1), budget=400, prefer=_plain(g, vocab))
    assert gm.tripped and "consecutive steps" in gm.stats.trip_reason
    assert validator_for(FREE_TEXT).is_valid(_value(gm))


def test_complete_but_not_stopping_trips_and_requests_cancel(vocab):
    g = compile_json_schema({"type": "boolean"}, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(end_stall_steps=3, token_deadline_ms=CALM_MS), job_id="eos-loop")
    true_id = next(i for i, b in enumerate(vocab.token_bytes) if b == b"true")
    gm.accept_token(true_id)
    end = int(min(vocab.end_ids))
    for _ in range(3):  # the generator keeps going: its stop tokens lack this end id
        assert set(gm.allowed_ids().tolist()) <= set(vocab.end_ids)
        gm.accept_token(end)
    assert gm.tripped and "did not stop" in gm.stats.trip_reason
    assert gm.cancel_requested


def test_job_deadline_trips_on_the_injected_clock(vocab):
    clock = FakeClock()
    g = compile_json_schema(FREE_TEXT, vocab)
    policy = GuardPolicy(job_deadline_s=0.05, on_trip="stop", token_deadline_ms=CALM_MS)
    gm = GuardedMatcher(Matcher(g), policy, job_id="late", clock=clock)
    gm.allowed_ids()
    assert not gm.tripped
    clock.now += 0.06
    ids = gm.allowed_ids()
    assert gm.tripped and "job deadline" in gm.stats.trip_reason
    assert set(ids.tolist()) == set(vocab.end_ids)


@pytest.mark.parametrize("action", ["salvage", "stop", "cancel"])
def test_max_tokens_and_trip_actions(vocab, action):
    g = compile_json_schema(FREE_TEXT, vocab)
    policy = GuardPolicy(max_tokens=30, on_trip=action, token_deadline_ms=CALM_MS)
    gm = GuardedMatcher(Matcher(g), policy, job_id=action)
    _run(gm, np.random.default_rng(3), budget=200, prefer=_plain(g, vocab))
    assert gm.tripped and "max_tokens" in gm.stats.trip_reason
    assert gm.matcher.ended
    assert gm.matcher.complete_value == (action == "salvage")
    assert gm.cancel_requested == (action == "cancel")


def test_a_refused_token_raises_and_leaves_the_state(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), GuardPolicy(token_deadline_ms=CALM_MS), job_id="bad")
    gm.allowed_ids()
    with pytest.raises(TokenRejected):
        gm.accept_token(int(g.index.single_byte_ids[ord("x")]))
    assert gm.matcher.state == gm.matcher.grammar.automaton.start


# ----------------------------------------------------------------------------- the policy


@pytest.mark.parametrize("field, value, words", [
    ("token_deadline_ms", math.nan, "finite"), ("token_deadline_ms", 0, "> 0"), ("token_deadline_ms", -5, "> 0"),
    ("token_deadline_ms", "50", "number"), ("token_deadline_ms", math.inf, "finite"),
    ("job_deadline_s", "30", "number"), ("job_deadline_s", math.nan, "finite"), ("job_deadline_s", True, "number"),
    ("max_tokens", 2.5, "an int"), ("max_tokens", 0, "> 0"), ("token_fuel", -1, "> 0"),
    ("max_string_bytes", "4096", "an int"), ("max_number_digits", 0, "> 0"), ("end_stall_steps", None, "required"),
    ("explosion_steps", 1.0, "an int"), ("plan_max_bytes", 0, "> 0"), ("on_trip", "explode", "one of"),
])
def test_policy_rejects_bad_values_naming_the_field(field, value, words):
    with pytest.raises(PolicyError, match=f"GuardPolicy.{field}: .*{words}") as info:
        GuardPolicy(**{field: value})
    assert info.value.field == field and isinstance(info.value, EnforcerError)


def test_policy_accepts_none_where_a_limit_is_optional():
    p = GuardPolicy(token_fuel=None, max_string_bytes=None, max_number_digits=None, job_deadline_s=None,
                    max_tokens=None, explosion_threshold=None)
    assert p.token_deadline_ms == 50.0


def test_stats_are_recorded(vocab):
    g = compile_json_schema(FREE_TEXT, vocab)
    gm = GuardedMatcher(Matcher(g), job_id="stats")
    _run(gm, np.random.default_rng(4), budget=50)
    d = gm.stats.as_dict()
    assert d["steps"] > 0 and d["calls"] >= d["steps"] and d["allowed_max"] > 0 and d["fallback_calls"] == 0


def test_freeze_compiled_moves_loaded_objects_out_of_the_collector():
    import gc

    compile_json_schema(unique(FREE_TEXT), default_vocabulary(), SchemaOptions(max_whitespace=2))
    try:
        assert freeze_compiled() > 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
