"""The merged 2020-12 meta-schema (``drafts.merged_meta_schema``) gives jsonschema's verdicts.

The compiler validates every schema without ``$schema`` against the merged document (one
``properties`` map, ``$ref: "#"`` for ``$dynamicRef: "#meta"``) instead of the official
seven-vocabulary meta-schema.  Accepting a schema the official one refuses would let an invalid
schema through, so the two are compared on every schema of the vendored JSON-Schema-Test-Suite
(all drafts: older drafts' schemas are often invalid in 2020-12) and on schemas with one keyword
given a wrong value, at the root and nested where each kind of subschema sits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest

from exl2_enforcer.compile.schema import drafts
from exl2_enforcer.compile.schema.compiler import compile_schema
from exl2_enforcer.errors import SchemaError

SUITE = Path(__file__).resolve().parent / "conformance" / "suite"
CLS = jsonschema.Draft202012Validator


@pytest.fixture(scope="module")
def validators():
    merged = drafts.merged_meta_schema()
    assert merged is not None, "the installed jsonschema's 2020-12 meta-schema no longer merges"
    checker = CLS.FORMAT_CHECKER
    return CLS(merged, format_checker=checker), CLS(CLS.META_SCHEMA, format_checker=checker)


def suite_schemas() -> list[object]:
    out = []
    for path in sorted(SUITE.glob("draft*/**/*.json")):
        out += [group["schema"] for group in json.loads(path.read_text(encoding="utf-8"))]
    return out


def test_the_compiler_validates_against_the_merged_document():
    merged = drafts.merged_meta_schema()
    assert merged is not None and drafts.meta_validator("2020-12").schema == merged
    assert drafts.meta_validator("7").schema is jsonschema.Draft7Validator.META_SCHEMA
    assert '"$dynamicRef": "#meta"' not in json.dumps(merged) and len(merged["properties"]) > 50


def test_same_verdicts_on_every_test_suite_schema(validators):
    fast, official = validators
    schemas = suite_schemas()
    assert len(schemas) > 1000
    verdicts = [(fast.is_valid(s), official.is_valid(s)) for s in schemas]
    disagree = [s for s, (a, b) in zip(schemas, verdicts) if a != b]
    assert not disagree, disagree[:3]
    assert any(not b for _a, b in verdicts) and any(b for _a, b in verdicts)  # both kinds were seen


def keywords() -> list[str]:
    """Every keyword the official meta-schema constrains, and two it does not."""
    from jsonschema_specifications import REGISTRY

    base = "https://json-schema.org/draft/2020-12/"
    names = set(REGISTRY.contents(base + "schema")["properties"])
    for vocabulary in ("core", "applicator", "unevaluated", "validation", "meta-data", "format-annotation",
                       "content"):
        names |= set(REGISTRY.contents(base + "meta/" + vocabulary)["properties"])
    return sorted(names | {"x-custom", "minimun"})


WRONG = [None, True, 0, -1, 1.5, 2, "", "string", "#frag", "a b:%", "^(", [], [1], ["string", "string"],
         ["a", 1], [{}], [True], {}, {"a": 1}, {"a": {"type": 5}}, {"a": ["b", "b"]}, {"https://x": 1}]
PLACES = ["/", "/properties/p", "/items", "/$defs/d", "/allOf/0", "/dependentSchemas/d", "/dependencies/d",
          "/prefixItems/0", "/not", "/contentSchema", "/unevaluatedProperties", "/patternProperties/^a",
          "/definitions/d", "/then", "/propertyNames"]


def planted(keyword: str, value: object, place: str) -> object:
    """A small valid schema with ``{keyword: value}`` as the subschema at ``place``."""
    node: object = {keyword: value}
    for part in reversed(place.strip("/").split("/") if place != "/" else []):
        node = [node] if part == "0" else {part: node}
    return node


@pytest.mark.parametrize("seed", range(3))
def test_same_verdicts_on_one_wrong_keyword(validators, seed):
    fast, official = validators
    rng = random.Random(seed)
    cases = [(k, v, "/") for k in keywords() for v in WRONG if seed == 0]
    cases += [(k, v, rng.choice(PLACES[1:])) for k in keywords() for v in WRONG]
    refused = 0
    for keyword, value, place in cases:
        schema = planted(keyword, value, place)
        expected = official.is_valid(schema)
        assert fast.is_valid(schema) == expected, (keyword, value, place)
        refused += not expected
    assert refused > len(cases) // 4


def test_errors_still_come_from_the_official_meta_schema():
    with pytest.raises(SchemaError, match="draft 2020-12") as err:
        compile_schema({"properties": {"a": {"minLength": -1}}})
    assert err.value.pointer == "/properties/a/minLength"
    with pytest.raises(SchemaError) as err:
        compile_schema({"items": {"enum": 3}})  # invalid in every draft: no older one is tried instead
    assert err.value.pointer == "/items/enum"
