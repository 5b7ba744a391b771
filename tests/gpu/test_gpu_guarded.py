"""The guarded generator on a CUDA GPU: the real ExLlamaV2DynamicGenerator, iterate() and cancel().

A batch of constrained jobs on the tiny random-weight FP16 Llama of ``test_gpu_end_to_end.py``
(same fixtures: skipped without CUDA, without an importable exllamav2, or in a pytest process
that already installed the CPU stand-in -- run ``python -m pytest tests/gpu`` alone).  One job
has a deliberately slow constraint (the mask engine's ``chunk_hook``) and trips the per-token
deadline, one rambles in free text past a short job deadline and is cancelled with
``generator.cancel()``; the others must complete valid, and the generator must serve a new
job afterwards (the cancelled job's cache pages and filter work were released).
"""

from __future__ import annotations

import time
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

    slow_schema = {**SCHEMAS["weather"], "$comment": uuid.uuid4().hex}  # cold masks, private hook
    slow = JsonSchemaFilter(model, tokenizer, slow_schema, policy=GuardPolicy(token_deadline_ms=20))
    slow.grammar.engine.chunk_hook = lambda: time.sleep(0.012)
    job = ExLlamaV2DynamicJob(input_ids=tokenizer.encode("JSON:", add_bos=True), max_new_tokens=400, seed=2,
                              gen_settings=settings, filters=[slow], stop_conditions=slow.end_ids)
    gg.enqueue(job, slow, schema=slow_schema, job_id="slow")
    gg.submit(tokenizer.encode("Tell a long story in JSON:", add_bos=True), RAMBLE, max_new_tokens=4000,
              gen_settings=settings, seed=3, job_id="ramble",
              policy=GuardPolicy(job_deadline_s=0.5, on_trip="cancel"))

    res = {r.job_id: r for r in gg.run()}
    assert set(res) == set(SCHEMAS) | {"slow", "ramble"}
    for name, schema in SCHEMAS.items():
        r = res[name]
        assert r.end_reason == "completed" and r.valid and _valid(schema, r.json), r
    r = res["slow"]
    assert r.end_reason == "salvaged" and "per-token deadline" in r.trip_reason and r.valid, r
    assert r.stats["max_call_ms"] < 20 + 12 + 30, r.stats
    r = res["ramble"]
    if r.trip_reason is not None:  # random weights might close the string first
        assert r.end_reason == "cancelled" and "job deadline" in r.trip_reason and r.json is None, r
        assert r.stats["elapsed_s"] < 0.5 + 0.5, r.stats
    assert generator.num_remaining_jobs() == 0 and not generator.filter_queue

    # the generator still works after the cancel: pages and filter work were released
    gg.submit(tokenizer.encode("JSON:", add_bos=True), SCHEMAS["enums"], max_new_tokens=200,
              gen_settings=settings, seed=4, job_id="after")
    (after,) = gg.run()
    assert after.end_reason == "completed" and after.valid, after


@pytest.mark.parametrize("batch_deadline_s", [0.5])
def test_generate_json_with_a_batch_deadline(loaded, batch_deadline_s):  # noqa: F811 - the imported fixture
    """Rambling jobs salvaged at the batch deadline: every prompt gets a valid value in time."""
    from exl2_enforcer.contrib.exllamav2.guarded import generate_json
    from exl2_enforcer.watchdog import GuardPolicy

    _model, _cache, tokenizer, generator = loaded
    t0 = time.monotonic()
    results = generate_json(generator, tokenizer, [f"Story {i} in JSON:" for i in range(4)], RAMBLE,
                            policy=GuardPolicy(), batch_deadline_s=batch_deadline_s, max_new_tokens=4000,
                            seed=0, grace_s=1.0)
    assert time.monotonic() - t0 < batch_deadline_s + 1.0 + 1.0
    assert [r.job_id for r in results] == [0, 1, 2, 3]
    for r in results:
        assert r.end_reason in ("completed", "salvaged") and r.valid and _valid(RAMBLE, r.json), r
    assert generator.num_remaining_jobs() == 0
