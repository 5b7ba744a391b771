"""Checks, before exllamav2 is imported, that the ExLlamaV2 adapter (contrib.exllamav2) can work here.

Importing exllamav2 without a prebuilt ``exllamav2_ext`` starts a JIT build of its CUDA
extension; without CUDA (a CPU torch) or without ``CUDA_HOME`` that prints a 25-line
traceback and raises ``OSError``.  The adapter also relies on exllamav2 0.3.x internals
(the filter protocol, the dynamic generator's job fields).  :func:`require_exllamav2`
turns each of these into one ImportError paragraph saying what to do.

Imports neither torch nor exllamav2 unless they are installed, and never builds anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys

#: the exllamav2 release series whose internals the adapter is written against
SUPPORTED_SERIES = "0.3."
INSTALL_HINT = 'pip install "exl2-enforcer[exllamav2]" (with your CUDA build of torch installed first)'


def exllamav2_problem() -> str | None:
    """Why ``exl2_enforcer.contrib.exllamav2`` cannot be imported here, as one paragraph, or None."""
    try:
        installed = importlib.metadata.version("exllamav2")
    except importlib.metadata.PackageNotFoundError:
        return f"exl2_enforcer.contrib.exllamav2 needs exllamav2 0.3.x, which is not installed: {INSTALL_HINT}."
    if not installed.startswith(SUPPORTED_SERIES):
        return (f"exl2_enforcer.contrib.exllamav2 is written against exllamav2 {SUPPORTED_SERIES}x internals "
                f"(the ExLlamaV2Filter protocol and the dynamic generator's jobs), but exllamav2 {installed} is "
                f"installed: pip install \"exllamav2=={SUPPORTED_SERIES}2\". The engine itself "
                "(exl2_enforcer.Matcher, fill_bitmask) works with any generator.")
    if "exllamav2.ext" in sys.modules or importlib.util.find_spec("exllamav2_ext") is not None:
        return None  # extension already loaded (or a stand-in for it) or prebuilt: nothing to build
    return _jit_build_problem()


def _jit_build_problem() -> str | None:
    """Why exllamav2 could not JIT-build its CUDA extension here, or None when it can try."""
    if importlib.util.find_spec("torch") is None:
        return f"exl2_enforcer.contrib.exllamav2 needs torch and exllamav2: {INSTALL_HINT}."
    import torch

    if not (torch.version.cuda or getattr(torch.version, "hip", None)):
        return (f"exl2_enforcer.contrib.exllamav2 needs exllamav2's CUDA extension, but the installed torch "
                f"{torch.__version__} has no CUDA or ROCm support and no prebuilt exllamav2_ext is installed. "
                "Install a CUDA (or ROCm) build of torch and an exllamav2 wheel built for it, or use the engine "
                "without the adapter (exl2_enforcer.Matcher and the bitmask helpers need neither).")
    from torch.utils.cpp_extension import CUDA_HOME, ROCM_HOME

    if not (CUDA_HOME or ROCM_HOME or os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
        return ("exl2_enforcer.contrib.exllamav2 needs exllamav2's CUDA extension, which is not prebuilt here "
                "and cannot be built: the CUDA toolkit was not found (set CUDA_HOME to its root, e.g. "
                "/usr/local/cuda), or install an exllamav2 wheel with the prebuilt extension for your torch.")
    return None


def require_exllamav2() -> None:
    """Raise ImportError with :func:`exllamav2_problem`'s paragraph when the adapter cannot work here."""
    problem = exllamav2_problem()
    if problem is not None:
        raise ImportError(problem, name="exllamav2")
