"""property_order="any": members in any order, each declared one at most once.

jsonschema is the oracle for validity; the brute-force reference for masks is
the byte-by-byte automaton walk of every token.
"""

from __future__ import annotations

import itertools
import json
import random

import jsonschema
import numpy as np
import pytest

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import SchemaError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary

SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 3}, "c": {"type": "boolean"},
                   "d": {"enum": ["x", "y"]}},
    "required": ["a", "c"],
    "additionalProperties": {"type": "null"},
}
VALUES = {"a": [1, -7, "s"], "b": ["xy", "long!"], "c": [True], "d": ["x", "z"], "zz": [None, 3], "yy": [None]}


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _objects():
    rng = random.Random(7)
    keys = list(VALUES)
    for n in range(0, len(keys) + 1):
        for combo in itertools.combinations(keys, n):
            for _ in range(2):
                perm = list(combo)
                rng.shuffle(perm)
                yield {k: rng.choice(VALUES[k]) for k in perm}


@pytest.mark.parametrize("strict", [True, False])
def test_any_order_accepts_exactly_the_valid_objects(vocab, strict):
    g = compile_json_schema(SCHEMA, vocab, SchemaOptions(property_order="any", strict_objects=strict))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    checked = 0
    for obj in _objects():
        for text in (json.dumps(obj), json.dumps(obj, separators=(",", ":"))):
            assert g.automaton.matches(text.encode()) == validator.is_valid(obj), text
            checked += 1
    assert checked > 200


def test_duplicate_declared_key_refused(vocab):
    g = compile_json_schema(SCHEMA, vocab, SchemaOptions(property_order="any"))
    assert g.automaton.matches(b'{"c":true,"a":1}')
    assert not g.automaton.matches(b'{"a":1,"c":true,"a":2}')


@pytest.mark.parametrize("bounds", [(2, 3), (0, 1), (3, None)])
def test_any_order_min_max_properties(vocab, bounds):
    lo, hi = bounds
    schema = {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "minProperties": lo}
    if hi is not None:
        schema["maxProperties"] = hi
    options = SchemaOptions(property_order="any", strict_objects=False)
    if lo >= 2:
        # free keys could fake the count with a duplicate key: refused, and exact once closed
        with pytest.raises(SchemaError, match="minProperties"):
            compile_json_schema(schema, vocab, options)
        schema["additionalProperties"] = False
    g = compile_json_schema(schema, vocab, options)
    validator = jsonschema.Draft202012Validator(schema)
    for obj in ({}, {"a": 1}, {"b": 1, "a": 2}, {"x": 1, "y": 2}, {"x": 1, "y": 2, "a": 3, "b": 4}, {"b": 0},
                {"c": 1, "b": 2, "a": 3}):
        assert g.automaton.matches(json.dumps(obj).encode()) == validator.is_valid(obj), obj


def test_any_order_masks_match_bruteforce(vocab):
    g = compile_json_schema(SCHEMA, vocab, SchemaOptions(property_order="any", max_whitespace=2))
    tb = vocab.token_bytes
    text_ids = [i for i, b in enumerate(tb) if b and i not in vocab.special_ids]
    rng = np.random.default_rng(3)
    states = 0
    for _walk in range(6):
        m = Matcher(g)
        for _step in range(25):
            allowed = m.allowed_ids()
            assert allowed.size
            ref = {i for i in text_ids if g.automaton.walk(m.state, tb[i]) >= 0}
            fast = {int(i) for i in allowed if int(i) not in vocab.end_ids}
            assert fast == ref, m.state
            states += 1
            choice = int(rng.choice(allowed))
            if choice in vocab.end_ids:
                break
            m.accept_token(choice)
    assert states >= 30


def test_any_order_min_properties_with_a_recursive_optional_member(vocab):
    # min_members can be met by the shallow member "v"; taking the deepest choice (the recursive
    # "n") made the whole object look unfinishable: the schema raised "admits no value" or, one
    # level down, refused {"n": {"v": 2}}
    node = {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"n": {"$ref": "#/$defs/node"}, "v": {"type": "integer"}}}
    opts = SchemaOptions(property_order="any", strict_objects=False)
    for schema in ({"$defs": {"node": node}, "$ref": "#/$defs/node"},
                   {"$defs": {"node": node}, "type": "object", "properties": {"n": {"$ref": "#/$defs/node"}}}):
        g = compile_json_schema(schema, vocab, opts)
        check = jsonschema.Draft202012Validator(schema)
        for value in ({"v": 2}, {"n": {"v": 2}}, {"v": 1, "n": {"n": {"v": 3}}}, {"n": {}}, {}, {"n": {"n": {}}}):
            text = json.dumps(value, separators=(",", ":")).encode()
            end = g.automaton.walk(Matcher(g).state, text)
            assert (end >= 0 and g.automaton.is_accepting(end)) == check.is_valid(value), (schema, value)
