"""The mask cache stores each distinct mask once, bounded in bytes of distinct masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import encode, reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer.engine import native
from exl2_enforcer.engine.mask import MaskCache, write_words
from exl2_enforcer.errors import EnforcerError
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


def test_unequal_masks_with_one_fingerprint_are_kept_apart(monkeypatch):
    """Words outside the numpy fingerprint's sample differ: both masks stay, each for its own state."""
    monkeypatch.setattr(native, "enabled", False)  # the sampled fingerprint (no extension)
    cache = MaskCache(max_bytes=10**6)
    # words 1 and 3: not among the sampled words 0, 16, 32, 48; as the high halves of the first
    # two uint64 lanes they add up to the same sum
    a, b = _mask([32]), _mask([96])
    assert MaskCache.fingerprint(a) == MaskCache.fingerprint(b)
    assert cache.put(1, a) is a and cache.put(2, b) is b
    assert np.array_equal(cache.get(1), a) and np.array_equal(cache.get(2), b)
    assert cache.nbytes == 2 * a.nbytes


def test_every_fingerprint_colliding_still_shares_only_equal_masks(monkeypatch):
    """With one key for all masks (whatever the hash), equal masks share an array and unequal ones stay
    apart, and dropping a state frees only its own mask."""
    monkeypatch.setattr(MaskCache, "fingerprint", classmethod(lambda cls, packed: 0))
    cache = MaskCache(max_bytes=10**6)
    masks = [_mask([i]) for i in range(5)]
    for sid, m in enumerate(masks):
        assert cache.put(sid, m) is m
    assert cache.put(9, _mask([3])) is masks[3]
    assert cache.nbytes == 5 * masks[0].nbytes
    assert all(np.array_equal(cache.get(sid), m) for sid, m in enumerate(masks))


@pytest.mark.skipif(not native.available, reason="the C extension is not built")
def test_native_mask_hash_tells_single_bit_flips_apart_and_ignores_the_view():
    """The native key: equal for equal words whatever the array's dtype view; distinct for each of the
    masks that differ from one 4,008-word mask (llama3's width) in one bit, tails of odd lengths included."""
    rng = np.random.default_rng(5)
    base = (rng.random(4008 * 32) < 0.05)
    words = np.packbits(base, bitorder="little").view(np.uint32).copy()
    assert native.mask_hash(words) == native.mask_hash(words.view(np.int32)) == native.mask_hash(words.copy())
    keys = {native.mask_hash(words)}
    for bit in range(0, 4008 * 32, 97):  # a bit in every word, at varying places
        flipped = words.copy()
        flipped[bit >> 5] ^= np.uint32(1 << (bit & 31))
        keys.add(native.mask_hash(flipped))
    assert len(keys) == 1 + len(range(0, 4008 * 32, 97))
    for n in range(1, 12):  # lengths that leave 1..7 words after the last full lane block
        short = words[:n].copy()
        other = short.copy()
        other[-1] ^= np.uint32(1)
        assert native.mask_hash(short) != native.mask_hash(other)
        assert native.mask_hash(short) == native.mask_hash(short.copy())
    assert native.mask_hash(words[:0]) == native.mask_hash(np.zeros(0, np.int32))
    with pytest.raises(TypeError):
        native.mask_hash(None)


@pytest.mark.parametrize("width", [1, 31, 32, 33, 4008 * 32 - 5, 4008 * 32, 4008 * 32 + 40])
def test_write_words_native_and_numpy_write_the_same(monkeypatch, width):
    """The bitmask a fill writes, by the C copy and by numpy: the same words, bits at and past the width
    cleared, a shorter mask padded with zeros, the buffer's later words untouched."""
    rng = np.random.default_rng(width)
    packed = (rng.integers(0, 2**32, 4008, dtype=np.uint64)).astype(np.uint32).view(np.int32)
    n_out = (width + 31) // 32
    outs = []
    for on in ([False, True] if native.available else [False]):
        monkeypatch.setattr(native, "enabled", on)
        out = np.full(n_out + 3, 7, np.int32)
        write_words(packed, out, width, "test")
        outs.append(out)
        assert (out[n_out:] == 7).all()
        bits = np.unpackbits(out[:n_out].view(np.uint8), bitorder="little")
        want = np.unpackbits(np.r_[packed, np.zeros(max(0, n_out - 4008), np.int32)][:n_out].view(np.uint8),
                             bitorder="little")
        want[width:] = 0
        assert np.array_equal(bits, want)
    assert all(np.array_equal(o, outs[0]) for o in outs)


def test_write_words_refuses_a_mask_empty_below_the_width(monkeypatch):
    """Only bits past the width: an EnforcerError naming the state, by either path (never an empty row)."""
    packed = np.zeros(8, np.int32)
    packed[7] = 1  # token 224
    for on in ([False, True] if native.available else [False]):
        monkeypatch.setattr(native, "enabled", on)
        out = np.zeros(8, np.int32)
        with pytest.raises(EnforcerError, match="state 12"):
            write_words(packed, out, 200, "state 12")
    if native.available:
        with pytest.raises(ValueError, match="needs 7 words"):
            native.write_words(packed, np.zeros(6, np.int32), 200)
        with pytest.raises(ValueError):
            native.write_words(packed, np.zeros(6, np.int32), 0)


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


@pytest.mark.skipif(not native.available, reason="needs the extension")
def test_write_words_refuses_a_width_past_the_word_count_and_copies_overlapping_views():
    """A width near the largest index must not wrap the word count (it made a huge copy); ``packed``
    and ``out`` may be views of one array (the copy must behave as if from a snapshot)."""
    import sys

    packed, out = np.zeros(4, np.uint32), np.zeros(4, np.uint32)
    for width in (sys.maxsize, sys.maxsize - 30, sys.maxsize - 31, 2**40):
        with pytest.raises(ValueError, match="words of out"):
            native.write_words(packed, out, width)
    a = np.arange(1, 65, dtype=np.uint32)
    want = a[1:33].copy()
    assert native.write_words(a[1:33], a[0:32], 32 * 32)
    assert np.array_equal(a[:32], want)
    b = np.arange(1, 65, dtype=np.uint32)
    want = b[0:32].copy()
    assert native.write_words(b[0:32], b[1:33], 32 * 32)
    assert np.array_equal(b[1:33], want)
