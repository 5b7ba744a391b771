"""Keywords compiled by rewriting (schema_keywords.py): not, if/then/else, contains, dependencies,
patternProperties, propertyNames, unevaluated*.  Every answer is compared with ``jsonschema``
(spec options: open objects, every escape, any member order)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import assert_values_match_jsonschema, generate, validator_for

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import SchemaError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.tokens.vocabulary import default_vocabulary

SPEC = SchemaOptions(strict_objects=False, escapes="all", property_order="any", integral_fractions=True)
VALUES = [None, True, 0, -3, 2.5, 7, 12, "", "ab", "abcdef", [], [1], [1, "a"], [2, 4, 6], ["x", "y", "z", 3],
          {}, {"a": 1}, {"a": "s", "b": 2}, {"b": 1}, {"c": [1]}, {"a": 1, "c": 2}, {"ab": 1, "xy": 2}]

CASES = {
    "not-type": {"not": {"type": ["string", "null"]}},
    "not-bounds": {"not": {"minimum": 5, "maxLength": 2}},
    "not-required": {"not": {"required": ["a", "b"]}},
    "not-not": {"not": {"not": {"type": "integer"}}},
    "not-enum": {"not": {"enum": ["ab", 7, None, True]}},
    "enum-minus-const": {"enum": ["", "ab", "abcdef", 7], "not": {"const": "ab"}},
    # the "ab" branch turns out empty inside its own anyOf (the rewritten not): dropped, not an error
    "oneOf-consts-minus-const": {"oneOf": [{"const": "ab"}, {"const": 7}, {"const": "abcdef"}], "not": {"const": "ab"}},
    "pattern-minus-values": {"type": "string", "pattern": "^a", "not": {"enum": ["ab"]}},
    "if-then-else": {"if": {"minimum": 5}, "then": {"multipleOf": 2}, "else": {"type": ["array", "string"]}},
    "if-required": {"if": {"required": ["a"]}, "then": {"required": ["b"]}},
    "contains": {"contains": {"type": "integer"}},
    "min-max-contains": {"contains": {"type": "string"}, "minContains": 1, "maxContains": 2, "maxItems": 4},
    "contains-items": {"items": {"type": ["integer", "string"]}, "contains": {"type": "string"}, "minItems": 2},
    "dependentRequired": {"dependentRequired": {"a": ["b"]}},
    "dependentSchemas": {"dependentSchemas": {"c": {"required": ["a"]}}},
    "propertyNames": {"propertyNames": {"maxLength": 1}},
    "unevaluatedProperties": {"properties": {"a": {}}, "allOf": [{"properties": {"b": {}}}],
                              "unevaluatedProperties": False},
    "unevaluatedItems": {"prefixItems": [{"type": "integer"}], "unevaluatedItems": {"type": "string"}},
}


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


@pytest.mark.parametrize("name", list(CASES))
def test_answers_match_jsonschema(vocab, name):
    schema = CASES[name]
    g = compile_json_schema(schema, vocab, SPEC)
    assert_values_match_jsonschema(g, schema, VALUES, name)


@pytest.mark.parametrize("name", ["if-then-else", "min-max-contains", "dependentSchemas", "not-required"])
def test_generations_validate(vocab, name):
    schema = CASES[name]
    g = compile_json_schema(schema, vocab)
    check = validator_for(schema)
    rng = np.random.default_rng(11)
    for _ in range(5):
        out = generate(g, rng, budget=120)
        if out.finished:
            assert check.is_valid(json.loads(out.text)), out.text


@pytest.mark.parametrize("schema,pointer", [
    ({"not": {"enum": [["a"]]}}, "/not/enum"),
    ({"if": {"pattern": "^a"}, "then": {"maxLength": 3}}, "/if/pattern"),
    ({"contains": {"const": {"a": 1}}, "maxContains": 1}, "/contains/const"),
    ({"anyOf": [{"prefixItems": [{}]}], "unevaluatedItems": False}, "/unevaluatedItems"),
    ({"allOf": [{"unevaluatedProperties": False}, {"properties": {"a": {}}}]}, "/allOf/0"),
])
def test_inexpressible_forms_are_refused(vocab, schema, pointer):
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, vocab, SPEC)
    assert info.value.pointer == pointer, str(info.value)
