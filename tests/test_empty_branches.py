"""Union branches and dependency cases that admit no value are left out, not a refusal of the
whole schema.

A function-calling agent restricts its tool list to the tools allowed in a turn with a sibling
``enum`` of names (``{"anyOf": tools, "properties": {"name": {"enum": allowed}}}``, or an
``allOf`` of the list and the restriction): the excluded tools' branches then require a member
that admits no value.  Such a branch, a branch that requires a ``false`` property, one whose
min/maxProperties (merged from a sibling) its members cannot meet, and the
"trigger absent" case of a ``dependentRequired`` next to such an ``anyOf`` add nothing; the
other branches stay.  Each schema is checked on real tokens: ``jsonschema`` says which calls
are valid, the matcher must accept exactly those, and its masks along each valid call must be
the brute-force reference's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import encode, reference_allowed_ids, token_table, validator_for, vocab_by_name

from exl2_enforcer.errors import SchemaError, TokenRejected
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher


def tool(i: int) -> dict:
    return {"type": "object", "properties": {
        "name": {"const": f"tool_{i}"},
        "arguments": {"type": "object", "properties": {f"a{i}": {"type": "integer"}}, "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False}


def call(i: int, j: int | None = None) -> dict:
    return {"name": f"tool_{i}", "arguments": {f"a{i if j is None else j}": 1}}


ALLOWED = {"enum": ["tool_0", "tool_2"]}
CASES = {
    # the allowed names as a sibling of the union (merged into each branch)
    "sibling_enum": {"anyOf": [tool(i) for i in range(4)], "properties": {"name": ALLOWED}},
    # the same as an allOf of the full list (pydantic-style $defs) and the restriction
    "allof_restriction": {"$defs": {"Call": {"oneOf": [tool(i) for i in range(4)]}},
                          "allOf": [{"$ref": "#/$defs/Call"}, {"properties": {"name": ALLOWED}}]},
    # a branch that requires a property whose schema is false
    "required_false": {"anyOf": [{**tool(0), "properties": {"off": False, **tool(0)["properties"]},
                                  "required": ["off", "name", "arguments"]}, tool(1), tool(2)]},
    # a sibling minProperties only the tool with an optional extra member can reach (tools are closed)
    "sibling_min_properties": {"minProperties": 3, "anyOf": [
        {**tool(0), "properties": {**tool(0)["properties"], "id": {"type": "integer"}}}, tool(1), tool(2)]},
    # a sibling maxProperties below a tool's required count (the third tool requires three members)
    "sibling_max_properties": {"maxProperties": 2, "anyOf": [
        tool(0), tool(1), {**tool(2), "properties": {**tool(2)["properties"], "id": {"type": "integer"}},
                           "required": ["name", "arguments", "id"]}]},
    # a nullable tool call (OpenAPI style) whose object requires a false property: only null remains
    "nullable_required_false": {"anyOf": [{**tool(0), "type": ["object", "null"], "properties": {
        "off": False, **tool(0)["properties"]}, "required": ["off", "name"]}, tool(1), tool(2)]},
    # dependentRequired next to the union: only branches that declare the dependent name remain
    "dependent_required": {"dependentRequired": {"arguments": ["id"]}, "anyOf": [
        {**tool(0), "properties": {**tool(0)["properties"], "id": {"type": "integer"}}}, tool(1), tool(2)]},
}
INSTANCES = [call(0), call(1), call(2), call(3), call(0, 2), {**call(0), "id": 5}, {**call(1), "id": 5},
             {"name": "tool_0"}, None]


def _accepts(g, name: str, text: str) -> bool:
    m = Matcher(g)
    try:
        for tid in encode(name, text):
            m.accept_token(tid)
    except TokenRejected:
        return False
    return m.is_accepting()


@pytest.mark.parametrize("case", list(CASES))
def test_valid_calls_pass_and_others_are_refused(case):
    name = "llama3"
    schema = CASES[case]
    g = compile_json_schema(schema, vocab_by_name(name))
    valid = validator_for(schema)
    verdicts = {}
    for inst in INSTANCES:
        text = json.dumps(inst, separators=(",", ":"))
        verdicts[text] = valid.is_valid(inst)
        assert _accepts(g, name, text) == verdicts[text], f"{case}: {text}"
    assert any(verdicts.values()) and not all(verdicts.values())


@pytest.mark.parametrize("case", list(CASES))
def test_masks_along_valid_calls_are_exact(case):
    name = "qwen3"
    schema = CASES[case]
    v = vocab_by_name(name)
    g = compile_json_schema(schema, v)
    table = token_table(v)
    valid = validator_for(schema)
    for inst in INSTANCES:
        if not valid.is_valid(inst):
            continue
        m = Matcher(g)
        for tid in encode(name, json.dumps(inst)):
            assert np.array_equal(np.sort(m.allowed_ids()), np.sort(reference_allowed_ids(g, table, m.state)))
            m.accept_token(tid)
        assert m.is_accepting()


def test_an_object_whose_required_member_admits_no_value_is_still_refused():
    """Alone (not a branch) the object admits no value: the error names its ``required`` and the member."""
    schema = {"type": "object", "properties": {"name": {"const": "a", "type": "integer"}}, "required": ["name"]}
    with pytest.raises(SchemaError, match="required property 'name'") as info:
        compile_json_schema(schema, vocab_by_name("mini"))
    assert "admits no value" in info.value.message and info.value.pointer == "/required"


def test_an_optional_member_that_admits_no_value_still_fails_loudly():
    """Only a required member empties its object; an optional one keeps its own error and place."""
    schema = {"anyOf": [{"type": "object", "properties": {"name": {"const": "a", "type": "integer"}}}, tool(1)]}
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, vocab_by_name("mini"))
    assert info.value.pointer == "/anyOf/0/properties/name"
