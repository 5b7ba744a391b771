"""Call-free fragments built once per key and spliced into each compile (formats, numbers, patterns).

A template NFA is built by ``build`` the first time its key is seen and kept in a small LRU; every
compile that needs it copies the states into its own NFA, so an expensive fragment (an email
format, a bounded number) costs its construction once per process, not once per schema.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from exl2_enforcer.compile.length_product import length_product, longest_bytes
from exl2_enforcer.compile.nfa import NFA, Frag

_TEMPLATES: "OrderedDict[tuple[Any, ...], tuple[NFA, Frag]]" = OrderedDict()
_TEMPLATES_LOCK = threading.Lock()


def bounded_fragment(build: Callable[[NFA], Frag], lo: int, hi: int | None, dst: NFA) -> Frag:
    """``build``'s fragment restricted to ``lo``..``hi`` characters, emitted into ``dst``."""
    scratch = NFA()
    frag = build(scratch)
    if lo == 0 and hi is not None:
        longest = longest_bytes(scratch, frag)
        if longest is not None and longest <= hi:
            return dst.splice(scratch, frag)  # already within the bound (email and maxLength 254)
    return length_product(scratch, frag, lo, hi, dst)


def template_fragment(nfa: NFA, key: tuple[Any, ...], build: Callable[[NFA], Frag]) -> Frag:
    """A call-free fragment built once per ``key`` (LRU of 256 templates) and spliced into ``nfa``."""
    with _TEMPLATES_LOCK:
        got = _TEMPLATES.get(key)
        if got is not None:
            _TEMPLATES.move_to_end(key)
    if got is None:
        tmpl = NFA()
        got = (tmpl, build(tmpl))
        tmpl.freeze()  # kept for the process: read by splice only
        with _TEMPLATES_LOCK:
            _TEMPLATES[key] = got
            while len(_TEMPLATES) > 256:
                _TEMPLATES.popitem(last=False)
    return nfa.splice(*got)
