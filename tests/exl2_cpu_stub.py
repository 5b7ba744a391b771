"""CPU stand-in for exllamav2's CUDA extension, for tests only.

exllamav2 0.3.2 compiles its C++/CUDA extension (``exllamav2_ext``) when ``exllamav2.ext``
is imported, which fails without CUDA.  :func:`install` registers this stand-in as
``sys.modules["exllamav2.ext"]`` first, so the real Python package (config, tokenizer,
sampler, dynamic job, filter base class) imports and runs on a CPU-only machine.

Implemented for real, in torch, are exactly the functions the sampler's filter and
sampling path reaches:

* ``fast_fill_cpu_ones_bool``, ``logit_filter_exclusive`` (the list path's logit filter),
* ``fast_fadd_cpu`` (token bias) and ``apply_rep_penalty`` (repetition penalties),
* ``sample_basic`` with temperature, top-k, top-p, min-p and the boolean logit filter.

They follow the C++ code's rules (``exllamav2_ext/ext_sampling.cpp``, ``cpp/sampling.cpp``)
but are not bit-identical to it (ties and float rounding may pick a different token).
They are *stricter* than the C++ code where it would silently misbehave: an exclusive list
that is not a sorted Python list of ids below the row width (the C++ loop would write out of
bounds or let a wrong id through) and a row whose every candidate is -inf (the C++ softmax
would divide by zero and sample garbage) raise ``AssertionError``.

Every other extension function raises ``NotImplementedError`` naming itself, so no code path
silently does nothing.  Nothing here says anything about GPU behaviour.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import torch

#: how many rows ``sample_basic`` has sampled since the last :func:`reset_stats`
STATS: dict[str, int] = {"rows": 0}


def reset_stats() -> None:
    """Zero the counters in :data:`STATS`."""
    STATS["rows"] = 0


def fast_fill_cpu_ones_bool(tensor: torch.Tensor) -> None:
    """Set every element of a bool tensor to True (the sampler's fresh logit filter)."""
    assert tensor.dtype == torch.bool, "fast_fill_cpu_ones_bool needs a bool tensor"
    tensor.fill_(True)


def logit_filter_exclusive(filter_: torch.Tensor, exclusive_lists: list) -> None:
    """Clear every id of each row of ``filter_`` that is not in that row's list.

    The C++ version walks each list as sorted, duplicate-free ids below the row width; it
    casts each entry to a Python ``list`` (pybind11), so sets or arrays fail there too.
    """
    assert filter_.dtype == torch.bool, "logit_filter_exclusive needs a bool tensor"
    assert filter_.shape[0] == len(exclusive_lists), "Number of lists does not match batch size"
    width = filter_.shape[1]
    for row, ids in enumerate(exclusive_lists):
        if not isinstance(ids, list):
            raise TypeError(f"logit_filter_exclusive: row {row} is {type(ids).__name__}, the extension needs a list")
        assert ids, "logit_filter_exclusive: empty list (the C++ code would read list[0] out of range)"
        t = torch.tensor(ids, dtype=torch.long)
        assert bool((t[1:] > t[:-1]).all()), f"logit_filter_exclusive: row {row} is not sorted and unique"
        assert int(t[0]) >= 0 and int(t[-1]) < width, (
            f"logit_filter_exclusive: id {int(t[-1])} is outside a row of width {width} "
            "(the C++ loop would write past the row)")
        keep = torch.zeros(width, dtype=torch.bool)
        keep[t] = True
        filter_[row] &= keep


def fast_fadd_cpu(a: torch.Tensor, b: torch.Tensor) -> None:
    """``a += b`` with ``b`` broadcast over the rows of ``a`` (token bias)."""
    assert a.dtype == torch.float and b.dtype == torch.float, "fast_fadd_cpu needs float tensors"
    assert a.numel() % b.numel() == 0, "a and b are incompatible sizes"
    a.view(-1, b.numel()).add_(b.reshape(1, -1))


def apply_rep_penalty(sequence: torch.Tensor, penalty_max: float, sustain: int, decay: int,
                      alpha_frequency: float, alpha_presence: float, logits: torch.Tensor) -> None:
    """Repetition, frequency and presence penalties, walking the context backwards like the C++ code."""
    assert sequence.dtype == torch.long and logits.dtype == torch.float
    width = logits.shape[-1]
    rows = logits.view(sequence.shape[0], width)
    for b in range(sequence.shape[0]):
        seq = sequence[b].tolist()
        row = rows[b]
        rep_p, freq_p, pres_p = penalty_max, alpha_frequency, alpha_presence
        d_rep = (1.0 - rep_p) / decay if decay else 0.0
        d_freq = -freq_p / decay if decay else 0.0
        d_pres = -pres_p / decay if decay else 0.0
        sust = len(seq) if sustain == -1 else sustain
        begin = max(len(seq) - sust - decay, 0)
        seen: set[int] = set()
        for i in range(len(seq) - 1, begin - 1, -1):
            t = seq[i]
            if 0 <= t < width:
                if t not in seen:
                    v = float(row[t])
                    row[t] = (v / rep_p if v > 0.0 else v * rep_p) - pres_p
                    seen.add(t)
                row[t] -= freq_p
            sust -= 1
            if sust < 0:
                rep_p, freq_p, pres_p = rep_p + d_rep, freq_p + d_freq, pres_p + d_pres


def _unsupported(**flags: bool) -> None:
    used = [name for name, on in flags.items() if on]
    if used:
        raise NotImplementedError(f"sample_basic CPU stand-in does not implement: {', '.join(used)}")


def _sample_row(row: torch.Tensor, allowed: torch.Tensor, temperature: float, top_k: int, top_p: float,
                min_p: float, random: float) -> tuple[int, float]:
    allowed = allowed & (row > float("-inf"))
    if not bool(allowed.any()):
        raise AssertionError("sample_basic: every candidate logit is -inf or filtered out "
                             "(the C++ softmax would divide by zero here)")
    ids = torch.nonzero(allowed).flatten()
    probs = torch.softmax(row[ids].double() / temperature, dim=0)
    order = torch.argsort(probs, descending=True, stable=True)
    ids, probs = ids[order], probs[order]
    if 0 < top_k < row.shape[0]:
        ids, probs = ids[:top_k], probs[:top_k] / probs[:top_k].sum()
    if ids.shape[0] > 1 and 0.0 < top_p < 1.0:
        # the C++ min-heap keeps the most likely candidates whose sum stays within top_p
        # (at least one) and ignores candidates below 1e-6
        within = (torch.cumsum(probs, 0) <= top_p + 1e-7) & (probs >= 1e-6)
        n = max(1, int(within.sum()))
        ids, probs = ids[:n], probs[:n] / probs[:n].sum()
    if ids.shape[0] > 1 and 0.0 < min_p < 1.0:
        keep = probs >= probs[0] * min_p
        ids, probs = ids[keep], probs[keep] / probs[keep].sum()
    point = random * 0.9998  # as in C++: leave room for rounding in the normalised sums
    pick = int(torch.searchsorted(torch.cumsum(probs, 0), torch.tensor([point], dtype=probs.dtype)))
    pick = min(pick, ids.shape[0] - 1)
    return int(ids[pick]), float(probs[pick])


def sample_basic(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, top_a: float,
                 min_p: float, tfs: float, typical: float, random: float, output_tokens: torch.Tensor,
                 output_probs: torch.Tensor, output_kprobs: torch.Tensor, output_ktokens: torch.Tensor,
                 logit_filter: torch.Tensor, mirostat: bool, mirostat_mu: list, mirostat_tau: float,
                 mirostat_eta: float, post_temperature: float, xtc_mask: torch.Tensor,
                 xtc_probability: float = 0.0, xtc_threshold: float = 0.1, min_temp: float = 0.0,
                 max_temp: float = 0.0, temp_exponent: float = 1.0, smoothing_factor: float = 0.0,
                 skew: float = 0.0) -> list:
    """Sample one token per row of ``logits`` (bsz, 1, vocab) into ``output_tokens``/``output_probs``."""
    _unsupported(top_a=top_a > 0, tfs=0 < tfs < 1, typical=0 < typical < 1, mirostat=bool(mirostat),
                 xtc=xtc_probability > 0, dynamic_temperature=max_temp > min_temp,
                 smoothing_factor=smoothing_factor > 0, skew=skew != 0,
                 temperature_last=post_temperature != 1.0, return_top_tokens=not output_kprobs.is_meta)
    assert logits.dtype == torch.float and output_tokens.dtype == torch.long
    bsz, width = logits.shape[0], logits.shape[-1]
    has_filter = not logit_filter.is_meta
    if has_filter:
        assert logit_filter.dtype == torch.bool and tuple(logit_filter.shape) == (bsz, width), \
            "logit_filter must be bool (bsz, vocab_size)"
    if temperature < 0.01:
        temperature, top_k = 1.0, 1
    for i in range(bsz):
        row = logits[i].reshape(-1)
        allowed = logit_filter[i] if has_filter else torch.ones(width, dtype=torch.bool)
        token, prob = _sample_row(row, allowed, temperature, top_k, top_p, min_p, random)
        output_tokens[i, 0] = token
        output_probs[i, 0] = prob
        STATS["rows"] += 1
    return list(mirostat_mu)


class _CpuExt:
    """The ``exllamav2_ext`` object: the functions above, and a loud error for all others."""

    fast_fill_cpu_ones_bool = staticmethod(fast_fill_cpu_ones_bool)
    logit_filter_exclusive = staticmethod(logit_filter_exclusive)
    fast_fadd_cpu = staticmethod(fast_fadd_cpu)
    apply_rep_penalty = staticmethod(apply_rep_penalty)
    sample_basic = staticmethod(sample_basic)

    def __getattr__(self, name: str) -> Any:
        """Any other extension function: raise when called, naming it."""
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*_args: Any, **_kwargs: Any) -> Any:
            raise NotImplementedError(f"exllamav2_ext.{name} has no CPU stand-in (tests/exl2_cpu_stub.py)")

        return missing


def install() -> types.ModuleType:
    """Register the stand-in as ``exllamav2.ext`` (before exllamav2 is imported); idempotent."""
    current = sys.modules.get("exllamav2.ext")
    if current is not None:
        return current
    module = types.ModuleType("exllamav2.ext", __doc__)
    module.exllamav2_ext = _CpuExt()
    module.ext_c = module.exllamav2_ext
    module.none_tensor = torch.empty((1, 1), device="meta")
    module.IS_CPU_STAND_IN = True
    sys.modules["exllamav2.ext"] = module
    return module


def is_installed() -> bool:
    """Whether ``exllamav2.ext`` in this process is this stand-in."""
    return bool(getattr(sys.modules.get("exllamav2.ext"), "IS_CPU_STAND_IN", False))
