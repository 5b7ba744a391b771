"""Discriminated unions (compile/schema/discriminated.py): objects told apart by their first
member's value are read through one shared prefix and one trie of values.

The language must be exactly the branch-by-branch union's.  Each schema is compiled twice, once
with the factoring and once without it (``MIN_BRANCHES`` raised out of reach), and seeded random
walks over real tokens compare the two grammars' masks step by step; the factored masks are also
checked against the byte-by-byte reference, generated values against ``jsonschema``, and the
configurations per DFA state show that the factoring applied (one per tool, without it).
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from enforcer_oracle import encode, finished_values, reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer.compile.schema import discriminated
from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import SchemaError, TokenRejected
from exl2_enforcer.grammar import GRAMMAR_CACHE, compile_json_schema
from exl2_enforcer.matcher import Matcher


def tool(i: int, first: str = "name") -> dict:
    args = {f"a{i}_{j}": {"type": t} for j, t in enumerate(("string", "integer", "boolean"))}
    return {"type": "object", "properties": {
        first: {"const": f"tool_{i}", "description": f"tool number {i}"},
        "arguments": {"type": "object", "properties": args, "required": list(args), "additionalProperties": False}},
        "required": [first, "arguments"], "additionalProperties": False}


def tools(n: int, key: str = "anyOf") -> dict:
    return {key: [tool(i) for i in range(n)]}


CASES = {
    "tools": tools(12),
    "tools_oneOf": tools(8, "oneOf"),
    # several values per branch, a value that extends another, escapes and non-ASCII in values
    "enums": {"anyOf": [
        {"type": "object", "properties": {"kind": {"enum": ["a", "ab"]}, "x": {"type": "integer"}},
         "required": ["kind", "x"]},
        {"type": "object", "properties": {"kind": {"type": "string", "enum": ["abc", 'q"uote']},
                                          "y": {"type": "string", "maxLength": 3}}, "required": ["kind"]},
        {"type": "object", "properties": {"kind": {"const": "é\\n"}, "z": {"type": "boolean"}},
         "required": ["kind", "z"], "additionalProperties": False}]},
    # booleans and null as the told-apart value, open objects, a required undeclared name
    "scalars": {"oneOf": [
        {"type": "object", "properties": {"ok": {"const": True}, "data": {"type": "string"}}, "required": ["ok"]},
        {"type": "object", "properties": {"ok": {"const": False}, "error": {"type": "string"}},
         "required": ["ok", "error"], "additionalProperties": False},
        {"type": "object", "properties": {"ok": {"const": None}}, "required": ["ok", "retry"]}]},
    # pydantic style: branches are bare $refs into $defs, the union itself is an array's items
    "refs": {"$defs": {f"T{i}": tool(i, first="type") for i in range(4)},
             "type": "array", "maxItems": 3, "items": {"oneOf": [{"$ref": f"#/$defs/T{i}"} for i in range(4)]}},
    # pydantic's discriminated union: an OpenAPI "discriminator" next to oneOf of $refs, typed consts
    "pydantic": {"$defs": {n: {"properties": {
        "pet_type": {"const": n.lower(), "title": "Pet Type", "type": "string"},
        "name": {"title": "Name", "type": "string", "maxLength": 12}}, "required": ["pet_type", "name"],
        "title": n, "type": "object"} for n in ("Cat", "Dog", "Lizard")},
        "properties": {"pet": {"discriminator": {"propertyName": "pet_type", "mapping": {
            "cat": "#/$defs/Cat", "dog": "#/$defs/Dog", "lizard": "#/$defs/Lizard"}},
            "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}, {"$ref": "#/$defs/Lizard"}], "title": "Pet"}},
        "required": ["pet"], "title": "Model", "type": "object"},
    # a tool list restricted to the tools allowed this turn: the others' names admit nothing
    "restricted": {"anyOf": tools(12)["anyOf"], "properties": {"name": {"enum": ["tool_1", "tool_3", "tool_5"]}}},
    # not told apart by the first member (an optional first property): stays branch by branch
    "optional_first": {"anyOf": [
        {"type": "object", "properties": {"name": {"const": f"t{i}"}, "v": {"type": "integer"}}, "required": ["v"]}
        for i in range(4)]},
}


def _grammar(schema: dict, vocab, factored: bool, monkeypatch, options: SchemaOptions | None = None):
    monkeypatch.setattr(discriminated, "MIN_BRANCHES", discriminated.MIN_BRANCHES if factored else 10**9)
    GRAMMAR_CACHE.clear()
    return compile_json_schema(schema, vocab, options)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ["llama3", "qwen3"])
def test_factored_union_has_the_branch_by_branch_language(case, name, monkeypatch):
    v = vocab_by_name(name)
    schema = CASES[case]
    built = []
    build = discriminated._build
    monkeypatch.setattr(discriminated, "_build", lambda *args: built.append(1) or build(*args))
    fast = _grammar(schema, v, True, monkeypatch)
    assert len(built) == (0 if case == "optional_first" else 1)  # the factoring applied where it should
    slow = _grammar(schema, v, False, monkeypatch)
    table = token_table(v)
    ends = list(v.end_ids)
    rng = np.random.default_rng(sum(map(ord, case + name)))
    for walk in range(5):
        a, b = Matcher(fast), Matcher(slow)
        for step in range(60):
            got, want = np.sort(a.allowed_ids()), np.sort(b.allowed_ids())
            assert np.array_equal(got, want), f"{case} walk {walk} step {step}: after {a.text_bytes()!r}"
            if step % 7 == 0:
                assert np.array_equal(got, np.sort(reference_allowed_ids(fast, table, a.state)))
            pool = got[~np.isin(got, ends)]
            if pool.size == 0:
                break
            # mostly short tokens, so walks get deep into the members after the told-apart one
            short = pool[table.token_len[pool] <= 3]
            tid = int(rng.choice(short if short.size and rng.random() < 0.7 else pool))
            a.accept_token(tid)
            b.accept_token(tid)


@pytest.mark.parametrize("case", ["tools", "enums", "scalars", "refs", "pydantic", "restricted"])
def test_generated_values_validate(case, monkeypatch):
    v = vocab_by_name("llama3")
    schema = CASES[case]
    g = _grammar(schema, v, True, monkeypatch)
    values = finished_values(g, np.random.default_rng(7), runs=6, budget=160)
    for value in values:
        jsonschema.validate(value, schema)
    assert len(values) >= 3


def test_one_configuration_until_the_value_is_read(monkeypatch):
    """Without the factoring every state up to the tool's name holds one configuration per tool."""
    v = vocab_by_name("llama3")
    prefix = encode("llama3", '{"name": "tool_')
    configs = {}
    for factored in (True, False):
        g = _grammar(tools(40), v, factored, monkeypatch)
        m = Matcher(g)
        widest = 0
        for tid in prefix:
            widest = max(widest, len(g.automaton.states[m.state].configs))
            m.accept_token(tid)
        configs[factored] = widest
    assert configs[False] >= 40
    assert configs[True] <= 3


def test_a_call_mixing_two_tools_is_refused(monkeypatch):
    v = vocab_by_name("llama3")
    g = _grammar(tools(12), v, True, monkeypatch)
    good = {"name": "tool_7", "arguments": {"a7_0": "x", "a7_1": 1, "a7_2": True}}
    m = Matcher(g)
    for tid in encode("llama3", json.dumps(good)):
        m.accept_token(tid)
    assert m.is_accepting()
    bad = json.dumps({"name": "tool_7", "arguments": {"a3_0": "x", "a3_1": 1, "a3_2": True}})
    m = Matcher(g)
    with pytest.raises(TokenRejected):
        for tid in encode("llama3", bad):
            m.accept_token(tid)


def test_any_order_objects_stay_branch_by_branch(monkeypatch):
    """With members in any order the told-apart member need not come first: no factoring."""
    v = vocab_by_name("llama3")
    g = _grammar(tools(6), v, True, monkeypatch, SchemaOptions(property_order="any"))
    m = Matcher(g)
    call = {"arguments": {"a2_0": "x", "a2_1": 1, "a2_2": False}, "name": "tool_2"}
    for tid in encode("llama3", json.dumps(call)):
        m.accept_token(tid)
    assert m.is_accepting()


@pytest.mark.parametrize("options", [
    SchemaOptions(strict_objects=False), SchemaOptions(max_whitespace=0), SchemaOptions(max_depth=3),
    SchemaOptions(escapes="all")], ids=["open_objects", "no_whitespace", "shallow", "all_escapes"])
def test_options_keep_the_language(options, monkeypatch):
    """Options that change objects, whitespace, depth or spellings: still the branch-by-branch language."""
    v = vocab_by_name("llama3")
    schema = {"type": "array", "items": CASES["enums"], "maxItems": 2}
    fast = _grammar(schema, v, True, monkeypatch, options)
    slow = _grammar(schema, v, False, monkeypatch, options)
    rng = np.random.default_rng(11)
    ends = list(v.end_ids)
    for _walk in range(5):
        a, b = Matcher(fast), Matcher(slow)
        for _step in range(50):
            got, want = np.sort(a.allowed_ids()), np.sort(b.allowed_ids())
            assert np.array_equal(got, want), f"after {a.text_bytes()!r}"
            pool = got[~np.isin(got, ends)]
            if pool.size == 0:
                break
            tid = int(rng.choice(pool))
            a.accept_token(tid)
            b.accept_token(tid)


def test_a_lone_surrogate_name_is_refused_naming_its_place(monkeypatch):
    """No UTF-8 output spells a lone surrogate: a SchemaError at the tool's name, not a crash."""
    schema = {"anyOf": [tool(i) for i in range(3)]}
    schema["anyOf"][1]["properties"]["name"] = {"const": "tool_\ud800"}
    with pytest.raises(SchemaError, match="lone surrogate") as info:
        _grammar(schema, vocab_by_name("mini"), True, monkeypatch)
    assert info.value.pointer == "/anyOf/1/properties/name"
