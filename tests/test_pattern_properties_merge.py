"""patternProperties where schemas are merged (allOf, if/then/else branches, the oneOf proof).

A merged schema keeps one side's ``patternProperties``; what the other side asks of the names those
patterns match must survive the merge, or the merge must be refused.  Found reviewing ``not`` of
``properties`` (if/then/else on a member), whose branches are merged with the schema around them.
Every schema is checked against ``jsonschema`` on listed values.
"""

from __future__ import annotations

import pytest
from enforcer_oracle import assert_values_match_jsonschema, vocab_by_name

from exl2_enforcer import SchemaOptions, compile_json_schema
from exl2_enforcer.errors import SchemaError

#: the spec's reading, as jsonschema validates: extra members allowed, members in any order
SPEC = SchemaOptions(strict_objects=False, property_order="any")


# The branches of if/then/else are merged with the schema around them (merge._merge_members): a
# member the condition names that the outer schema covers by patternProperties, not properties,
# must keep the pattern's schema only -- not also the outer additionalProperties, which does not
# apply to it -- and an additionalProperties merged next to patterns it does not see must not
# let the patterns' names through.
PATTERNED = {
    "outer_pattern": {"type": "object", "patternProperties": {"^x": {"type": "string"}}, "additionalProperties": False,
                      "if": {"properties": {"x1": {"const": "q"}}}, "then": {"required": ["x1"]}, "else": True},
    "pattern_vs_additional": {"type": "object", "patternProperties": {"^x": {"type": "integer"}},
                              "additionalProperties": {"type": "string"},
                              "if": {"properties": {"x1": {"const": 1}}}, "then": True, "else": {"required": ["c"]}},
}
PATTERNED_VALUES = [{}, {"x1": "q"}, {"x1": "r"}, {"x1": 1}, {"x1": 2}, {"x1": 2, "c": "s"}, {"x2": "q"}, {"x2": 3},
                    {"c": "s"}, {"c": 1}, {"x1": "q", "c": 1}, 3]


@pytest.mark.parametrize("name", list(PATTERNED))
def test_a_condition_on_a_member_the_outer_schema_covers_by_pattern(name):
    g = compile_json_schema(PATTERNED[name], vocab_by_name("llama3"), SPEC)
    assert_values_match_jsonschema(g, PATTERNED[name], PATTERNED_VALUES, name)


@pytest.mark.parametrize("schema", [
    {"type": "object", "patternProperties": {"^x": {}}, "allOf": [{"additionalProperties": False}]},
    {"type": "object", "allOf": [{"patternProperties": {"^x": {}}}, {"additionalProperties": {"type": "string"}}]},
    {"type": "object", "patternProperties": {"^x": {}},
     "if": {"properties": {"a": {"const": 1}}}, "then": {"additionalProperties": False}, "else": True},
])
def test_additional_properties_merged_next_to_patterns_it_does_not_see_is_exact_or_refused(schema):
    try:
        g = compile_json_schema(schema, vocab_by_name("llama3"), SPEC)
    except SchemaError as e:
        assert "patternProperties" in str(e)
        return
    assert_values_match_jsonschema(g, schema, [{}, {"a": 1}, {"x1": 1}, {"x1": "s"}, {"y": "s"}, {"a": 2, "x": 1}],
                                   schema)


def test_one_of_is_not_proved_disjoint_by_additional_properties_its_patterns_bypass():
    """The oneOf proof took ``additionalProperties: false`` to forbid every undeclared name a
    sibling requires, but a name its patternProperties match is allowed: {"x1": 1} is in both
    branches, so invalid under oneOf, and was accepted (compiled as an anyOf)."""
    schema = {"oneOf": [{"type": "object", "patternProperties": {"^x": {}}, "additionalProperties": False},
                        {"type": "object", "required": ["x1"]}]}
    try:
        g = compile_json_schema(schema, vocab_by_name("llama3"), SPEC)
    except SchemaError as e:
        assert "oneOf" in str(e)
        return
    assert_values_match_jsonschema(g, schema, [{}, {"x1": 1}, {"x2": 1}, {"y": 1}, {"y": 1, "x1": 2}], "oneOf")
