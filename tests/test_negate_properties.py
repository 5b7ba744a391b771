"""``not`` of ``properties``, and so ``if``/``then``/``else`` on a discriminator member.

``{"if": {"properties": {"kind": {"const": "a"}}}, "then": …, "else": …}`` is how hand-written
schemas (editor configs, CI files, API specs) pick a variant; it was refused because the
complement of ``properties`` was not expressible.  It is: an object with a listed member whose
value fails that member's schema.  Every schema here is checked against ``jsonschema`` on listed
values (both outcomes) and on random finished generations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import assert_values_match_jsonschema, finished_values, validator_for, vocab_by_name

from exl2_enforcer import SchemaOptions, compile_json_schema
from exl2_enforcer.errors import SchemaError

KIND = {
    "type": "object",
    "properties": {"kind": {"enum": ["file", "url"]}, "path": {"type": "string"}, "href": {"type": "string"}},
    "required": ["kind"],
    "additionalProperties": False,
    "if": {"properties": {"kind": {"const": "file"}}},
    "then": {"required": ["path"]},
    "else": {"required": ["href"]},
}
# no type on the outer schema: a non-object passes "properties" vacuously, so it takes "then"
LOOSE = {"if": {"properties": {"n": {"minimum": 10}}, "required": ["n"]},
         "then": {"properties": {"big": {"const": True}}, "required": ["big"]}, "else": {"not": {"required": ["big"]}}}
TWO = {  # two members in the condition: either failing picks "else"
    "type": "object",
    "properties": {"os": {"enum": ["linux", "mac", "win"]}, "arch": {"enum": ["x64", "arm64"]},
                   "flags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}},
    "required": ["os", "arch"],
    "if": {"properties": {"os": {"const": "linux"}, "arch": {"const": "x64"}}},
    "then": {"required": ["flags"]},
    "else": {"properties": {"flags": {"maxItems": 0}}},
}
NOT_PROPS = {"not": {"properties": {"a": {"type": "string"}, "b": {"enum": [1, 2]}}}}

VALUES = {
    "kind": [{"kind": "file", "path": "/a"}, {"kind": "file", "href": "x"}, {"kind": "url", "href": "x"},
             {"kind": "url", "path": "/a"}, {"kind": "file"}, {"kind": "url", "path": "/a", "href": "y"}, {}],
    "loose": [5, "s", {"n": 12, "big": True}, {"n": 12}, {"n": 3}, {"n": 3, "big": True}, {"big": False},
              {"n": "x", "big": 1}, [], {"n": 10, "big": False}],
    "two": [{"os": "linux", "arch": "x64", "flags": ["-O2"]}, {"os": "linux", "arch": "x64"},
            {"os": "linux", "arch": "arm64"}, {"os": "mac", "arch": "x64", "flags": []},
            {"os": "win", "arch": "arm64", "flags": ["a"]}, {"os": "linux", "arch": "x64", "flags": []}],
    "not_props": [1, "x", None, {}, {"a": "s"}, {"a": 3}, {"b": 1}, {"b": 3}, {"a": "s", "b": 2},
                  {"a": "s", "b": "q"}, [1], {"c": 0}],
}
SCHEMAS = {"kind": KIND, "loose": LOOSE, "two": TWO, "not_props": NOT_PROPS}
#: the spec's reading, as jsonschema validates: extra members allowed, members in any order
SPEC = SchemaOptions(strict_objects=False, property_order="any")


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_listed_values_match_jsonschema(name):
    g = compile_json_schema(SCHEMAS[name], vocab_by_name("llama3"), SPEC)
    assert_values_match_jsonschema(g, SCHEMAS[name], VALUES[name], name)


@pytest.mark.parametrize("name", ["kind", "two", "not_props"])
def test_generations_are_valid(name):
    g = compile_json_schema(SCHEMAS[name], vocab_by_name("qwen3"))  # the defaults: a subset of the spec's values
    values = finished_values(g, np.random.default_rng(len(name)), runs=12, budget=120)
    assert len(values) >= 6
    check = validator_for(SCHEMAS[name])
    bad = [v for v in values if not check.is_valid(v)]
    assert not bad, json.dumps(bad[:3])


def test_a_member_whose_complement_is_not_expressible_is_still_refused_by_pointer():
    schema = {"if": {"properties": {"tag": {"pattern": "^v[0-9]+$"}}}, "then": {"required": ["tag"]}}
    with pytest.raises(SchemaError) as err:
        compile_json_schema(schema, vocab_by_name("llama3"))
    assert "/if/properties/tag/pattern" in str(err.value)



def test_a_recursive_condition_is_refused_as_recursive_at_its_if():
    """``properties`` is the first form whose complement recurses into subschemas: one whose member
    refers back to it has no finite complement, and must say so where the user wrote it (it ran
    into Python's recursion limit and was reported at the root as "a chain of $ref too long")."""
    schema = {"$defs": {"tree": {"properties": {"child": {"$ref": "#/$defs/tree"}, "leaf": {"const": 1}}}},
              "if": {"$ref": "#/$defs/tree"}, "then": {"required": ["leaf"]}}
    with pytest.raises(SchemaError) as err:
        compile_json_schema(schema, vocab_by_name("llama3"))
    assert "recursi" in err.value.message and "too deep" not in err.value.message
    assert err.value.pointer.startswith("/if"), err.value.pointer


# Merging two schemas that ask a member for values with nothing in common leaves an object that
# cannot hold that member, not an object that admits no value: the if-branch of a condition on a
# member the outer schema types otherwise (objects without the member take it) was dropped whole,
# and allOf with such a member was refused.
CONFLICTS = {
    "if_on_a_member_typed_otherwise": {
        "type": "object", "properties": {"a": {"type": "boolean"}},
        "if": {"properties": {"a": {"type": "string"}}}, "then": {"required": ["b"]}, "else": {"required": ["c"]}},
    "all_of_two_consts": {"allOf": [{"properties": {"a": {"const": 1}}}, {"properties": {"a": {"const": 2}}}]},
    "all_of_two_types_required_elsewhere": {"type": "object", "required": ["b"], "allOf": [
        {"properties": {"a": {"type": "string"}}}, {"properties": {"a": {"type": "integer"}}}]},
    "all_of_two_additional": {"allOf": [{"additionalProperties": {"type": "string"}},
                                        {"additionalProperties": {"type": "integer"}}]},
}
CONFLICT_VALUES = [1, "s", {}, {"a": 1}, {"a": 2}, {"a": "s"}, {"a": True}, {"b": 1}, {"c": 1}, {"a": True, "c": 1},
                   {"a": True, "b": 1}, {"a": "s", "b": 1}]


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_a_member_no_value_satisfies_is_left_out_not_the_object(name):
    g = compile_json_schema(CONFLICTS[name], vocab_by_name("llama3"), SPEC)
    assert_values_match_jsonschema(g, CONFLICTS[name], CONFLICT_VALUES, name)
