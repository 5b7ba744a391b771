"""Hang protection in the ExLlamaV2 adapter: guarded filters and the GuardedGenerator, on CPU.

What is real here: exllamav2 0.3.2's ``ExLlamaV2Config``, ``ExLlamaV2Tokenizer`` (the shipped
mini Llama 3 vocabulary), ``ExLlamaV2Sampler.sample``, ``ExLlamaV2DynamicJob`` (queueing,
``receive_logits``/``receive_sample``, stop conditions, the filter protocol and its background
work on a thread pool) and this package's filters, watchdog and ``GuardedGenerator``.

What is a stand-in: exllamav2's CUDA extension (``exl2_cpu_stub.py``: sampling in torch) and
the generator's job loop (``exl2_jobloop.JobLoopGenerator``: ``iterate()``/``cancel()`` as in
``ExLlamaV2DynamicGenerator`` but with no model, cache or pages; logits are seeded random
numbers, optionally biased; the forward pass and prefill are sleeps).  No timing here is a GPU
timing; ``tests/gpu/test_gpu_guarded.py`` runs the real generator on a CUDA machine.

No assertion reads a wall clock: costly constraints are exercised with the deterministic work
budget (``GuardPolicy(token_fuel=...)``) or with an engine that hangs (a hook blocked on an
event: the batch must finish while it is still blocked), and deadlines with the stand-in's
virtual clock (a fixed step per ``iterate()``).  jsonschema (``enforcer_oracle.validator_for``)
is the oracle for every output.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import threading
import uuid
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from enforcer_oracle import load_schema_file, schema_files, validator_for
from engine_hooks import Hang
from exl2_jobloop import JobLoopGenerator, biased_logits, random_logits

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.watchdog import GuardPolicy

OPTIONS = SchemaOptions(max_whitespace=2, max_depth=4)
FREE_TEXT = {"type": "object", "properties": {"reason": {"type": "string"}, "n": {"type": "integer"}},
             "required": ["reason", "n"]}
#: free text that cannot be closed at once: with logits favouring string content, it rambles
RAMBLE = {"type": "object", "properties": {"reason": {"type": "string", "minLength": 1}, "n": {"type": "integer"}},
          "required": ["reason", "n"]}
CALL = {"type": "object", "required": ["name", "arguments"], "properties": {
    "name": {"enum": ["get_weather", "search"]},
    "arguments": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 9}}}}}
#: a per-call deadline no loaded machine misses: for tests about other rules (deadline cuts have
#: their own tests, with a hung engine)
CALM_MS = 60_000.0
#: seconds of virtual time per generator step (``JobLoopGenerator.virtual_clock``)
STEP_S = 0.005


def unique(schema: dict) -> dict:
    """The same language under a new grammar-cache key (cold masks, private test hooks)."""
    return {**schema, "$comment": uuid.uuid4().hex}


# ----------------------------------------------------------------------------- set-up


@pytest.fixture(scope="module")
def ns(exl2):
    """exllamav2 names and the modules under test (imported once the extension stand-in is in place)."""
    from exllamav2 import ExLlamaV2, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    from exl2_enforcer.contrib.exllamav2 import filter as adapter
    from exl2_enforcer.contrib.exllamav2 import guarded

    return SimpleNamespace(ExLlamaV2=ExLlamaV2, Config=ExLlamaV2Config, Tokenizer=ExLlamaV2Tokenizer,
                           Job=ExLlamaV2DynamicJob, Sampler=ExLlamaV2Sampler, adapter=adapter, guarded=guarded)


@pytest.fixture(scope="module")
def env(ns, exl2_model_dir):
    """``env(eos=None)``: the mini model folder loaded (config, tokenizer, unloaded model)."""
    cache: dict = {}

    def load(eos: list[int] | None = None) -> SimpleNamespace:
        key = tuple(eos or ())
        if key not in cache:
            config = ns.Config(str(exl2_model_dir("mini", eos_token_id=eos)))
            tokenizer = ns.Tokenizer(config)
            cache[key] = SimpleNamespace(config=config, tokenizer=tokenizer, model=ns.ExLlamaV2(config),
                                         width=config.vocab_size)
        return cache[key]

    return load


def settings(ns):
    """Sampler settings the CPU stand-in implements."""
    return ns.Sampler.Settings(temperature=1.0, top_k=50, top_p=0.9, min_p=0.02, token_repetition_penalty=1.0)


def make_filter(ns, e, schema, **kw):
    """A JsonSchemaFilter of the mini model (compact whitespace unless ``options`` says otherwise)."""
    kw.setdefault("options", OPTIONS)
    return ns.adapter.JsonSchemaFilter(e.model, e.tokenizer, schema, **kw)


def make_job(ns, e, f, name, *, max_new_tokens=300, stop=None, prompt="Answer in JSON:"):
    """A real ExLlamaV2DynamicJob with ``f`` as its filter (stop conditions: its end ids)."""
    return ns.Job(input_ids=e.tokenizer.encode(prompt, add_bos=True), max_new_tokens=max_new_tokens,
                  gen_settings=settings(ns), seed=zlib.crc32(name.encode()) % 1000, filters=[f], identifier=name,
                  stop_conditions=f.end_ids if stop is None else stop)


def plain_bias(f, width: int, amount: float) -> torch.Tensor:
    """A logits bias favouring free-text string content (the grammar's "plain" token slice)."""
    bias = torch.zeros(width)
    ids = torch.from_numpy(np.asarray(f.grammar.index.slices["plain"].ids, dtype=np.int64))
    bias[ids[ids < width]] = amount
    return bias


def per_job(default, **special):
    """``logits_fn`` choosing by job identifier."""
    return lambda job, width: special.get(job.identifier, default)(job, width)


def check_valid(r, schema) -> None:
    """A result that must hold a complete value valid for ``schema``."""
    assert r.complete and r.valid, r
    assert validator_for(schema).is_valid(r.json)
    assert json.loads(r.text) == r.json


# ----------------------------------------------------------------------------- the filter alone


def test_unguarded_filter_has_no_watchdog(ns, env):
    """Without a policy nothing of the watchdog exists (the existing fast path)."""
    e = env()
    f = make_filter(ns, e, CALL)
    assert f.guard is None and f.stats is None and not f.tripped and not f.cancel_requested
    g = make_filter(ns, e, CALL, policy=GuardPolicy(token_deadline_ms=CALM_MS), job_id="j")
    assert g.guard is not None and g.guard.job_id == "j" and g.stats.steps == 0


def test_guarded_filter_counts_one_mask_per_step(ns, env):
    """prepare_logit_mask + mask_logits of one step are one guarded computation (the explosion
    rule counts steps); the real sampler path gives the same text as the unguarded filter."""
    e = env()
    seq, outs = torch.zeros((1, 1), dtype=torch.long), []
    for policy in (None, GuardPolicy(token_deadline_ms=CALM_MS)):
        f = make_filter(ns, e, CALL, policy=policy)
        f.begin("")
        gen, rng, toks = torch.Generator().manual_seed(3), random.Random(3), []
        while not f.matcher.ended and len(toks) < 200:
            logits = torch.randn((1, 1, e.width), generator=gen) * 3.0
            tok, *_ = ns.Sampler.sample(logits, settings(ns), seq, rng.random(), e.tokenizer, filters=[f])
            f.feed(tok)
            toks.append(int(tok))
        outs.append(toks)
        if policy is not None:
            assert f.stats.steps == len(toks) and f.stats.calls == 2 * len(toks), f.stats.as_dict()
    assert outs[0] == outs[1]


# ----------------------------------------------------------------------------- trips


def test_costly_constraint_trips_its_work_budget(ns, env):
    """A constraint whose masks cost more than the per-call work budget: every filter call is
    cut, the job trips, salvages along its completion plan, and its output validates; the
    other job is untouched."""
    e = env()
    schema = unique(FREE_TEXT)
    slow = make_filter(ns, e, schema, policy=GuardPolicy(token_fuel=1))
    fast = make_filter(ns, e, CALL, policy=GuardPolicy(token_deadline_ms=CALM_MS))
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS))
    gg.enqueue(make_job(ns, e, slow, "slow"), slow)
    gg.enqueue(make_job(ns, e, fast, "fast"), fast)
    res = {r.job_id: r for r in gg.run()}
    r = res["slow"]
    assert r.end_reason == "salvaged" and r.status == "salvaged" and "fuel" in r.trip_reason, r
    check_valid(r, FREE_TEXT)
    assert res["fast"].status == "completed" and res["fast"].completed and res["fast"].trip_reason is None
    check_valid(res["fast"], CALL)




@pytest.mark.timeout(300)
def test_hung_constraint_does_not_hold_the_batch(ns, env):
    """One of 8 jobs has an engine that hangs: the batch finishes while it is still hung; that
    job trips and salvages along its completion plan (a valid value), the 7 others complete."""
    e = env()
    schema = unique(FREE_TEXT)
    policy = GuardPolicy(token_deadline_ms=20)
    hung = make_filter(ns, e, schema, policy=policy)
    hang = Hang(hung.grammar)
    hung.grammar.engine.before_compute = hang
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, policy)
    try:
        for i in range(8):
            f = hung if i == 3 else make_filter(ns, e, CALL, policy=policy)
            gg.enqueue(make_job(ns, e, f, f"j{i}"), f)
        res = {r.job_id: r for r in gg.run()}
        assert hang.entered.is_set() and not hang.release.is_set()
    finally:
        hang.release.set()
        hung.grammar.engine.before_compute = None
    r = res["j3"]
    assert r.status == "salvaged" and "per-token deadline" in r.trip_reason and r.stats["fallback_calls"] > 0, r
    check_valid(r, FREE_TEXT)
    for i in (0, 1, 2, 4, 5, 6, 7):
        assert res[f"j{i}"].status == "completed", res[f"j{i}"]
        check_valid(res[f"j{i}"], CALL)


def test_free_text_explosion_trips_and_salvage_validates(ns, env):
    """Logits favouring free text keep thousands of tokens allowed: the explosion rule trips
    and salvage closes the value."""
    e = env()
    policy = GuardPolicy(explosion_threshold=1000, explosion_steps=20, token_deadline_ms=CALM_MS)
    f = make_filter(ns, e, RAMBLE, policy=policy)
    gen = JobLoopGenerator(e.model, e.tokenizer, logits_fn=biased_logits(plain_bias(f, e.width, 8.0)))
    gg = ns.guarded.GuardedGenerator(gen, policy)
    gg.enqueue(make_job(ns, e, f, "ramble", max_new_tokens=1000), f)
    (r,) = gg.run()
    assert r.end_reason == "salvaged" and "consecutive steps" in r.trip_reason, r
    assert r.stats["allowed_max"] > 1000 and r.eos_reason == "stop_token"
    check_valid(r, RAMBLE)


def test_eos_mismatch_trips_complete_but_not_stopping(ns, env):
    """config.json names eos 8001 (the job's stop condition) but the model emits 8009, which
    the filter allows as an end: the value is complete, the job never stops by itself; the
    stall rule trips and the guarded generator cancels it."""
    e = env(eos=[8001])
    policy = GuardPolicy(end_stall_steps=3, token_deadline_ms=CALM_MS)
    f = make_filter(ns, e, CALL, extra_end_ids=[8009], policy=policy)
    assert set(f.end_ids) == {8001, 8009}
    bias = torch.zeros(e.width)
    bias[8009] = 40.0
    gen = JobLoopGenerator(e.model, e.tokenizer, logits_fn=biased_logits(bias))
    gg = ns.guarded.GuardedGenerator(gen, policy)
    gg.enqueue(make_job(ns, e, f, "eos", stop=[e.tokenizer.eos_token_id]), f)
    (r,) = gg.run()
    assert r.end_reason == "cancelled" and "did not stop" in r.trip_reason, r
    assert r.tokens[-3:] == [8009] * 3 and gen.num_remaining_jobs() == 0 and gen.cancelled
    check_valid(r, CALL)


# ----------------------------------------------------------------------------- failures


def test_exception_in_one_filter_fails_that_job_only(ns, env, caplog):
    """An exception inside one job's mask computation: that job ends with "error" and the
    message; the batch goes on and the other jobs finish valid; run() does not raise."""
    e = env()
    calls = {"n": 0}

    def boom() -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom in the mask engine")

    policy = GuardPolicy(token_deadline_ms=CALM_MS)
    bad = make_filter(ns, e, unique(CALL), policy=policy)
    bad.grammar.engine.chunk_hook = boom
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, policy)
    for name in ("a", "b", "c"):
        f = bad if name == "b" else make_filter(ns, e, CALL, policy=policy)
        gg.enqueue(make_job(ns, e, f, name), f)
    with caplog.at_level(logging.WARNING, logger="exl2_enforcer"):
        res = {r.job_id: r for r in gg.run()}
    assert res["b"].end_reason == "error" and "boom" in res["b"].error and not res["b"].valid
    assert any("job=b" in rec.getMessage() for rec in caplog.records)
    for name in ("a", "c"):
        assert res[name].end_reason == "completed", res[name]
        check_valid(res[name], CALL)
    assert bad.background_result is None


def test_exception_escaping_iterate_is_charged_to_its_job(ns, env):
    """An exception outside the guarded protocol calls (here: use_background_worker, which the
    job asks after feed) escapes generator.iterate(); it is charged to the job in its traceback."""
    e = env()
    policy = GuardPolicy(token_deadline_ms=CALM_MS)

    class Broken(ns.adapter.JsonSchemaFilter):
        """Raises on the 5th question, outside the filter's own guard."""

        asked = 0

        def use_background_worker(self) -> bool:
            """Asked by the job after each feed(): fails the 5th time."""
            self.asked += 1
            if self.asked == 5:
                raise ValueError("broken filter")
            return True

    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, policy)
    for name in ("a", "b", "c"):
        cls = Broken if name == "b" else ns.adapter.JsonSchemaFilter
        f = cls(e.model, e.tokenizer, CALL, options=OPTIONS, policy=policy)
        gg.enqueue(make_job(ns, e, f, name), f)
    res = {r.job_id: r for r in gg.run()}
    assert res["b"].end_reason == "error" and "broken filter" in res["b"].error
    for name in ("a", "c"):
        check_valid(res[name], CALL)
    assert gen.num_remaining_jobs() == 0


def test_unattributable_iterate_error_fails_the_running_batch_only(ns, env):
    """An exception from the generator itself (no job in its traceback, like a CUDA error in the
    forward pass) fails the jobs that were running; queued jobs run afterwards."""
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer, max_batch_size=2)
    real_generate = gen._generate
    failed: list[int] = []

    def forward_fails_once(results: list) -> None:
        # once both batch places hold a started job (schemas compile off-thread, so not at a fixed step)
        if not failed and len(gen.active_jobs) == 2 and gen.iterations >= 3:
            failed.append(gen.iterations)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        real_generate(results)

    gen._generate = forward_fails_once
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS))
    for name in ("a", "b", "c", "d"):
        gg.submit("JSON:", CALL, max_new_tokens=300, gen_settings=settings(ns), seed=1, job_id=name, options=OPTIONS)
    res = {r.job_id: r for r in gg.run()}
    assert failed
    # the two jobs in the batch at that step fail (which two depends on compile order); the others run
    errored = [name for name in "abcd" if res[name].end_reason == "error"]
    assert len(errored) == 2, res
    for name in errored:
        assert "illegal memory access" in res[name].error, res[name]
    for name in set("abcd") - set(errored):
        check_valid(res[name], CALL)
    assert gen.num_remaining_jobs() == 0


# ----------------------------------------------------------------------------- deadlines


def test_job_deadline_during_a_long_run_cancels_that_job_only(ns, env):
    """Two rambling jobs with a 0.25 s deadline (virtual time: 50 steps): the "cancel" one is
    cancelled with its partial text, the "salvage" one closes its value within the grace; the
    others complete."""
    e = env()
    cancel = GuardPolicy(job_deadline_s=0.25, on_trip="cancel", token_deadline_ms=CALM_MS)
    salvage = GuardPolicy(job_deadline_s=0.25, token_deadline_ms=CALM_MS)
    probe = make_filter(ns, e, RAMBLE)
    ramble = biased_logits(plain_bias(probe, e.width, 8.0))
    gen = JobLoopGenerator(e.model, e.tokenizer, logits_fn=per_job(random_logits(), cut=ramble, close=ramble))
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), grace_s=1.0,
                                     clock=gen.virtual_clock(STEP_S))
    for name, schema, policy in (("a", CALL, None), ("cut", RAMBLE, cancel), ("close", RAMBLE, salvage),
                                 ("c", CALL, None)):
        f = make_filter(ns, e, schema, policy=policy or gg.policy)
        gg.enqueue(make_job(ns, e, f, name, max_new_tokens=5000), f)
    res = {r.job_id: r for r in gg.run()}
    cut = res["cut"]
    assert cut.end_reason == "cancelled" and cut.status == "cut" and "job deadline" in cut.trip_reason, cut
    assert cut.text and cut.json is None and cut.stats["elapsed_s"] <= 0.25 + 2 * STEP_S
    close = res["close"]
    assert close.end_reason == "salvaged" and "job deadline" in close.trip_reason, close
    check_valid(close, RAMBLE)
    assert close.stats["elapsed_s"] <= 0.25 + gg.grace_s
    for name in ("a", "c"):
        assert res[name].end_reason == "completed"
        check_valid(res[name], CALL)


def test_job_deadline_applies_during_prefill(ns, env):
    """A job still in prefill at its deadline (no filter call yet) is cancelled from outside."""
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer, prefill_chunk=2)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), clock=gen.virtual_clock(STEP_S))
    long_prompt = "Please answer in JSON. " * 20
    slow = make_filter(ns, e, CALL, policy=GuardPolicy(job_deadline_s=0.15, token_deadline_ms=CALM_MS))
    gg.enqueue(make_job(ns, e, slow, "long", prompt=long_prompt), slow)
    quick = make_filter(ns, e, CALL, policy=GuardPolicy(token_deadline_ms=CALM_MS))
    gg.enqueue(make_job(ns, e, quick, "short"), quick)
    res = {r.job_id: r for r in gg.run()}
    r = res["long"]
    assert r.end_reason == "cancelled" and "job deadline" in r.trip_reason and r.text == "", r
    assert r.stats["calls"] == 0 and r.stats["elapsed_s"] <= 0.15 + 2 * STEP_S
    assert res["short"].end_reason == "completed"


def test_generate_json_refuses_a_single_string_as_prompts(ns, env):
    """A str is a Sequence[str]: generate_json(gen, tok, "Describe Oslo:", schema) queued one job
    per character.  It is a TypeError that says to pass [prompt], before any job starts."""
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer)
    with pytest.raises(TypeError, match=r"pass \[prompt\]"):
        ns.guarded.generate_json(gen, e.tokenizer, "Describe Oslo:", CALL, options=OPTIONS)
    assert gen.num_remaining_jobs() == 0


@pytest.mark.parametrize("action", ["salvage", "cancel"])
def test_generate_json_batch_deadline(ns, env, action):
    """generate_json with a batch deadline: every prompt gets a result, in order, by the
    deadline plus the grace (virtual time)."""
    e = env()
    probe = make_filter(ns, e, RAMBLE)
    gen = JobLoopGenerator(e.model, e.tokenizer, logits_fn=biased_logits(plain_bias(probe, e.width, 8.0)))
    clock = gen.virtual_clock(STEP_S)
    results = ns.guarded.generate_json(gen, e.tokenizer, [f"Prompt {i}:" for i in range(4)], RAMBLE,
                                       policy=GuardPolicy(on_trip=action, token_deadline_ms=CALM_MS),
                                       batch_deadline_s=0.3,
                                       max_new_tokens=5000, options=OPTIONS, grace_s=1.0, clock=clock)
    assert clock() <= 0.3 + 1.0 + 2 * STEP_S
    assert [r.job_id for r in results] == [0, 1, 2, 3]
    for r in results:
        if r.trip_reason is None:  # closed its string by chance before the deadline
            assert r.end_reason == "completed"
            check_valid(r, RAMBLE)
        elif action == "salvage":
            assert r.end_reason == "salvaged" and r.trip_reason == "batch deadline passed"
            check_valid(r, RAMBLE)
        else:
            assert r.end_reason == "cancelled" and r.trip_reason == "batch deadline passed"
            assert r.text and r.json is None and r.status == "cut"
    assert sum(r.trip_reason is not None for r in results) >= 3
    assert gen.num_remaining_jobs() == 0


# ----------------------------------------------------------------------------- unpaged generators


def test_unpaged_job_that_does_not_fit_fails_alone(ns, env):
    """Unpaged (no flash-attn), the cache is one page of max_seq_len: a job asking for more new
    tokens than fit gets an "error" result that says so; the jobs that fit run."""
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer, max_seq_len=256)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), options=OPTIONS)
    gg.submit("JSON:", CALL, max_new_tokens=200, gen_settings=settings(ns), seed=1, job_id="fits")
    gg.submit("JSON:", CALL, max_new_tokens=4000, gen_settings=settings(ns), seed=2, job_id="too-big")
    gg.submit("JSON:", CALL, max_new_tokens=200, gen_settings=settings(ns), seed=3, job_id="fits-too")
    res = {r.job_id: r for r in gg.run()}
    big = res["too-big"]
    assert big.end_reason == "error" and big.status == "failed", big
    assert "does not fit the generator's cache" in big.error and "4000" in big.error and "256" in big.error
    assert "unpaged" in big.error
    for name in ("fits", "fits-too"):
        assert res[name].completed, res[name]
        check_valid(res[name], CALL)


def test_unpaged_batch_deadline_gives_unstarted_prompts_a_defined_outcome(ns, env):
    """Unpaged, jobs run one at a time: at the batch deadline the running one salvages, those
    still queued end "not_started" with no value; every prompt has a result, in order."""
    e = env()
    probe = make_filter(ns, e, RAMBLE)
    gen = JobLoopGenerator(e.model, e.tokenizer, max_seq_len=2048,
                           logits_fn=biased_logits(plain_bias(probe, e.width, 8.0)))
    clock = gen.virtual_clock(STEP_S)
    results = ns.guarded.generate_json(gen, e.tokenizer, [f"Prompt {i}:" for i in range(4)], RAMBLE,
                                       policy=GuardPolicy(token_deadline_ms=CALM_MS), batch_deadline_s=0.5,
                                       max_new_tokens=1500,
                                       options=OPTIONS, grace_s=1.0, clock=clock)
    assert [r.index for r in results] == [0, 1, 2, 3]
    started = [r for r in results if r.end_reason != "not_started"]
    waiting = [r for r in results if r.end_reason == "not_started"]
    assert started and waiting, [r.end_reason for r in results]
    for r in started:
        assert r.status in ("completed", "salvaged"), r
        check_valid(r, RAMBLE)
    for r in waiting:
        assert r.status == "cut" and r.text == "" and r.json is None and r.stats["elapsed_s"] == 0.0
        assert r.trip_reason == "batch deadline passed before the job started"
    assert gen.num_remaining_jobs() == 0


# ----------------------------------------------------------------------------- results that must come back


def test_self_referencing_schema_fails_its_job_alone_and_validation_never_raises(ns, env):
    """A schema that refers to itself through anyOf without consuming input (jsonschema recurses
    forever on it) is refused at compile time with its pointer: run() reports that job failed,
    the other job completes; the bounded validation that results go through never raises."""
    e = env()
    schema = {"anyOf": [{"$ref": "#"}, {"type": "integer"}]}
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(max_tokens=8, token_deadline_ms=CALM_MS), options=OPTIONS)
    gg.submit("JSON:", schema, max_new_tokens=64, gen_settings=settings(ns), seed=5, job_id="loop")
    gg.submit("JSON:", CALL, max_new_tokens=300, gen_settings=settings(ns), seed=6, job_id="fine",
              policy=GuardPolicy(token_deadline_ms=CALM_MS))
    res = {r.job_id: r for r in gg.run()}
    r = res["loop"]
    assert r.status == "failed" and "consumes no input" in r.error, r
    assert res["fine"].completed
    from jsonschema import Draft202012Validator

    valid, why = ns.guarded.validate_bounded(Draft202012Validator(schema), 5)
    assert not valid and "RecursionError" in why


def test_schema_that_does_not_compile_fails_its_job_alone(ns, env):
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), options=OPTIONS)
    gg.submit("JSON:", {"type": "string", "pattern": "(?<=a)b"}, job_id="bad", gen_settings=settings(ns))
    gg.submit("JSON:", CALL, max_new_tokens=300, gen_settings=settings(ns), seed=6, job_id="fine")
    res = {r.job_id: r for r in gg.run()}
    assert res["bad"].status == "failed" and "did not compile" in res["bad"].error, res["bad"]
    assert res["fine"].completed


def test_compile_past_its_bound_fails_the_job_and_does_not_block(ns, env, monkeypatch):
    """submit() compiles on a worker: a compile that never ends fails its job after
    compile_timeout_s (on the injected clock) while the other job runs."""
    e = env()
    release = threading.Event()
    real = ns.guarded.JsonSchemaFilter

    def slow_filter(model, tokenizer, schema, **kw):
        if schema.get("title") == "stuck":
            release.wait(300)
        return real(model, tokenizer, schema, **kw)

    monkeypatch.setattr(ns.guarded, "JsonSchemaFilter", slow_filter)
    ticks = iter(range(10**9))
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), options=OPTIONS, compile_timeout_s=50,
                                     clock=lambda: float(next(ticks)))
    try:
        gg.submit("JSON:", {**CALL, "title": "stuck"}, job_id="stuck", gen_settings=settings(ns))
        gg.submit("JSON:", CALL, max_new_tokens=300, gen_settings=settings(ns), seed=6, job_id="fine")
        res = {r.job_id: r for r in gg.run()}
        assert not release.is_set()
    finally:
        release.set()
    assert res["stuck"].status == "failed" and "compile_timeout_s=50" in res["stuck"].error
    assert res["fine"].completed


# ----------------------------------------------------------------------------- the corpus


@pytest.fixture
def frozen_gc():
    """What docs/watchdog.md recommends once models and grammars are loaded: move them out of
    the collector's reach, so that a full collection (it stops every thread: ~150 ms measured
    with this corpus's grammars) cannot stretch a filter call past its deadline."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def corpus(vocab) -> list[tuple[str, dict]]:
    """(name, schema) of every schema file that compiles for ``vocab``."""
    out = []
    for path in schema_files():
        schema = load_schema_file(path)[0]
        try:
            compile_json_schema(schema, vocab, OPTIONS)
        except Exception:  # noqa: BLE001 - error-case files are not for this test
            continue
        out.append((path.stem, schema))
    return out


def test_corpus_random_generations(ns, env, frozen_gc):
    """1,000 seeded random-logit generations over the schema corpus through the real job and
    sampler, 16 at a time, with salvage on, a token budget small enough that most trip and a
    tight (50 ms) job deadline for every tenth: every result is complete-and-valid or
    salvaged-and-valid, no filter call passes the token deadline and no job its deadline plus
    the salvage grace, beyond a small margin."""
    e = env()
    schemas = corpus(make_filter(ns, e, CALL).vocab)
    assert len(schemas) >= 30
    rng = random.Random(7)
    gen = JobLoopGenerator(e.model, e.tokenizer, max_batch_size=16)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(token_deadline_ms=CALM_MS), options=OPTIONS, grace_s=3.0,
                                     clock=gen.virtual_clock(STEP_S))
    plan = {}
    for i in range(1000):
        _name, schema = schemas[i % len(schemas)]
        # the per-call deadline is far out: this test is about the rules and the job deadline
        # (virtual time); deadline cuts have their own deterministic tests
        policy = GuardPolicy(max_tokens=rng.randint(2, 16), job_deadline_s=0.05 if i % 10 == 0 else 10.0,
                             token_deadline_ms=60_000)
        plan[i] = (schema, policy)
        gg.submit("JSON:", schema, max_new_tokens=600, gen_settings=settings(ns), seed=i, policy=policy, job_id=i)
    results = gg.run()
    assert [r.job_id for r in results] == list(range(1000))
    for r in results:
        schema, policy = plan[r.job_id]
        assert r.end_reason in ("completed", "salvaged"), r
        assert r.valid and validator_for(schema).is_valid(r.json), r
        # past its deadline a salvaging job gets the grace to close its value, then is cancelled
        assert r.stats["elapsed_s"] <= policy.job_deadline_s + gg.grace_s + 2 * STEP_S, r.stats
    reasons = [r.trip_reason or "" for r in results]
    assert sum(r.end_reason == "salvaged" for r in results) > 500
    assert sum("max_tokens" in t for t in reasons) > 400 and sum("job deadline" in t for t in reasons) > 20


def test_guarded_filter_reused_job_after_job(ns, env, frozen_gc):
    """One guarded filter per schema serving job after job through the real sampler (no job
    object): begin() gives each job a fresh watchdog, and the guarantees hold."""
    e = env()
    filters: dict = {}
    rng = random.Random(11)
    seq = torch.zeros((1, 1), dtype=torch.long)
    schemas = corpus(make_filter(ns, e, CALL).vocab)
    salvaged = 0
    for i in range(150):
        name, schema = schemas[i % len(schemas)]
        policy = GuardPolicy(max_tokens=rng.randint(2, 16), token_deadline_ms=60_000)
        f = filters.get(name) or filters.setdefault(name, make_filter(ns, e, schema))
        f.guard_with(policy, job_id=i)
        f.begin("")
        assert f.stats.steps == 0 and not f.tripped
        gen = torch.Generator().manual_seed(i)
        while not f.matcher.ended:
            logits = torch.randn((1, 1, e.width), generator=gen) * 3.0
            tok, *_ = ns.Sampler.sample(logits, settings(ns), seq, rng.random(), e.tokenizer, filters=[f])
            f.feed(tok)
            assert f.stats.steps < 600 and f.error is None
        assert f.matcher.complete_value, (name, f.matcher.text_bytes())
        assert validator_for(schema).is_valid(json.loads(f.value_bytes)), name
        salvaged += f.tripped
    assert salvaged > 75, salvaged
