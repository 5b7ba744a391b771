"""Bitmask helpers (exl2_enforcer.bitmask): allocate, fill, apply for numpy and torch, and the
errors for wrong buffers, which used to be filled with garbage silently."""

from __future__ import annotations

import numpy as np
import pytest

from exl2_enforcer import (
    BitmaskError,
    Matcher,
    allocate_bitmask,
    apply_bitmask,
    bitmask_words,
    compile_json_schema,
    default_vocabulary,
    fill_bitmask,
)

WIDTH = 8256  # the packaged vocabulary's logits width
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer"}},
          "required": ["ok"]}


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(compile_json_schema(SCHEMA, default_vocabulary()))


def test_words_are_a_ceiling_division():
    assert [bitmask_words(w) for w in (1, 31, 32, 33, 64, 65)] == [1, 1, 1, 2, 2, 3]
    for bad in (0, -5, 3.0, True, "32"):
        with pytest.raises(BitmaskError, match="logits_width"):
            bitmask_words(bad)


def _ids_from_bits(words: np.ndarray, width: int) -> np.ndarray:
    """Allowed ids read bit by bit, independently of the engine's unpacking."""
    return np.array([t for t in range(width) if (int(words[t // 32]) >> (t % 32)) & 1], dtype=np.int64)


@pytest.mark.parametrize("width", [WIDTH, 8000, 8001, 91])
def test_numpy_fill_sets_exactly_the_allowed_ids_below_the_width(matcher, width):
    buf = allocate_bitmask(width)
    assert buf.dtype == np.int32 and buf.shape == ((width + 31) // 32,)
    buf[:] = -1  # stale bits must be overwritten
    fill_bitmask(matcher, buf, width)
    expect = matcher.allowed_ids(logits_width=width)
    assert np.array_equal(_ids_from_bits(buf, width), expect)
    if width % 32:
        assert (int(buf[-1]) & 0xFFFFFFFF) >> (width % 32) == 0  # no bit at or beyond the width


def test_numpy_apply_masks_exactly_the_refused_logits(matcher):
    batch = allocate_bitmask(WIDTH, 3)
    moved = matcher.fork()
    for b in b'{"ok":':
        moved.accept_token(int(np.flatnonzero([t == bytes([b]) for t in moved.grammar.vocab.token_bytes])[0]))
    fill_bitmask(matcher, batch, WIDTH, 0)
    fill_bitmask(moved, batch, WIDTH, 2)
    logits = np.random.default_rng(0).standard_normal((3, WIDTH)).astype(np.float32)
    before = logits.copy()
    apply_bitmask(logits, batch)
    for row, m in ((0, matcher), (2, moved)):
        allowed = m.allowed_ids(logits_width=WIDTH)
        keep = np.zeros(WIDTH, bool)
        keep[allowed] = True
        assert np.array_equal(logits[row][keep], before[row][keep]) and np.isneginf(logits[row][~keep]).all()
        assert allowed.size and (~keep).any()
    assert np.isneginf(logits[1]).all()  # a zeroed row allows nothing


def test_torch_allocate_fill_apply_match_numpy(matcher):
    torch = pytest.importorskip("torch")
    buf = allocate_bitmask(WIDTH, 2, library="torch")
    assert buf.dtype == torch.int32 and tuple(buf.shape) == (2, bitmask_words(WIDTH))
    fill_bitmask(matcher, buf, WIDTH, 1)
    ref = allocate_bitmask(WIDTH)
    fill_bitmask(matcher, ref, WIDTH)
    assert np.array_equal(buf[1].numpy(), ref) and not buf[0].any()
    logits = torch.randn(2, WIDTH)
    apply_bitmask(logits, buf)
    finite = torch.isfinite(logits[1]).nonzero().flatten().numpy()
    assert np.array_equal(finite, matcher.allowed_ids(logits_width=WIDTH))
    assert torch.isneginf(logits[0]).all()


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float32, np.uint32])
def test_wrong_dtype_is_refused_by_matcher_and_helpers(matcher, dtype):
    buf = np.zeros(bitmask_words(WIDTH), dtype=dtype)
    with pytest.raises(BitmaskError, match="out must have dtype int32"):
        matcher.fill_bitmask(buf, WIDTH)
    with pytest.raises(BitmaskError, match="bitmask must have dtype int32"):
        fill_bitmask(matcher, buf, WIDTH)
    assert not buf.any()  # nothing was written


def test_short_misshapen_strided_and_readonly_buffers_are_refused(matcher):
    with pytest.raises(BitmaskError, match="needs at least 258"):
        matcher.fill_bitmask(np.zeros(257, np.int32), WIDTH)
    with pytest.raises(BitmaskError, match=r"shape \(words,\)"):
        matcher.fill_bitmask(np.zeros((1, 258), np.int32), WIDTH)
    with pytest.raises(BitmaskError, match="C-contiguous"):
        matcher.fill_bitmask(np.zeros(516, np.int32)[::2], WIDTH)
    ro = np.zeros(258, np.int32)
    ro.flags.writeable = False
    with pytest.raises(BitmaskError, match="read-only"):
        matcher.fill_bitmask(ro, WIDTH)
    with pytest.raises(BitmaskError, match="must be an int32 numpy array"):
        matcher.fill_bitmask([0] * 258, WIDTH)  # type: ignore[arg-type]
    with pytest.raises(BitmaskError, match="index 3 is outside"):
        fill_bitmask(matcher, allocate_bitmask(WIDTH, 3), WIDTH, 3)
    with pytest.raises(BitmaskError, match="batch_size"):
        allocate_bitmask(WIDTH, 0)
    with pytest.raises(BitmaskError, match="library"):
        allocate_bitmask(WIDTH, library="jax")  # type: ignore[arg-type]


def test_apply_refuses_mismatched_pairs():
    words = allocate_bitmask(WIDTH, 2)
    with pytest.raises(BitmaskError, match="2 rows but logits have 3"):
        apply_bitmask(np.zeros((3, WIDTH), np.float32), words)
    with pytest.raises(BitmaskError, match="floating-point"):
        apply_bitmask(np.zeros((2, WIDTH), np.int32), words)
    with pytest.raises(BitmaskError, match="needs at least"):
        apply_bitmask(np.zeros((2, WIDTH + 32), np.float32), words)
    torch = pytest.importorskip("torch")
    with pytest.raises(BitmaskError, match="torch tensor for torch logits"):
        apply_bitmask(torch.zeros(2, WIDTH), words)
    with pytest.raises(BitmaskError, match="int32"):
        apply_bitmask(torch.zeros(2, WIDTH), torch.zeros(2, 258, dtype=torch.int64))


def test_torch_apply_names_the_shape_that_fits():
    """A (words,) mask for (1, width) torch logits (what an HF-style loop has) said "bitmask must be
    int32 with 2 dimension(s), got torch.int32 ...", which blamed a dtype that was right."""
    torch = pytest.importorskip("torch")
    one_row = allocate_bitmask(WIDTH, library="torch")
    with pytest.raises(BitmaskError, match=r"shape \(batch, words\) for logits of shape \(1, \d+\)") as info:
        apply_bitmask(torch.zeros(1, WIDTH), one_row)
    assert "allocate_bitmask(width, batch_size)" in str(info.value)
    with pytest.raises(BitmaskError, match=r"shape \(words,\) for logits of shape \(\d+,\)"):
        apply_bitmask(torch.zeros(WIDTH), allocate_bitmask(WIDTH, 1, library="torch"))
    with pytest.raises(BitmaskError, match="dtype torch.int32, got torch.int64"):
        apply_bitmask(torch.zeros(WIDTH), torch.zeros(258, dtype=torch.int64))
