"""Drafts 4, 6, 7, 2019-09 and 2020-12: each read with its own spellings.

The validity oracle is ``jsonschema`` with the validator class the schema's ``$schema`` names.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from enforcer_oracle import generate, validator_for

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.compile.schema.drafts import choose_draft, draft_of_uri
from exl2_enforcer.errors import SchemaError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.tokens.vocabulary import default_vocabulary

D4 = "http://json-schema.org/draft-04/schema#"
D6 = "http://json-schema.org/draft-06/schema#"
D7 = "http://json-schema.org/draft-07/schema#"
D2019 = "https://json-schema.org/draft/2019-09/schema"
SPEC = SchemaOptions(strict_objects=False, escapes="all", property_order="any", integral_fractions=True)


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _accepts(g, text: str) -> bool:
    return g.automaton.matches(text.encode())


def _fresh(schema):
    # the grammar cache is keyed by the schema text: a tag keeps tests independent
    return {**schema, "$comment": "test_drafts"}


@pytest.mark.parametrize("uri,draft", [(D4, "4"), ("http://json-schema.org/draft-04/schema", "4"), (D6, "6"),
                                       (D7, "7"), ("https://json-schema.org/draft-07/schema", "7"),
                                       (D2019, "2019-09"), ("https://json-schema.org/draft/2020-12/schema#",
                                                            "2020-12"), ("http://example.com/meta", None)])
def test_meta_schema_uris(uri, draft):
    assert draft_of_uri(uri) == draft


def test_draft4_boolean_exclusive_bounds(vocab):
    schema = {"$schema": D4, "type": "integer", "minimum": 1, "exclusiveMinimum": True,
              "maximum": 5, "exclusiveMaximum": True}
    g = compile_json_schema(schema, vocab, SPEC)
    assert [n for n in range(-1, 8) if _accepts(g, str(n))] == [2, 3, 4]


def test_draft4_false_exclusive_is_inclusive(vocab):
    g = compile_json_schema({"$schema": D4, "type": "integer", "maximum": 3, "exclusiveMaximum": False}, vocab, SPEC)
    assert _accepts(g, "3") and not _accepts(g, "4")


def test_draft4_const_is_an_unknown_keyword(vocab):
    # draft 4 has no const: the keyword is an annotation there
    g = compile_json_schema({"$schema": D4, "type": "integer", "const": 3}, vocab, SPEC)
    assert _accepts(g, "4")
    g = compile_json_schema({"$schema": D6, "type": "integer", "const": 3}, vocab, SPEC)
    assert _accepts(g, "3") and not _accepts(g, "4")


def test_draft4_id_and_definitions(vocab):
    schema = {"$schema": D4, "id": "http://example.com/root.json", "type": "object",
              "properties": {"a": {"$ref": "#/definitions/small"}}, "required": ["a"],
              "definitions": {"small": {"type": "integer", "maximum": 9, "exclusiveMaximum": True}}}
    g = compile_json_schema(schema, vocab, SPEC)
    assert _accepts(g, '{"a": 8}') and not _accepts(g, '{"a": 9}')


@pytest.mark.parametrize("meta", [D4, D6, D7])
def test_ref_overrides_siblings_before_2019(vocab, meta):
    schema = {"$schema": meta, "definitions": {"s": {"type": "string"}},
              "properties": {"a": {"$ref": "#/definitions/s", "maxLength": 1}}}
    g = compile_json_schema(schema, vocab, SPEC)
    assert _accepts(g, '{"a": "long"}')


def test_ref_siblings_apply_in_2019(vocab):
    schema = {"$schema": D2019, "$defs": {"s": {"type": "string"}},
              "properties": {"a": {"$ref": "#/$defs/s", "maxLength": 1}}}
    g = compile_json_schema(schema, vocab, SPEC)
    assert _accepts(g, '{"a": "x"}') and not _accepts(g, '{"a": "long"}')


def test_2019_array_items_are_a_tuple(vocab):
    schema = {"$schema": D2019, "type": "array", "items": [{"type": "integer"}], "additionalItems": False}
    g = compile_json_schema(schema, vocab, SPEC)
    assert _accepts(g, "[1]") and not _accepts(g, "[1, 2]") and not _accepts(g, '["x"]')


@pytest.mark.parametrize("meta", [D4, D6, D7])
def test_dependencies(vocab, meta):
    schema = {"$schema": meta, "type": "object", "properties": {"a": {}, "b": {}, "c": {"type": "integer"}},
              "dependencies": {"a": ["b"], "b": {"required": ["c"]}}}
    g = compile_json_schema(schema, vocab, SPEC)
    check = validator_for(schema)
    for text in ['{}', '{"a": 1}', '{"b": 1}', '{"a": 1, "b": 1, "c": 2}', '{"b": 2, "c": 1}', '{"c": 1}',
                 '{"a": 1, "b": 1}', '{"b": 1, "c": "x"}']:
        import json
        assert _accepts(g, text) == check.is_valid(json.loads(text)), text


def test_no_schema_boolean_exclusive_is_read_as_draft4(vocab):
    schema = {"type": "number", "maximum": 2, "exclusiveMaximum": True}
    draft, notes = choose_draft(schema)
    assert draft == "4" and notes and "draft 4" in notes[0]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        g = compile_json_schema(schema, vocab, SPEC)
    assert any("draft 4" in w for w in g.warnings)
    assert _accepts(g, "1.5") and not _accepts(g, "2")


def test_unknown_meta_schema_is_refused(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"$schema": "http://example.com/meta", "type": "string"}, vocab)
    assert info.value.pointer == "/$schema"


def test_draft4_meta_schema_error_names_the_place(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"$schema": D4, "properties": {"a": {"type": "strung"}}}, vocab)
    assert info.value.pointer == "/properties/a/type" and "draft 4" in str(info.value)


@pytest.mark.parametrize("meta", [D4, D6, D7, D2019])
def test_generations_validate_in_their_draft(vocab, meta):
    schema = {"$schema": meta, "type": "object",
              "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10},
                             "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
                             "kind": {"enum": ["a", "b"]}},
              "required": ["n", "kind"]}
    g = compile_json_schema(schema, vocab)
    check = validator_for(schema)
    rng = np.random.default_rng(4)
    import json
    for _ in range(4):
        out = generate(g, rng, budget=120)
        assert out.finished
        value = json.loads(out.text)
        assert check.is_valid(value), out.text
