"""The guarded generator on a CUDA GPU: the real ExLlamaV2DynamicGenerator, iterate() and cancel().

A batch of constrained jobs on the tiny random-weight FP16 Llama of ``test_gpu_end_to_end.py``
(same fixtures: skipped without CUDA, without an importable exllamav2, or in a pytest process
that already installed the CPU stand-in -- run ``python -m pytest tests/gpu`` alone).  One job
has a constraint costlier than its work budget (``token_fuel=1``) and trips, one rambles in
free text past a short job deadline and is cancelled with ``generator.cancel()``, one asks for
more tokens than the cache holds and fails alone; the others must complete valid, and the
generator must serve a new job afterwards (the cancelled job's cache and filter work were
released).

Works paged and unpaged (no flash-attn, as on the H200 test machine: one job at a time, the
cache one page of 2,048 tokens, so every job here asks at most 1,500 new tokens).  No
assertion reads a wall clock: outcomes only.
"""

from __future__ import annotations

import uuid

import pytest
from jsonschema import Draft202012Validator
from test_gpu_end_to_end import SCHEMAS, loaded, real_exl2  # noqa: F401 - fixtures used by name

RAMBLE = {"type": "object", "required": ["story"], "properties": {"story": {"type": "string", "minLength": 1}}}


def _valid(schema: dict, value) -> bool:
    """jsonschema's verdict, with the draft's own format checker."""
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(value)


def test_batch_with_one_tripping_job(loaded):  # noqa: F811 - the imported fixture
    """Slow-constraint and job-deadline trips in one batch; the other jobs complete valid."""
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    from exl2_enforcer.contrib.exllamav2 import JsonSchemaFilter
    from exl2_enforcer.contrib.exllamav2.guarded import GuardedGenerator
    from exl2_enforcer.watchdog import GuardPolicy

    model, _cache, tokenizer, generator = loaded
    settings = ExLlamaV2Sampler.Settings(temperature=1.0, top_k=50, top_p=0.9)
    gg = GuardedGenerator(generator, GuardPolicy(token_deadline_ms=50), grace_s=1.0)
    for name, schema in SCHEMAS.items():
        gg.submit(tokenizer.encode("JSON:", add_bos=True), schema, max_new_tokens=400, gen_settings=settings,
                  seed=1, job_id=name)

    slow_schema = {**SCHEMAS["weather"], "$comment": uuid.uuid4().hex}  # cold masks
    slow = JsonSchemaFilter(model, tokenizer, slow_schema, policy=GuardPolicy(token_fuel=1))
    job = ExLlamaV2DynamicJob(input_ids=tokenizer.encode("JSON:", add_bos=True), max_new_tokens=400, seed=2,
                              gen_settings=settings, filters=[slow], stop_conditions=slow.end_ids)
    gg.enqueue(job, slow, schema=slow_schema, job_id="slow")
    gg.submit(tokenizer.encode("Tell a long story in JSON:", add_bos=True), RAMBLE, max_new_tokens=1500,
              gen_settings=settings, seed=3, job_id="ramble",
              policy=GuardPolicy(job_deadline_s=0.5, on_trip="cancel"))
    gg.submit(tokenizer.encode("JSON:", add_bos=True), SCHEMAS["enums"], max_new_tokens=4000,
              gen_settings=settings, seed=5, job_id="too-big")

    res = {r.job_id: r for r in gg.run()}
    assert set(res) == set(SCHEMAS) | {"slow", "ramble", "too-big"}
    for name, schema in SCHEMAS.items():
        r = res[name]
        assert r.end_reason == "completed" and r.valid and _valid(schema, r.json), r
    r = res["slow"]
    assert r.status == "salvaged" and "fuel" in r.trip_reason and r.valid and _valid(slow_schema, r.json), r
    r = res["ramble"]
    if r.trip_reason is not None:  # random weights might close the string first
        assert r.end_reason == "cancelled" and "job deadline" in r.trip_reason and r.json is None, r
    big = res["too-big"]
    if not getattr(generator, "paged", True):  # paged, 4,000 tokens may fit in several pages
        assert big.status == "failed" and "does not fit the generator's cache" in big.error, big
    assert generator.num_remaining_jobs() == 0 and not generator.filter_queue

    # the generator still works after the cancel: pages and filter work were released
    gg.submit(tokenizer.encode("JSON:", add_bos=True), SCHEMAS["enums"], max_new_tokens=200,
              gen_settings=settings, seed=4, job_id="after")
    (after,) = gg.run()
    assert after.end_reason == "completed" and after.valid, after


@pytest.mark.parametrize("batch_deadline_s", [0.5])
def test_generate_json_with_a_batch_deadline(loaded, batch_deadline_s):  # noqa: F811 - the imported fixture
    """Rambling jobs at the batch deadline: every prompt gets a result, in order; a job that ran
    is salvaged valid (or completed), and unpaged (one job at a time) the prompts that never
    started end "not_started" with no value."""
    from exl2_enforcer.contrib.exllamav2.guarded import generate_json
    from exl2_enforcer.watchdog import GuardPolicy

    _model, _cache, tokenizer, generator = loaded
    results = generate_json(generator, tokenizer, [f"Story {i} in JSON:" for i in range(4)], RAMBLE,
                            policy=GuardPolicy(), batch_deadline_s=batch_deadline_s, max_new_tokens=1500,
                            seed=0, grace_s=1.0)
    assert [r.job_id for r in results] == [0, 1, 2, 3]
    assert results[0].status in ("completed", "salvaged")
    for r in results:
        if r.end_reason == "not_started":
            assert r.json is None and r.status == "cut" and "before the job started" in r.trip_reason, r
        else:
            assert r.status in ("completed", "salvaged") and r.valid and _valid(RAMBLE, r.json), r
    assert generator.num_remaining_jobs() == 0
