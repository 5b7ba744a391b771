"""JSON values as JSON Schema compares them: a canonical key, equality, linear de-duplication."""

from __future__ import annotations

import math
from collections.abc import Hashable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from exl2_enforcer.errors import SchemaError

if TYPE_CHECKING:
    from referencing._core import Resolver  # referencing exports no public name for its Resolver type


def json_key(value: Any) -> Hashable:
    """A hashable key that is equal for two JSON values exactly when JSON Schema calls them equal.

    Numbers compare by value (``1 == 1.0``, an integral float keys as its int),
    booleans are not numbers (``true != 1``), object key order is irrelevant,
    array order matters.  A number is keyed by both its readings (see
    docs/schema-support.md, "Numbers as Python reads them"): the decimal its JSON text
    spells (a float's shortest repr) and the value Python compares (a float's binary
    value), so ``1e23`` is neither ``10**23`` nor ``99999999999999991611392``.  Raises
    :class:`SchemaError` for a value that is not JSON (a set, bytes, ...).
    """
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("num", value, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ("num", value, value)
        written = Decimal(repr(value))
        return ("num", int(written) if written == written.to_integral_value() else written.normalize(),
                int(value) if value.is_integer() else value)
    if isinstance(value, Decimal):  # a schema read with parse_float=Decimal: written and compared exactly
        if not value.is_finite():
            return ("num", str(value))
        exact = int(value) if value == value.to_integral_value() else value.normalize()
        return ("num", exact, exact)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return ("arr", tuple(json_key(v) for v in value))
    if isinstance(value, dict):
        return ("obj", frozenset((k, json_key(v)) for k, v in value.items()))
    raise SchemaError(f"{type(value).__name__} is not a JSON value")


def json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality (1 == 1.0, true != 1, key order ignored), as ``const`` defines it."""
    return json_key(a) == json_key(b)


def dedupe_json(values: list[Any]) -> list[Any]:
    """``values`` without later duplicates under :func:`json_equal`, order kept; linear time."""
    seen: set[Hashable] = set()
    out: list[Any] = []
    for v in values:
        # a str keys as itself: no tuple key equals it, and strings are most enums' values
        k = v if isinstance(v, str) else json_key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def base_uri(resolver: Resolver[Any]) -> str:
    """The base URI a resolver resolves relative references against."""
    return str(getattr(resolver, "_base_uri", ""))
