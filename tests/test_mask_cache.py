"""The mask cache stores each distinct mask once, bounded in bytes of distinct masks."""

from __future__ import annotations

import json

import numpy as np
from enforcer_oracle import encode, reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer.engine.mask import MaskCache
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher


def _mask(bits: list[int], words: int = 64) -> np.ndarray:
    out = np.zeros(words, np.uint32)
    for b in bits:
        out[b >> 5] |= np.uint32(1 << (b & 31))
    return out.view(np.int32)


def test_equal_masks_are_stored_once_and_freed_with_their_last_state():
    cache = MaskCache(max_bytes=10**6)
    a, b, c = _mask([1, 40]), _mask([1, 40]), _mask([2])
    assert cache.put(1, a) is a
    assert cache.put(2, b) is a  # equal content: the stored array is shared
    assert cache.put(3, c) is c
    assert cache.nbytes == a.nbytes + c.nbytes and len(cache) == 3
    assert cache.get(2) is a and cache.get(4) is None


def test_unequal_masks_with_one_fingerprint_are_kept_apart():
    """Words outside the fingerprint's sample differ: both masks stay, each for its own state."""
    cache = MaskCache(max_bytes=10**6)
    # words 1 and 3: not among the sampled words 0, 16, 32, 48; as the high halves of the first
    # two uint64 lanes they add up to the same sum
    a, b = _mask([32]), _mask([96])
    assert MaskCache.fingerprint(a) == MaskCache.fingerprint(b)
    assert cache.put(1, a) is a and cache.put(2, b) is b
    assert np.array_equal(cache.get(1), a) and np.array_equal(cache.get(2), b)
    assert cache.nbytes == 2 * a.nbytes


def test_bound_counts_distinct_masks_and_evicts_least_recent():
    one = _mask([5]).nbytes
    cache = MaskCache(max_bytes=2 * one)
    shared, other, third = _mask([5]), _mask([6]), _mask([7])
    for sid in range(10):
        cache.put(sid, shared.copy())  # ten states, one distinct mask: within the bound
    assert len(cache) == 10 and cache.nbytes == one
    cache.put(10, other)
    cache.get(0)  # state 0 becomes the most recent
    cache.put(11, third)  # three distinct masks: the least recent states go until two remain
    assert cache.nbytes <= 2 * one
    assert cache.get(11) is third
    assert cache.get(10) is None  # its mask was only held by state 10, the least recent one left
    assert cache.get(0) is not None and np.array_equal(cache.get(0), shared)


def test_engine_masks_stay_exact_and_long_objects_cache_far_less():
    """A 300-property object: several states per distinct mask; every mask still the reference's."""
    v = vocab_by_name("llama3")
    names = [f"field_{i}" for i in range(300)]
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in names}, "required": names}
    g = compile_json_schema(schema, v)
    m = Matcher(g)
    table = token_table(v)
    ids = encode("llama3", json.dumps({k: i % 100 for i, k in enumerate(names)}))
    for step, tid in enumerate(ids):
        got = m.allowed_ids()
        if step % 97 == 0:
            assert np.array_equal(np.sort(got), np.sort(reference_allowed_ids(g, table, m.state)))
        m.accept_token(tid)
    states = g.engine.cached_states
    assert states > 1000
    assert g.engine.cached_bytes * 4 < states * g.engine.index.n_words * 4  # under a quarter of one copy each
