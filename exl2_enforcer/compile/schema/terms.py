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

#: OpenAPI keywords that real-world (pydantic, FastAPI) schemas carry and JSON Schema ignores
OPENAPI_ANNOTATIONS = frozenset({"example", "nullable", "discriminator"})

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


def in_place_below(pointer: str, base: str) -> bool:
    """Whether ``pointer`` is ``base`` or below it through ``anyOf``/``oneOf``/``allOf`` branches
    only (the same instance location: an optional member's pointer is not), or the ``required``
    of such a place (a required member that cannot be written empties that very object)."""
    if pointer == base:
        return True
    if not pointer.startswith(base + "/"):
        return False
    parts = pointer[len(base) + 1:].split("/")
    if parts[-1] == "required":
        parts.pop()
    return len(parts) % 2 == 0 and all(kw in ("anyOf", "oneOf", "allOf") and i.isdigit()
                                       for kw, i in zip(parts[::2], parts[1::2]))


def pointer_tokens(pointer: str) -> list[str]:
    """The decoded reference tokens of a JSON pointer ("" has none)."""
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]] if pointer else []


#: internal keywords a document's own spelling may hold under another name (drafts 4-7's
#: ``dependencies`` is read as these two)
_SPELLED_AS = {"dependentRequired": "dependencies", "dependentSchemas": "dependencies"}


def existing_pointer(document: Any, pointer: str) -> str:
    """A place in ``document`` for ``pointer``: ``pointer`` itself when it exists.  A pointer built
    along a rewritten schema (a ``not`` or ``if`` rewritten as ``anyOf``, merged ``allOf``
    branches) may name structure ``document`` lacks; then its longest existing prefix, or, below
    that, the one place whose path ends with the most of the lost tokens (``/anyOf/0/pattern``
    of a rewritten ``if``/``then`` is ``/then/pattern`` when that is the only ``pattern`` there).
    """
    node, kept = document, ""
    tokens = pointer_tokens(pointer)
    for n, token in enumerate(tokens):
        if isinstance(node, dict) and token not in node and _SPELLED_AS.get(token) in node:
            token = _SPELLED_AS[token]
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node) and token == str(int(token)):
            node = node[int(token)]
        else:
            return child_pointer(kept, *_likeliest_below(node, tokens[n:]))
        kept = child_pointer(kept, token)
    return kept


#: places below a truncated pointer searched for its lost tail (bounds the walk on a large schema)
MAX_SEARCHED_PLACES = 100_000


def _likeliest_below(node: Any, lost: list[str]) -> tuple[str, ...]:
    """The path below ``node`` ending with the most tokens of ``lost`` (at least its last, the
    keyword); () when none does or two tie."""
    best: list[tuple[str, ...]] = []
    best_len = 0
    stack: list[tuple[Any, tuple[str, ...]]] = [(node, ())]
    for _ in range(MAX_SEARCHED_PLACES):
        if not stack:
            break
        value, path = stack.pop()
        if path:
            common = 0
            while common < min(len(path), len(lost)) and path[-1 - common] == lost[-1 - common]:
                common += 1
            if common > best_len:
                best, best_len = [path], common
            elif common == best_len and common:
                best.append(path)
        if isinstance(value, dict):
            stack += [(v, (*path, str(k))) for k, v in value.items() if k not in ("enum", "const")]
        elif isinstance(value, list):
            stack += [(v, (*path, str(i))) for i, v in enumerate(value)]
    return best[0] if len(best) == 1 else ()
