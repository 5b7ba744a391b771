"""JSON Schema terms shared by the compiler, the risk analysis and the CLI.

One definition each of: the JSON types, the keywords that are pure annotations, the option
modes (as ``Literal`` types, checked by mypy and at run time), and JSON-pointer building.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

#: the ``type`` keyword's names; "integer" is a subset of "number"
JSON_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")
#: the disjoint kinds of JSON value (every value is exactly one of these)
JSON_VALUE_TYPES = ("null", "boolean", "object", "array", "number", "string")

#: keywords that never change the accepted language
ANNOTATIONS = frozenset({
    "$schema", "$id", "$anchor", "$comment", "$defs", "definitions", "$vocabulary", "$dynamicAnchor",
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "contentMediaType", "contentEncoding", "contentSchema",
})

#: ``SchemaOptions.property_order``: members in schema order, or in any order
PropertyOrder = Literal["schema", "any"]
#: ``SchemaOptions.escapes``: canonical spellings of enum/const strings and keys, or every JSON spelling
Escapes = Literal["canonical", "all"]
PROPERTY_ORDERS: tuple[str, ...] = get_args(PropertyOrder)
ESCAPES: tuple[str, ...] = get_args(Escapes)


def escape_pointer_token(part: Any) -> str:
    """One RFC 6901 reference token: ``~`` as ``~0``, ``/`` as ``~1`` (ints become their digits)."""
    return str(part).replace("~", "~0").replace("/", "~1")


def child_pointer(pointer: str, *parts: Any) -> str:
    """The JSON pointer of ``parts`` below ``pointer`` ("" is the document root)."""
    return pointer + "".join("/" + escape_pointer_token(p) for p in parts)
