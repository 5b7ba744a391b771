"""End to end on a CUDA GPU: real exllamav2 0.3.2, a tiny random-weight FP16 Llama, batched jobs.

Builds a model folder (random FP16 weights, a real tokenizer), loads it with ``ExLlamaV2``,
``ExLlamaV2Cache`` and ``ExLlamaV2DynamicGenerator``, runs several jobs at once, each with its own
schema filter (mask path and list path), and validates every output.  Random weights give
near-uniform logits, so this exercises the constraint, not the model's judgement.

Skipped where CUDA is not available, where exllamav2 is not installed or does not import (its
extension is compiled at import and needs the CUDA toolkit), and where this pytest process has
already installed the CPU stand-in of the extension (run ``python -m pytest tests/gpu`` alone).
Paged attention (and so real batching) needs flash-attn >= 2.5.7; without it the generator
runs unpaged, one job at a time.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys

import pytest
import torch
from jsonschema import Draft202012Validator

SCHEMAS = {
    "weather": {"type": "object", "required": ["city", "unit"], "properties": {
        "city": {"type": "string", "maxLength": 24}, "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14}}},
    "tool": {"$defs": {"args": {"type": "object", "required": ["query"], "properties": {
                "query": {"type": "string", "maxLength": 32},
                "tags": {"type": "array", "items": {"enum": ["news", "😀", "東京"]}, "maxItems": 3}}},
             "call": {"type": "object", "required": ["name", "arguments"], "properties": {
                 "name": {"const": "search"}, "arguments": {"$ref": "#/$defs/args"}}}},
             "$ref": "#/$defs/call"},
    "enums": {"type": "object", "required": ["city"], "properties": {
        "city": {"enum": ["Zürich", "São Paulo", "東京", "😀 party"]}, "ok": {"type": "boolean"}}},
}


@pytest.fixture(scope="module")
def real_exl2():
    """exllamav2 with its real CUDA extension, or skip saying why not."""
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    if importlib.util.find_spec("exllamav2") is None:
        pytest.skip("exllamav2 is not installed")
    if getattr(sys.modules.get("exllamav2.ext"), "IS_CPU_STAND_IN", False):
        pytest.skip("this process already uses the CPU stand-in extension; run tests/gpu in its own pytest run")
    try:
        module = importlib.import_module("exllamav2")
        importlib.import_module("exllamav2.generator")
    except Exception as exc:  # OSError without CUDA_HOME, build errors of the JIT extension...
        pytest.skip(f"exllamav2 does not import with its CUDA extension here: {exc!r}")
    return module


@pytest.fixture(scope="module")
def loaded(real_exl2, exl2_model_dir):
    """(model, cache, tokenizer, generator) for a tiny FP16 Llama with a real tokenizer."""
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
    from exllamav2.attn import has_flash_attn_with_paged
    from exllamav2.generator import ExLlamaV2DynamicGenerator

    try:
        folder = exl2_model_dir("llama3")
    except pytest.skip.Exception:
        folder = exl2_model_dir("mini")
    config = ExLlamaV2Config(str(folder))
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=2048, lazy=True)
    model.load_autosplit(cache)
    tokenizer = ExLlamaV2Tokenizer(config)
    generator = ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=tokenizer, max_batch_size=8,
                                          paged=bool(has_flash_attn_with_paged))
    yield model, cache, tokenizer, generator
    model.unload()


def test_batched_constrained_jobs(loaded):
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    from exl2_enforcer.contrib.exllamav2 import JsonSchemaFilter

    class ListPathFilter(JsonSchemaFilter):
        """Forces exllamav2's token-list path (next()) instead of the logit mask."""

        def can_mask_logits(self) -> bool:
            return False

    model, _cache, tokenizer, generator = loaded
    jobs = {}
    for name, schema in SCHEMAS.items():
        for path, cls in (("mask", JsonSchemaFilter), ("list", ListPathFilter)):
            for seed in range(2):
                f = cls(model, tokenizer, schema)
                job = ExLlamaV2DynamicJob(
                    input_ids=tokenizer.encode("JSON:", add_bos=True), max_new_tokens=400, seed=seed,
                    gen_settings=ExLlamaV2Sampler.Settings(temperature=1.0, top_k=50, top_p=0.9),
                    filters=[f], stop_conditions=f.end_ids, identifier=(name, path, seed))
                generator.enqueue(job)
                jobs[(name, path, seed)] = schema
    finished = {}
    while generator.num_remaining_jobs():
        for r in generator.iterate():
            if r.get("stage") == "streaming" and r.get("eos"):
                finished[r["identifier"]] = r
    assert set(finished) == set(jobs)
    for key, r in finished.items():
        assert r["eos_reason"] in ("stop_token", "end_filter"), (key, r["eos_reason"])
        value = json.loads(r["full_completion"])
        Draft202012Validator(jobs[key], format_checker=Draft202012Validator.FORMAT_CHECKER).validate(value)
