"""JSON Schema drafts 4, 6, 7, 2019-09 and 2020-12: which draft a schema is in, and its keywords
rewritten into the compiler's internal spelling.

The compiler reads two spellings: draft 2020-12 (``prefixItems``) and the *legacy* one shared by
drafts 4 to 2019-09 (array-form ``items`` with ``additionalItems``).  Everything else a draft spells
its own way is rewritten here, once, over the whole document, before ``$ref`` resolution:

* draft 4's boolean ``exclusiveMinimum``/``exclusiveMaximum`` become the numeric form;
* drafts 4-7's ``dependencies`` become ``dependentRequired`` + ``dependentSchemas``;
* in drafts 4-7 a ``$ref`` overrides its siblings, so they are dropped (``definitions``/``$defs``
  stay, being places other ``$ref``s may point into);
* keywords another draft defines but this one does not (``const`` in draft 4, ``if`` in draft 6,
  ``prefixItems`` before 2020-12, ...) are unknown keywords there, i.e. annotations: dropped.

The rewrite keeps every subschema at its JSON pointer, so ``$ref`` pointers still resolve.
"""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import referencing.jsonschema

from exl2_enforcer.errors import SchemaError

DRAFTS = ("4", "6", "7", "2019-09", "2020-12")
#: drafts whose ``$ref`` overrides its sibling keywords
REF_OVERRIDES = frozenset({"4", "6", "7"})
#: drafts that spell tuples as array-form ``items`` + ``additionalItems``
LEGACY_ITEMS = frozenset({"4", "6", "7", "2019-09"})

_META = {
    "json-schema.org/draft-04/schema": "4",
    "json-schema.org/draft-06/schema": "6",
    "json-schema.org/draft-07/schema": "7",
    "json-schema.org/draft/2019-09/schema": "2019-09",
    "json-schema.org/draft/2020-12/schema": "2020-12",
}
_VALIDATORS: dict[str, type[Any]] = {
    "4": jsonschema.Draft4Validator, "6": jsonschema.Draft6Validator, "7": jsonschema.Draft7Validator,
    "2019-09": jsonschema.Draft201909Validator, "2020-12": jsonschema.Draft202012Validator,
}
_SPECS = {
    "4": referencing.jsonschema.DRAFT4, "6": referencing.jsonschema.DRAFT6, "7": referencing.jsonschema.DRAFT7,
    "2019-09": referencing.jsonschema.DRAFT201909, "2020-12": referencing.jsonschema.DRAFT202012,
}
#: the assertion/applicator keywords each draft defines (jsonschema's own tables)
KEYWORDS = {d: frozenset(cls.VALIDATORS) | ({"exclusiveMinimum", "exclusiveMaximum"} if d == "4" else set())
            for d, cls in _VALIDATORS.items()}
_ALL_KEYWORDS = frozenset().union(*KEYWORDS.values())
#: keywords whose value is one subschema / a name -> subschema map / a list of subschemas
_ONE = ("additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if", "then",
        "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")
_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
#: siblings of a draft 4-7 ``$ref`` kept: places other references may point into
_REF_KEEP = ("$ref", "definitions", "$defs")


def draft_of_uri(uri: str) -> str | None:
    """The draft an official meta-schema URI names (http or https, with or without ``#``)."""
    bare = uri.strip().rstrip("#").split("://", 1)[-1]
    return _META.get(bare)


def validator_class(draft: str) -> type:
    """jsonschema's validator class for ``draft``."""
    return _VALIDATORS[draft]


def internal_validator_class(draft: str) -> type:
    """The validator for schemas already rewritten by :func:`normalize_document`."""
    return _VALIDATORS["2020-12" if draft == "2020-12" else "2019-09"]


def specification(draft: str) -> Any:
    """The ``referencing`` specification of ``draft`` (how it spells ``$id``/``id``, anchors)."""
    return _SPECS[draft]


def _schema_format_checker(cls: type[Any]) -> jsonschema.FormatChecker:
    """The meta-schema's format checker without ``regex``: patterns are ECMA-262, which Python's
    ``re`` does not parse (``\\p{L}``, ``(?<name>)``, ``[^]``); the regex compiler checks them."""
    checker = jsonschema.FormatChecker()
    checker.checkers = {k: v for k, v in cls.FORMAT_CHECKER.checkers.items() if k != "regex"}
    return checker


@functools.cache
def meta_validator(draft: str) -> Any:
    """One reusable meta-schema validator per draft (building one per compile costs a third of it);
    for 2020-12 over :func:`merged_meta_schema` when it could be built (the same verdicts, faster)."""
    cls = _VALIDATORS[draft]
    merged = merged_meta_schema() if draft == "2020-12" else None
    return cls(merged if merged is not None else cls.META_SCHEMA, format_checker=_schema_format_checker(cls))


#: the 2020-12 meta-schema's vocabulary documents, merged by :func:`merged_meta_schema`
_VOCABULARIES = ("core", "applicator", "unevaluated", "validation", "meta-data", "format-annotation", "content")
_META_BASE = "https://json-schema.org/draft/2020-12/"
#: keywords of the vocabulary documents that only annotate (dropped from the merged document)
_META_NOTES = frozenset({"$schema", "$id", "$vocabulary", "$dynamicAnchor", "$comment", "title", "default",
                         "deprecated", "$defs"})


def merged_meta_schema() -> dict[str, Any] | None:
    """The 2020-12 meta-schema as one plain document, or None when its shape is not the expected one.

    The official meta-schema is an ``allOf`` of seven vocabulary documents that recurse through
    ``$dynamicRef: "#meta"``.  Validating a schema against it starts at the top document, so every
    ``"#meta"`` resolves to that top document, i.e. to the whole meta-schema.  Each vocabulary is
    ``{"type": ["object", "boolean"], "properties": ...}`` over its own keyword names, so their
    ``allOf`` equals one ``properties`` map of all the names.  The merged document has that map,
    ``"$ref": "#"`` for each ``"#meta"``, and every ``$defs`` entry under ``$defs/<vocabulary>.<name>``;
    it accepts exactly what the official one accepts (tests check it against ``jsonschema`` on the
    test suite's schemas and on mutated ones), and ``jsonschema`` validates against it about five
    times faster (no dynamic scope to search).  Built from ``jsonschema_specifications``' own copy.
    """
    try:
        from jsonschema_specifications import REGISTRY  # jsonschema's own copy of the meta-schemas
    except ImportError:
        return None
    try:
        merged: dict[str, Any] = {"type": ["object", "boolean"], "properties": {}, "$defs": {}}
        for vocabulary in _VOCABULARIES:
            doc = REGISTRY.contents(_META_BASE + "meta/" + vocabulary)
            if doc.get("type") != ["object", "boolean"] or set(doc) - _META_NOTES - {"type", "properties"}:
                return None
            _merge_properties(merged, doc["properties"], vocabulary)
            for name, sub in doc.get("$defs", {}).items():
                merged["$defs"][f"{vocabulary}.{name}"] = _plain_meta(sub, vocabulary)
        top = REGISTRY.contents(_META_BASE + "schema")
        if [r.get("$ref") for r in top.get("allOf", [])] != [f"meta/{v}" for v in _VOCABULARIES]:
            return None
        if top.get("type") != ["object", "boolean"] or set(top) - _META_NOTES - {"type", "properties", "allOf"}:
            return None
        _merge_properties(merged, top["properties"], "schema")
    except (LookupError, ValueError, TypeError, AssertionError):
        return None
    return merged


def _merge_properties(merged: dict[str, Any], properties: dict[str, Any], vocabulary: str) -> None:
    for name, sub in properties.items():
        if name in merged["properties"]:
            raise ValueError(f"keyword {name!r} is in two vocabularies")  # then allOf is no union: give up
        merged["properties"][name] = _plain_meta(sub, vocabulary)


#: where a meta-schema document holds subschemas: one, a name -> subschema map, a list
_META_ONE = frozenset({"additionalProperties", "items", "contains", "propertyNames", "not", "if", "then", "else"})
_META_MAP = frozenset({"properties", "patternProperties", "dependentSchemas"})
_META_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


def _plain_meta(node: Any, vocabulary: str) -> Any:
    """A vocabulary document's subschema with ``"#meta"`` as ``"#"`` and ``$defs`` references renamed."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _META_NOTES:
            continue
        if key == "$dynamicRef":
            if value != "#meta":
                raise ValueError(f"unexpected $dynamicRef {value!r}")
            out["$ref"] = "#"
        elif key == "$ref":
            document, _, fragment = str(value).partition("#")
            if not fragment.startswith("/$defs/") or (document and not document.startswith("meta/")):
                raise ValueError(f"unexpected $ref {value!r}")
            out["$ref"] = f"#/$defs/{document[5:] if document else vocabulary}.{fragment[7:]}"
        elif key in _META_ONE:
            out[key] = _plain_meta(value, vocabulary)
        elif key in _META_MAP:
            out[key] = {name: _plain_meta(sub, vocabulary) for name, sub in value.items()}
        elif key in _META_LIST:
            out[key] = [_plain_meta(sub, vocabulary) for sub in value]
        else:
            out[key] = value
    return out


def check_schema(schema: Any, draft: str) -> None:
    """Validate ``schema`` against ``draft``'s meta-schema; raise :class:`SchemaError` with its pointer."""
    if meta_validator(draft).is_valid(schema):
        return
    cls = _VALIDATORS[draft]
    try:
        cls.check_schema(schema, format_checker=_schema_format_checker(cls))  # slower: picks the best error
    except jsonschema.exceptions.SchemaError as e:
        ptr = "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in e.path)
        hint = ""
        path = list(e.path)
        named = len(path) > 1 and path[-2] in _NAMED_SCHEMAS  # a property called "type", not the keyword
        if path and path[-1] == "type" and not named and not isinstance(e.instance, (dict, bool)):
            # jsonschema's message ("'int' is not valid under any of the given schemas") lists no names
            hint = f"; a type is one of {', '.join(_TYPE_NAMES)} (or a list of them)"
        raise SchemaError(f"invalid schema (draft {draft}): {e.message}{hint}", ptr) from None


_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                            "dependencies"})
_TYPE_NAMES = ("array", "boolean", "integer", "null", "number", "object", "string")


def checked_draft(schema: Any) -> tuple[str, list[str]]:
    """:func:`choose_draft`, and the schema validated against the chosen draft's meta-schema.

    Each meta-schema check runs once (choosing a draft without ``$schema`` already validates);
    raises :class:`SchemaError` with the pointer of the first error otherwise.
    """
    draft, notes = choose_draft(schema)
    if isinstance(schema, dict) and "$schema" in schema:
        check_schema(schema, draft)
    return draft, notes


def choose_draft(schema: Any) -> tuple[str, list[str]]:
    """``(draft, warnings)`` for a root schema.

    An official ``$schema`` URI decides.  Without ``$schema`` the draft is 2020-12, unless the schema
    is invalid there and valid in an older draft (a boolean ``exclusiveMaximum``, array-form
    ``items``): then it is read in the newest such draft, with a warning.  Raises
    :class:`SchemaError` at ``/$schema`` for any other meta-schema, and the 2020-12 error
    when no draft accepts a schema without ``$schema``.
    """
    if isinstance(schema, dict) and "$schema" in schema:
        draft = draft_of_uri(str(schema["$schema"]))
        if draft is None:
            raise SchemaError(f"unsupported $schema {schema['$schema']!r}: use an official draft 4, 6, 7, "
                              "2019-09 or 2020-12 meta-schema URI", "/$schema", keyword="$schema")
        return draft, []
    try:
        check_schema(schema, "2020-12")
        return "2020-12", []
    except SchemaError as first:
        for older in ("2019-09", "7", "6", "4"):
            try:
                check_schema(schema, older)
            except SchemaError:
                continue
            return older, [f"no $schema, and the schema is invalid in draft 2020-12 ({first}); read as draft "
                           f"{older}, where it is valid"]
        raise


def normalize_document(schema: Any, draft: str) -> Any:
    """A copy of ``schema`` (a whole document) in the compiler's internal spelling for ``draft``."""
    return _walk(schema, draft)


def _walk(schema: Any, draft: str) -> Any:
    if not isinstance(schema, dict):
        return schema
    out = normalize_keywords(schema, draft)
    for key in _ONE:
        if key in out and isinstance(out[key], (dict, bool)):
            out[key] = _walk(out[key], draft)
    for key in _MAP:
        if isinstance(out.get(key), dict):
            out[key] = {k: _walk(v, draft) if isinstance(v, (dict, bool)) else v for k, v in out[key].items()}
    for key in _LIST:
        if isinstance(out.get(key), list):
            out[key] = [_walk(v, draft) for v in out[key]]
    return False if _excludes_everything(out) else out


_ANNOTATION_KEYS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
                              "writeOnly"})


def _excludes_everything(schema: dict[str, Any]) -> bool:
    """``{"not": {}}`` / ``{"not": true}``: written as ``false``, so that a property with it is
    simply forbidden (the object compiler leaves ``false`` members out)."""
    if set(schema) - _ANNOTATION_KEYS != {"not"}:
        return False
    inner = schema["not"]
    return inner is True or (isinstance(inner, dict) and not set(inner) - _ANNOTATION_KEYS)


def normalize_keywords(schema: dict[str, Any], draft: str, *, drop_foreign: bool = True) -> dict[str, Any]:
    """One schema object's own keywords in the internal spelling (subschemas untouched).

    ``drop_foreign=False`` only translates (idempotent on an already rewritten schema): the
    internal spelling uses ``dependentRequired`` where draft 7 does not know it.
    """
    if draft == "2020-12":
        return schema
    if draft in REF_OVERRIDES and "$ref" in schema:
        return {k: v for k, v in schema.items() if k in _REF_KEEP}
    known = KEYWORDS[draft]
    out = {k: v for k, v in schema.items() if not drop_foreign or k in known or k not in _ALL_KEYWORDS}
    if draft == "4":
        _draft4_exclusive(out, "exclusiveMinimum", "minimum")
        _draft4_exclusive(out, "exclusiveMaximum", "maximum")
    deps = out.pop("dependencies", None) if draft in REF_OVERRIDES else None
    if isinstance(deps, dict):
        names = {k: v for k, v in deps.items() if isinstance(v, list)}
        schemas = {k: v for k, v in deps.items() if not isinstance(v, list)}
        if names:
            out["dependentRequired"] = names
        if schemas:
            out["dependentSchemas"] = schemas
    return out


def _draft4_exclusive(out: dict[str, Any], exclusive: str, bound: str) -> None:
    flag = out.get(exclusive)
    if not isinstance(flag, bool):
        return  # already numeric (idempotence) or absent
    del out[exclusive]
    if flag and bound in out:
        out[exclusive] = out.pop(bound)
