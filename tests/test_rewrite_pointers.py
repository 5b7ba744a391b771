"""Errors and warnings name places that exist in the user's schema, also when the compiler rewrote it.

The compiler rewrites ``not`` and ``if``/``then``/``else`` as ``anyOf``, merges ``allOf`` branches
and ``$ref`` targets with their siblings, reads drafts 4-7's ``dependencies`` as
``dependentSchemas``, and gathers the values of ``anyOf`` branches that only list values into one
``enum``.  A pointer built along such a rewritten form (``/allOf/0/anyOf``, ``/anyOf/0/pattern``)
names nothing in the user's document; each case here checks that the reported pointer resolves in
the schema as given (by an independent resolver) and is the place a reader would name.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import referencing
from enforcer_oracle import assert_values_match_jsonschema, encode, vocab_by_name

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import SchemaError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary

LOOKAHEAD = "(?=a)b"  # valid ECMA-262, refused by this engine: an error at the pattern's place


def resolve(document: Any, pointer: str) -> Any:
    """RFC 6901 resolution; KeyError/IndexError when ``pointer`` names nothing in ``document``."""
    node = document
    for token in pointer.split("/")[1:] if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            if not token.isdigit():
                raise KeyError(token)
            node = node[int(token)]
        elif isinstance(node, dict):
            node = node[token]
        else:
            raise KeyError(token)
    return node


@pytest.fixture(scope="module")
def mini():
    return default_vocabulary()


def _error(schema: Any, vocab, **options: Any) -> SchemaError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SchemaError) as info:
            compile_json_schema({**schema, "$comment": "uncached"}, vocab, SchemaOptions(**options))
    return info.value


# (id, schema, the place a reader names)
REWRITTEN = [
    ("not-next-to-anyOf", {"anyOf": [{"type": "string", "pattern": LOOKAHEAD}, {"type": "integer"}],
                           "not": {"const": 5}}, "/anyOf/0/pattern"),
    ("not-with-several-complements", {"properties": {"a": {"type": "string", "pattern": LOOKAHEAD}},
                                      "not": {"type": "array", "minItems": 1}}, "/properties/a/pattern"),
    ("if-then", {"if": {"type": "string"}, "then": {"pattern": LOOKAHEAD}}, "/then/pattern"),
    ("if-else", {"if": {"type": "string"}, "else": {"properties": {"x": {"type": "string", "pattern": LOOKAHEAD}}}},
     "/else/properties/x/pattern"),
    ("allOf-members", {"allOf": [{"properties": {"a": {"type": "string"}}},
                                 {"properties": {"a": {"pattern": LOOKAHEAD}}}]}, "/allOf/1/properties/a/pattern"),
    ("allOf-of-two-anyOf", {"allOf": [{"anyOf": [{"type": "string", "pattern": LOOKAHEAD}, {"type": "null"}]},
                                      {"anyOf": [{"type": "string"}, {"type": "integer"}]}]},
     "/allOf/0/anyOf/0/pattern"),
    ("ref-target-merged-with-siblings", {"$defs": {"t": {"type": "object", "properties": {
        "b": {"type": "string", "pattern": LOOKAHEAD}}}}, "$ref": "#/$defs/t", "required": ["b"]},
     "/$defs/t/properties/b/pattern"),
    ("ref-to-anchor", {"$defs": {"t": {"$anchor": "tt", "type": "string", "pattern": LOOKAHEAD}},
                       "properties": {"a": {"$ref": "#tt"}}}, "/$defs/t/pattern"),
    ("ref-to-root", {"properties": {"a": {"$ref": "#"}, "b": {"type": "string", "pattern": LOOKAHEAD}}},
     "/properties/b/pattern"),
    ("draft7-dependencies", {"$schema": "http://json-schema.org/draft-07/schema#", "dependencies": {
        "a": {"properties": {"b": {"type": "string", "pattern": LOOKAHEAD}}}}}, "/dependencies/a/properties/b/pattern"),
    ("dependentSchemas", {"dependentSchemas": {"a": {"properties": {"b": {"type": "string", "pattern": LOOKAHEAD}}}}},
     "/dependentSchemas/a/properties/b/pattern"),
    ("unevaluatedProperties", {"allOf": [{"properties": {"a": {"type": "string", "pattern": LOOKAHEAD}}}],
                               "unevaluatedProperties": False}, "/allOf/0/properties/a/pattern"),
    ("listed-values-of-anyOf", {"anyOf": [{"const": 1}, {"enum": [2, float("nan")]}]}, "/anyOf/1/enum/1"),
    ("listed-values-of-oneOf", {"oneOf": [{"const": "x"}, {"title": "t", "const": float("inf")}]}, "/oneOf/1/const"),
]


@pytest.mark.parametrize("schema,place", [(s, p) for _, s, p in REWRITTEN], ids=[i for i, _, _ in REWRITTEN])
def test_errors_in_rewritten_schemas_name_the_users_place(mini, schema, place):
    error = _error(schema, mini)
    resolve(schema, error.pointer)  # exists in the schema as given
    assert error.pointer == place, str(error)
    assert (place or "/") in str(error)


def test_every_rewrite_error_pointer_resolves(mini):
    """Rewrites that meet an error where no single place is to blame still name an existing one."""
    cases = [
        {"type": "string", "pattern": LOOKAHEAD, "not": {"maxLength": 3}},
        {"anyOf": [{"type": "string"}, {"type": "integer"}], "if": {"type": "string"}, "then": {"pattern": LOOKAHEAD}},
        {"type": "object", "properties": {"ab": {"type": "string"}},
         "patternProperties": {"^a": {"pattern": LOOKAHEAD}}},
        {"anyOf": [{"properties": {"a": {"not": {"enum": [[1]]}}}}], "not": {"type": "null"}},
        {"allOf": [{"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 2}]},
                   {"oneOf": [{"type": "integer"}]}]},
    ]
    for schema in cases:
        resolve(schema, _error(schema, mini).pointer)


def test_remote_target_is_named_by_the_ref_that_leads_there(mini):
    remote = referencing.Resource.from_contents({"type": "string", "pattern": LOOKAHEAD},
                                                default_specification=referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource("http://example.com/s.json", remote)
    schema = {"properties": {"a": {"$ref": "http://example.com/s.json"}}}
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, mini, registry=registry)
    assert info.value.pointer == "/properties/a/$ref"


@pytest.mark.parametrize("schema,place", [
    ({"allOf": [{"type": "string", "maxLenght": 3}]}, "/allOf/0/maxLenght"),
    ({"anyOf": [{"type": "string", "maxLenght": 3}, {"type": "integer"}], "not": {"const": 5}}, "/anyOf/0/maxLenght"),
    ({"if": {"type": "string"}, "then": {"format": "phone"}}, "/then/format"),
], ids=["misspelled-in-allOf", "misspelled-next-to-not", "annotation-format-in-then"])
def test_warnings_name_the_users_place(mini, schema, place):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = compile_json_schema(schema, mini)
    assert g.warnings and all(f" at {place}" in w for w in g.warnings), g.warnings


VALUES = [None, True, 0, 7, -3, 2.5, "", "a", "ab", "abc", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("schema", [
    {"anyOf": [{"const": "a"}, {"type": "integer"}], "not": {"const": "a"}},
    {"allOf": [{"anyOf": [{"type": "string"}, {"type": "integer"}]},
               {"anyOf": [{"type": "integer"}, {"type": "null"}]}]},
    {"allOf": [{"oneOf": [{"type": "string"}, {"type": "integer"}]},
               {"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}]},
    {"anyOf": [{"type": "string"}, {"minimum": 3}], "if": {"type": "string"}, "then": {"maxLength": 1},
     "else": {"type": "integer"}},
], ids=["reported-not-next-to-anyOf", "anyOf-and-anyOf", "oneOf-and-oneOf", "if-next-to-anyOf"])
def test_two_alternative_lists_combine_exactly(mini, schema):
    """Once refused ("allOf with two different 'anyOf' values"): each branch of one list is
    combined with the whole other list, so the language is exactly the schema's."""
    g = compile_json_schema(schema, mini, SchemaOptions(strict_objects=False, integral_fractions=True))
    assert_values_match_jsonschema(g, schema, VALUES, schema)


def test_reported_schema_admits_every_integer_token_by_token():
    """``{"anyOf": [{"const": "a"}, {"type": "integer"}], "not": {"const": "a"}}`` is the integers."""
    vocab = vocab_by_name("llama3")
    g = compile_json_schema({"anyOf": [{"const": "a"}, {"type": "integer"}], "not": {"const": "a"}}, vocab)
    m = Matcher(g)
    for tid in encode("llama3", "-1234"):
        m.accept_token(tid)
    assert m.is_accepting()
    m = Matcher(g)
    assert not all(m.try_accept(t) for t in encode("llama3", '"a"'))


def test_compile_budget_error_inside_a_rewrite_names_an_existing_place(mini):
    """The budget names the subschema being compiled, which may be a rewritten one."""
    schema = {"if": {"type": "string"}, "then": {"properties": {"a": {"type": "string", "maxLength": 9}}},
              "else": {"type": "array", "items": {"enum": [f"v{i}" for i in range(300)]}}}
    error = _error(schema, mini, max_nfa_states=40)
    assert "max_nfa_states" in str(error)
    resolve(schema, error.pointer)


def test_a_subschema_object_shared_by_two_places_is_named_where_it_is_reached(mini):
    """A Python-built schema may hold one dict at two places; a $ref names the place it points to."""
    shared = {"type": "string", "pattern": LOOKAHEAD}
    schema = {"properties": {"y": {"type": "object", "properties": {"z": shared}}, "x": {"$ref": "#/$defs/a"}},
              "$defs": {"a": shared}}
    assert _error(schema, mini).pointer == "/properties/y/properties/z/pattern"
    schema = {"properties": {"x": {"$ref": "#/$defs/a"}, "y": {"type": "object", "properties": {"z": shared}}},
              "$defs": {"a": shared}}
    assert _error(schema, mini).pointer == "/$defs/a/pattern"


def test_every_refused_suite_schema_names_an_existing_place():
    """Held-out shapes: each schema of the official JSON-Schema-Test-Suite that the engine refuses
    (every draft) names a place in that schema (some named remote meta-schema paths or merged
    ``allOf``/``not`` forms)."""
    from tests.conformance import harness

    if not harness.SUITE.is_dir():
        pytest.skip("the JSON-Schema-Test-Suite is not checked out under tests/conformance/suite")
    refused = 0
    for draft_dir, spec, uri in harness.DRAFTS.values():
        registry = harness.load_registry(spec)
        for _kind, name, path in harness.suite_files(draft_dir, True):
            for i, group in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                schema = harness.prepare_schema(group["schema"], uri)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        compile_json_schema(schema, default_vocabulary(), harness.OPTIONS, registry=registry)
                    except SchemaError as e:
                        refused += 1
                        try:
                            resolve(schema, e.pointer)
                        except (KeyError, IndexError):
                            pytest.fail(f"{draft_dir}/{name} group {i}: {e}")
    assert refused > 100
