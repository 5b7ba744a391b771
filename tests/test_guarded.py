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

A slow constraint is simulated with the mask engine's ``chunk_hook`` test hook; jsonschema
(``enforcer_oracle.validator_for``) is the oracle for every output.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import time
import uuid
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from enforcer_oracle import load_schema_file, schema_files, validator_for
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
#: slack for scheduling noise on a loaded 2-core machine
MARGIN_S = 0.05


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
    g = make_filter(ns, e, CALL, policy=GuardPolicy(), job_id="j")
    assert g.guard is not None and g.guard.job_id == "j" and g.stats.steps == 0


def test_guarded_filter_counts_one_mask_per_step(ns, env):
    """prepare_logit_mask + mask_logits of one step are one guarded computation (the explosion
    rule counts steps); the real sampler path gives the same text as the unguarded filter."""
    e = env()
    seq, outs = torch.zeros((1, 1), dtype=torch.long), []
    for policy in (None, GuardPolicy()):
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


def test_slow_constraint_trips_the_token_deadline(ns, env):
    """A constraint that would take seconds per mask: every filter call is cut at the deadline,
    the job trips, salvages, and its output validates; the other job is untouched."""
    e = env()
    schema = unique(FREE_TEXT)
    policy = GuardPolicy(token_deadline_ms=20)
    slow = make_filter(ns, e, schema, policy=policy)
    slow.grammar.engine.chunk_hook = lambda: time.sleep(0.012)
    fast = make_filter(ns, e, CALL, policy=policy)
    gen = JobLoopGenerator(e.model, e.tokenizer)
    gg = ns.guarded.GuardedGenerator(gen, policy)
    gg.enqueue(make_job(ns, e, slow, "slow"), slow)
    gg.enqueue(make_job(ns, e, fast, "fast"), fast)
    res = {r.job_id: r for r in gg.run()}
    r = res["slow"]
    assert r.end_reason == "salvaged" and "per-token deadline" in r.trip_reason, r
    check_valid(r, FREE_TEXT)
    # one 12 ms chunk may start just before the deadline; then scheduling noise
    assert r.stats["max_call_ms"] < 20 + 12 + 30, r.stats
    assert r.stats["max_protocol_call_ms"] < 20 + 12 + 100, r.stats
    assert res["fast"].end_reason == "completed" and res["fast"].trip_reason is None
    check_valid(res["fast"], CALL)


def test_free_text_explosion_trips_and_salvage_validates(ns, env):
    """Logits favouring free text keep thousands of tokens allowed: the explosion rule trips
    and salvage closes the value."""
    e = env()
    policy = GuardPolicy(explosion_threshold=1000, explosion_steps=20)
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
    policy = GuardPolicy(end_stall_steps=3)
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

    policy = GuardPolicy()
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
    policy = GuardPolicy()

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

    def forward_fails_once(results: list) -> None:
        if gen.iterations == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        real_generate(results)

    gen._generate = forward_fails_once
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy())
    for name in ("a", "b", "c", "d"):
        gg.submit("JSON:", CALL, max_new_tokens=300, gen_settings=settings(ns), seed=1, job_id=name, options=OPTIONS)
    res = {r.job_id: r for r in gg.run()}
    for name in ("a", "b"):
        assert res[name].end_reason == "error" and "illegal memory access" in res[name].error, res[name]
    for name in ("c", "d"):
        check_valid(res[name], CALL)
    assert gen.num_remaining_jobs() == 0


# ----------------------------------------------------------------------------- deadlines


def test_job_deadline_during_a_long_run_cancels_that_job_only(ns, env):
    """Two rambling jobs with a 0.25 s deadline: the "cancel" one is cancelled with its partial
    text, the "salvage" one closes its value within the grace; the others complete."""
    e = env()
    cancel = GuardPolicy(job_deadline_s=0.25, on_trip="cancel")
    salvage = GuardPolicy(job_deadline_s=0.25)
    probe = make_filter(ns, e, RAMBLE)
    ramble = biased_logits(plain_bias(probe, e.width, 8.0))
    gen = JobLoopGenerator(e.model, e.tokenizer, forward_s=0.004,
                           logits_fn=per_job(random_logits(), cut=ramble, close=ramble))
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(), grace_s=1.0)
    for name, schema, policy in (("a", CALL, None), ("cut", RAMBLE, cancel), ("close", RAMBLE, salvage),
                                 ("c", CALL, None)):
        f = make_filter(ns, e, schema, policy=policy or gg.policy)
        gg.enqueue(make_job(ns, e, f, name, max_new_tokens=5000), f)
    res = {r.job_id: r for r in gg.run()}
    cut = res["cut"]
    assert cut.end_reason == "cancelled" and "job deadline" in cut.trip_reason, cut
    assert cut.text and cut.json is None and cut.stats["elapsed_s"] < 0.25 + 0.2
    close = res["close"]
    assert close.end_reason == "salvaged" and "job deadline" in close.trip_reason, close
    check_valid(close, RAMBLE)
    assert close.stats["elapsed_s"] < 0.25 + gg.grace_s
    for name in ("a", "c"):
        assert res[name].end_reason == "completed"
        check_valid(res[name], CALL)


def test_job_deadline_applies_during_prefill(ns, env):
    """A job still in prefill at its deadline (no filter call yet) is cancelled from outside."""
    e = env()
    gen = JobLoopGenerator(e.model, e.tokenizer, prefill_chunk=4, prefill_s=0.02)
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy())
    long_prompt = "Please answer in JSON. " * 20
    slow = make_filter(ns, e, CALL, policy=GuardPolicy(job_deadline_s=0.15))
    gg.enqueue(make_job(ns, e, slow, "long", prompt=long_prompt), slow)
    quick = make_filter(ns, e, CALL, policy=GuardPolicy())
    gg.enqueue(make_job(ns, e, quick, "short"), quick)
    t0 = time.monotonic()
    res = {r.job_id: r for r in gg.run()}
    r = res["long"]
    assert r.end_reason == "cancelled" and "job deadline" in r.trip_reason and r.text == "", r
    assert r.stats["calls"] == 0 and r.stats["elapsed_s"] < 0.15 + 0.1
    assert res["short"].end_reason == "completed"
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("action", ["salvage", "cancel"])
def test_generate_json_batch_deadline(ns, env, action):
    """generate_json with a batch deadline: every prompt gets a result, in order, in time."""
    e = env()
    probe = make_filter(ns, e, RAMBLE)
    gen = JobLoopGenerator(e.model, e.tokenizer, forward_s=0.004,
                           logits_fn=biased_logits(plain_bias(probe, e.width, 8.0)))
    t0 = time.monotonic()
    results = ns.guarded.generate_json(gen, e.tokenizer, [f"Prompt {i}:" for i in range(4)], RAMBLE,
                                       policy=GuardPolicy(on_trip=action), batch_deadline_s=0.3,
                                       max_new_tokens=5000, options=OPTIONS, grace_s=1.0)
    assert time.monotonic() - t0 < 0.3 + 1.0 + 0.5
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
            assert r.text and r.json is None
    assert sum(r.trip_reason is not None for r in results) >= 3
    assert gen.num_remaining_jobs() == 0


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
    gg = ns.guarded.GuardedGenerator(gen, GuardPolicy(), options=OPTIONS, grace_s=3.0)
    plan = {}
    for i in range(1000):
        _name, schema = schemas[i % len(schemas)]
        policy = GuardPolicy(max_tokens=rng.randint(2, 16), job_deadline_s=0.05 if i % 10 == 0 else 10.0)
        plan[i] = (schema, policy)
        gg.submit("JSON:", schema, max_new_tokens=600, gen_settings=settings(ns), seed=i, policy=policy, job_id=i)
    results = gg.run()
    assert [r.job_id for r in results] == list(range(1000))
    for r in results:
        schema, policy = plan[r.job_id]
        assert r.end_reason in ("completed", "salvaged"), r
        assert r.valid and validator_for(schema).is_valid(r.json), r
        assert r.stats["max_call_ms"] <= policy.token_deadline_ms + 1e3 * MARGIN_S, r.stats
        # past its deadline a salvaging job gets the grace to close its value, then is cancelled
        assert r.stats["elapsed_s"] <= policy.job_deadline_s + gg.grace_s + MARGIN_S, r.stats
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
        policy = GuardPolicy(max_tokens=rng.randint(2, 16))
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
        assert f.stats.call_seconds_max <= policy.token_deadline_ms / 1e3 + MARGIN_S
        salvaged += f.tripped
    assert salvaged > 75, salvaged
