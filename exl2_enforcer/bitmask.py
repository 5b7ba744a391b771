"""Token bitmasks for a logits row: allocate, fill, apply (numpy or torch).

A bitmask for a logits row ``logits_width`` wide is ``ceil(logits_width / 32)``
int32 words; bit ``j`` of word ``i`` allows token ``32*i + j`` (the layout
xgrammar and llguidance use).  A batch is a 2-D array ``(batch, words)``.

Every helper checks its buffer and raises :class:`~exl2_enforcer.errors.BitmaskError`
naming the parameter, the expected dtype/shape and what it got: a wrong buffer
would otherwise be filled with garbage without any error.

torch is imported only when a torch tensor is passed or asked for.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from exl2_enforcer.errors import BitmaskError

if TYPE_CHECKING:
    from exl2_enforcer.matcher import Matcher

__all__ = ["BITS_PER_WORD", "bitmask_words", "allocate_bitmask", "check_bitmask", "fill_bitmask", "apply_bitmask"]

BITS_PER_WORD = 32

Library = Literal["numpy", "torch"]


def bitmask_words(logits_width: int) -> int:
    """Number of int32 words a bitmask for a logits row ``logits_width`` wide needs.

    Raises :class:`BitmaskError` unless ``logits_width`` is a positive int.
    """
    if isinstance(logits_width, bool) or not isinstance(logits_width, (int, np.integer)) or logits_width <= 0:
        raise BitmaskError(f"logits_width must be a positive int, got {logits_width!r}")
    return (int(logits_width) + BITS_PER_WORD - 1) // BITS_PER_WORD


def allocate_bitmask(logits_width: int, batch_size: int | None = None, *, library: Library = "numpy") -> Any:
    """A zeroed bitmask buffer: int32, shape ``(words,)`` or ``(batch_size, words)``.

    ``library`` is ``"numpy"`` (an ``np.ndarray``) or ``"torch"`` (a CPU ``torch.Tensor``;
    fill it on the CPU and move it with ``.to(device, non_blocking=True)``).
    Raises :class:`BitmaskError` for a bad width, batch size or library.
    """
    words = bitmask_words(logits_width)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size <= 0):
        raise BitmaskError(f"batch_size must be a positive int or None, got {batch_size!r}")
    shape = (words,) if batch_size is None else (batch_size, words)
    if library == "numpy":
        return np.zeros(shape, dtype=np.int32)
    if library == "torch":
        import torch

        return torch.zeros(shape, dtype=torch.int32)
    raise BitmaskError(f"library must be 'numpy' or 'torch', got {library!r}")


def _is_torch(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def check_bitmask(bitmask: Any, logits_width: int, *, name: str = "bitmask", batched: bool = False,
                  writable: bool = True) -> np.ndarray:
    """Check a bitmask buffer and return a writable numpy view of it (no copy).

    ``bitmask`` must be a C-contiguous int32 ``np.ndarray`` or CPU ``torch.Tensor`` of shape
    ``(words,)`` (``(batch, words)`` when ``batched``) with ``words >= ceil(logits_width / 32)``,
    writable unless ``writable`` is False.  Raises :class:`BitmaskError` naming ``name`` otherwise.
    """
    words = bitmask_words(logits_width)
    if _is_torch(bitmask):
        import torch

        if bitmask.dtype != torch.int32:
            raise BitmaskError(f"{name} must have dtype torch.int32, got {bitmask.dtype}")
        if bitmask.device.type != "cpu":
            raise BitmaskError(f"{name} is on {bitmask.device}: fill a CPU int32 tensor, then move it "
                               "with .to(device, non_blocking=True)")
        array: np.ndarray = bitmask.numpy()
    elif isinstance(bitmask, np.ndarray):
        if bitmask.dtype != np.int32:
            raise BitmaskError(f"{name} must have dtype int32, got {bitmask.dtype}")
        array = bitmask
    else:
        raise BitmaskError(f"{name} must be an int32 numpy array or torch tensor, got {type(bitmask).__name__}")
    ndim = 2 if batched else 1
    if array.ndim != ndim:
        want = "(batch, words)" if batched else "(words,)"
        raise BitmaskError(f"{name} must have shape {want}, got shape {tuple(array.shape)}")
    if array.shape[-1] < words:
        raise BitmaskError(f"{name} has {array.shape[-1]} words per row; logits width {logits_width} "
                           f"needs at least {words}")
    if not array.flags.c_contiguous:
        raise BitmaskError(f"{name} must be C-contiguous (a strided view would be filled in the wrong places)")
    if writable and not array.flags.writeable:
        raise BitmaskError(f"{name} is read-only")
    return array


def fill_bitmask(matcher: Matcher, bitmask: Any, logits_width: int, index: int | None = None) -> None:
    """Write ``matcher``'s allowed tokens into ``bitmask`` (row ``index`` of a batch when given).

    ``bitmask``: int32, ``(words,)`` or, with ``index``, ``(batch, words)``; numpy or CPU torch.
    Raises :class:`BitmaskError` for a bad buffer or index, and what
    :meth:`Matcher.fill_bitmask` raises.
    """
    array = check_bitmask(bitmask, logits_width, batched=index is not None)
    if index is not None:
        if not -array.shape[0] <= index < array.shape[0]:
            raise BitmaskError(f"index {index} is outside the bitmask's batch of {array.shape[0]}")
        array = array[index]
    matcher.fill_bitmask(array, logits_width)


def _allowed_numpy(bitmask: np.ndarray, width: int) -> np.ndarray:
    little = bitmask.astype("<i4", copy=False).view(np.uint8)
    return np.unpackbits(little, axis=-1, bitorder="little")[..., :width].astype(bool)


def apply_bitmask(logits: Any, bitmask: Any) -> None:
    """Set every logit whose token the bitmask does not allow to ``-inf``, in place.

    ``logits``: a float ``np.ndarray`` or ``torch.Tensor`` (any device) of shape ``(width,)``
    or ``(batch, width)``; ``bitmask``: int32 of shape ``(words,)`` or ``(batch, words)``
    with ``words >= ceil(width / 32)``, the same library as ``logits``.
    Raises :class:`BitmaskError` for mismatched libraries, dtypes or shapes.
    """
    if _is_torch(logits):
        _apply_torch(logits, bitmask)
        return
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        raise BitmaskError(f"logits must be a floating-point numpy array or torch tensor, got "
                           f"{getattr(logits, 'dtype', type(logits).__name__)}")
    if logits.ndim not in (1, 2):
        raise BitmaskError(f"logits must have shape (width,) or (batch, width), got {logits.shape}")
    if not isinstance(bitmask, np.ndarray):
        raise BitmaskError(f"bitmask must be a numpy array for numpy logits, got {type(bitmask).__name__}")
    array = _check_pair(bitmask, logits.shape)
    logits[~_allowed_numpy(array, logits.shape[-1])] = -np.inf


def _check_pair(bitmask: np.ndarray, logits_shape: tuple[int, ...]) -> np.ndarray:
    array = check_bitmask(bitmask, logits_shape[-1], batched=len(logits_shape) == 2, writable=False)
    if len(logits_shape) == 2 and array.shape[0] != logits_shape[0]:
        raise BitmaskError(f"bitmask has {array.shape[0]} rows but logits have {logits_shape[0]}")
    return array


def _apply_torch(logits: Any, bitmask: Any) -> None:
    import torch

    if not logits.is_floating_point():
        raise BitmaskError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if logits.dim() not in (1, 2):
        raise BitmaskError(f"logits must have shape (width,) or (batch, width), got {tuple(logits.shape)}")
    if not _is_torch(bitmask):
        raise BitmaskError(f"bitmask must be a torch tensor for torch logits, got {type(bitmask).__name__}")
    if bitmask.dtype != torch.int32:
        raise BitmaskError(f"bitmask must have dtype torch.int32, got {bitmask.dtype}")
    if bitmask.dim() != logits.dim():  # e.g. a (words,) mask for (1, width) logits: say which shape fits
        want = "(batch, words)" if logits.dim() == 2 else "(words,)"
        raise BitmaskError(f"bitmask must have shape {want} for logits of shape {tuple(logits.shape)}, got shape "
                           f"{tuple(bitmask.shape)} (allocate_bitmask(width, batch_size) makes a batched one)")
    width = logits.shape[-1]
    words = bitmask_words(width)
    if bitmask.shape[-1] < words:
        raise BitmaskError(f"bitmask has {bitmask.shape[-1]} words per row; logits width {width} needs {words}")
    if logits.dim() == 2 and bitmask.shape[0] != logits.shape[0]:
        raise BitmaskError(f"bitmask has {bitmask.shape[0]} rows but logits have {logits.shape[0]}")
    shifts = torch.arange(BITS_PER_WORD, dtype=torch.int32, device=logits.device)
    bits = (bitmask[..., :words].to(logits.device).unsqueeze(-1) >> shifts) & 1
    allowed = bits.bool().flatten(-2)[..., :width]
    logits.masked_fill_(~allowed, float("-inf"))
