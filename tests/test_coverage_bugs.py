"""One test per coverage bug kind (issue 12), plus the JSON schemas Pydantic v2 emits.

Oracle: ``jsonschema`` with format checking (``enforcer_oracle.validator_for``); texts are checked
at the byte level (``automaton.matches``) and generations sampled through the token masks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from enforcer_oracle import finished_values, generate, validator_for

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, SchemaError
from exl2_enforcer.grammar import (
    compile_choice,
    compile_json_schema,
    compile_regex_constraint,
)
from exl2_enforcer.tokens.vocabulary import default_vocabulary

SPEC = SchemaOptions(strict_objects=False, escapes="all", property_order="any", integral_fractions=True)


@pytest.fixture(scope="module")
def vocab():
    return default_vocabulary()


def _ok(g, text: str) -> bool:
    return g.automaton.matches(text.encode())


# -- duplicate keys -------------------------------------------------------------------------

def test_min_properties_with_free_keys_is_refused(vocab):
    """{"x": 1, "x": 2} is one property: free keys could fake minProperties, so it is refused."""
    for schema in ({"type": "object", "minProperties": 2},
                   {"type": "object", "properties": {"a": {}}, "additionalProperties": True, "minProperties": 2}):
        with pytest.raises(SchemaError) as info:
            compile_json_schema(schema, vocab)
        assert info.value.pointer == "/minProperties"
    g = compile_json_schema({"type": "object", "minProperties": 1}, vocab)  # one key cannot be a duplicate
    assert _ok(g, '{"x": 1}') and not _ok(g, "{}")


@pytest.mark.parametrize("order", ["schema", "any"])
def test_declared_keys_are_never_written_twice(vocab, order):
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": True,
              "minProperties": 1}
    g = compile_json_schema(schema, vocab, SchemaOptions(property_order=order, escapes="all"))
    assert _ok(g, '{"x": 1}')
    for text in ('{"x": 1, "x": 2}', '{"x": 1, "\\u0078": 2}', '{"\\u0078": 1, "x": "s"}'):
        assert not _ok(g, text), text


# -- required names are declared ------------------------------------------------------------

def test_required_name_without_properties_entry(vocab):
    schema = {"properties": {"a": {}}, "required": ["a", "b"]}
    g = compile_json_schema(schema, vocab)
    assert _ok(g, '{"a": 1, "b": [2]}')
    assert not _ok(g, '{"a": 1}')
    assert not _ok(g, '{"a": 1, "b": 2, "c": 3}')  # still closed to other names by default
    check = validator_for(schema)
    rng = np.random.default_rng(1)
    for _ in range(3):
        out = generate(g, rng, budget=80)
        assert out.finished and check.is_valid(json.loads(out.text)), out.text


def test_required_name_refused_by_explicit_false(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"type": "object", "properties": {"a": {}}, "required": ["b"],
                             "additionalProperties": False}, vocab)
    assert info.value.pointer == "/required"
    # without "type" only objects are excluded: every other value is valid (required applies to objects)
    schema = {"properties": {"a": {}}, "required": ["b"], "additionalProperties": False}
    g = compile_json_schema(schema, vocab)
    check = validator_for(schema)
    for text in ('1', '"x"', "null", "[]", "{}", '{"b": 1}', '{"a": 1}'):
        assert _ok(g, text) == check.is_valid(json.loads(text)), text


# -- keywords apply to their own type only ---------------------------------------------------

@pytest.mark.parametrize("schema,valid,invalid", [
    ({"pattern": "^[a-z]+$"}, ["5", "null", "true", '"ab"', "[]", "{}"], ['"AB"']),
    ({"maxLength": 3}, ["5", "null", "true", '"abc"'], ['"abcd"']),
    ({"minimum": 3}, ['"x"', "null", "5"], ["2"]),
    ({"minItems": 1}, ["{}", "5", "[1]"], ["[]"]),
    ({"required": ["a"]}, ["[]", "5", '"s"', '{"a": 1}'], ["{}"]),
])
def test_type_less_keywords_constrain_their_type_only(vocab, schema, valid, invalid):
    for options in (SchemaOptions(), SPEC):
        g = compile_json_schema(schema, vocab, options)
        for text in valid:
            assert _ok(g, text), (schema, text)
        for text in invalid:
            assert not _ok(g, text), (schema, text)


# -- ECMA-262 patterns ------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,valid,invalid", [
    (r"^\p{L}+$", ["é", "abc", "Ж"], ["1", "a1", ""]),
    (r"^\P{Lu}$", ["a", "1"], ["A"]),
    (r"^(?<word>a)b$", ["ab"], ["b"]),
    (r"^\u{1F600}$", ["😀"], ["x"]),
    (r"^[^]$", ["x", "\n"], ["", "xy"]),
    (r"^\cJ$", ["\n"], ["J"]),
])
def test_ecma_patterns_are_valid_schemas(vocab, pattern, valid, invalid):
    g = compile_json_schema({"type": "string", "pattern": pattern}, vocab)
    for s in valid:
        assert _ok(g, json.dumps(s)), (pattern, s)
    for s in invalid:
        assert not _ok(g, json.dumps(s)), (pattern, s)


def test_unknown_unicode_property_names_the_pattern(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"properties": {"s": {"type": "string", "pattern": r"\p{Script=Greek}"}}}, vocab)
    assert info.value.pointer == "/properties/s/pattern" and "Script=Greek" in str(info.value)


# -- negative zero -----------------------------------------------------------------------------

def test_negative_zero_is_zero(vocab):
    assert json.dumps(-0.0) == "-0.0"
    for schema, texts in (({"type": "integer"}, ["-0"]), ({"type": "number"}, ["-0", "-0.0"]),
                          ({"type": "number", "minimum": 0}, ["-0.0"]), ({"const": 0}, ["-0", "-0.0"])):
        g = compile_json_schema(schema, vocab, SPEC)
        for text in texts:
            assert _ok(g, text) and validator_for(schema).is_valid(json.loads(text)), (schema, text)
    g = compile_json_schema({"type": "number", "exclusiveMinimum": 0}, vocab)
    assert not _ok(g, "-0.0") and not _ok(g, "0")


# -- constraints that admit nothing, non-JSON values ---------------------------------------------

def test_regex_admitting_nothing_names_the_regex(vocab):
    with pytest.raises(EnforcerError) as info:
        compile_regex_constraint("a[]", vocab)
    assert not isinstance(info.value, SchemaError)
    assert "'a[]'" in str(info.value) and "at /" not in str(info.value)


def test_choice_errors_name_the_parameter(vocab):
    with pytest.raises(EnforcerError, match="choices"):
        compile_choice([], vocab)


@pytest.mark.parametrize("schema,pointer", [({"const": float("nan")}, "/const"),
                                            ({"enum": [1, float("-inf")]}, "/enum/1")])
def test_non_finite_values_are_named(vocab, schema, pointer):
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, vocab)
    assert info.value.pointer == pointer and "not a JSON value" in str(info.value)
    assert "minimum" not in str(info.value)


# -- keyword typos -------------------------------------------------------------------------------

def test_typos_warn_with_did_you_mean(vocab):
    g = compile_json_schema({"type": "object", "properties": {"s": {"type": "string", "maxLenght": 3}},
                             "requried": ["s"]}, vocab)
    text = " | ".join(g.warnings)
    assert "'requried'" in text and "did you mean 'required'" in text
    assert "'maxLenght'" in text and "'maxLength'" in text and "/properties/s/maxLenght" in text
    clean = compile_json_schema({"type": "object", "properties": {"s": {"type": "string"}}, "x-order": 1}, vocab)
    assert clean.warnings == []


def test_typos_can_be_errors(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"type": "object", "requried": ["a"]}, vocab, SchemaOptions(unknown_keywords="error"))
    assert info.value.pointer == "/requried"
    with pytest.raises(EnforcerError, match="unknown_keywords"):
        SchemaOptions(unknown_keywords="loud")


def test_check_cli_reports_typos(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}, "requried": ["a"]}))
    out = subprocess.run([sys.executable, "-m", "exl2_enforcer", "check", str(path)], capture_output=True,
                         check=False, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "supported:  yes" in out.stdout and "did you mean 'required'" in out.stdout
    out = subprocess.run([sys.executable, "-m", "exl2_enforcer", "check", "--unknown-keywords", "error",
                          str(path)], capture_output=True, check=False, text=True, timeout=300)
    assert out.returncode == 2 and "requried" in out.stdout + out.stderr


# -- formats and length -------------------------------------------------------------------------

def test_unknown_formats_are_annotations_with_a_warning(vocab):
    g = compile_json_schema({"type": "string", "format": "url"}, vocab)
    assert _ok(g, '"not a url"') and any("'url'" in w for w in g.warnings)
    with pytest.raises(SchemaError) as info:  # a specified format without a fragment is still refused
        compile_json_schema({"type": "string", "format": "uri-template"}, vocab)
    assert info.value.pointer == "/format"


def test_integer_formats_are_ranges(vocab):
    g = compile_json_schema({"type": "integer", "format": "int32"}, vocab)
    assert _ok(g, str(2**31 - 1)) and _ok(g, str(-2**31)) and not _ok(g, str(2**31))
    g = compile_json_schema({"type": "integer", "format": "int64", "minimum": 5}, vocab)
    assert _ok(g, str(2**63 - 1)) and not _ok(g, str(2**63)) and not _ok(g, "4")
    g = compile_json_schema({"type": "integer", "format": "int32"}, vocab, SchemaOptions(format_assertion=False))
    assert _ok(g, str(2**40))


@pytest.mark.parametrize("schema,valid,invalid", [
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3, "minLength": 2}, ["ab", "abc"], ["a", "abcd", "AB"]),
    ({"type": "string", "pattern": "x", "maxLength": 2}, ["x", "😀x", "xé"], ["éxé", "😀😀x"]),
    ({"type": "string", "format": "email", "maxLength": 12}, ["a@b.com", "abcde@fg.com"], ["abcdef@fg.com"]),
    ({"type": "string", "format": "date", "minLength": 10}, ["2024-02-29"], ["2023-02-29"]),
])
def test_pattern_and_format_with_length(vocab, schema, valid, invalid):
    g = compile_json_schema(schema, vocab, SchemaOptions(escapes="all"))
    check = validator_for(schema)
    for s in valid:
        assert check.is_valid(s) and _ok(g, json.dumps(s)), s
        assert _ok(g, json.dumps(s, ensure_ascii=True)), s  # escapes count as one character
    for s in invalid:
        assert not _ok(g, json.dumps(s)), s


# -- patternProperties ---------------------------------------------------------------------------

def test_pattern_properties_closed_by_default(vocab):
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
              "patternProperties": {"^x-": {"type": "integer"}}}
    g = compile_json_schema(schema, vocab)
    assert _ok(g, '{"id": "a", "x-n": 1}') and not _ok(g, '{"id": "a", "x-n": "s"}')
    assert not _ok(g, '{"id": "a", "y": 1}')
    # spec-open: keys matching no pattern are free, keys matching it are integers; exact both ways
    g = compile_json_schema(schema, vocab, SPEC)
    check = validator_for(schema)
    for value in ({"id": "a", "x-n": 1}, {"id": "a", "x-n": "s"}, {"id": "a", "y": "s"}, {"id": 1},
                  {"id": "a", "x-": [], "z": 1}, {"id": "a", "\u0078-n": "s"}):
        text = json.dumps(value)
        assert _ok(g, text) == check.is_valid(json.loads(text)), text
    assert not _ok(g, '{"id": "a", "\\u0078-n": "s"}')  # an escaped spelling is the same key


def test_pattern_properties_regions(vocab):
    """Keys matching several patterns get every matching schema; declared names keep their own."""
    schema = {"properties": {"foo": {"type": "array", "maxItems": 3}},
              "patternProperties": {"f.o": {"minItems": 2}, "^a": {"type": "integer"}, "o$": {"maxItems": 2}},
              "additionalProperties": {"type": "string"}}
    g = compile_json_schema(schema, vocab, SPEC)
    check = validator_for(schema)
    for value in ({"foo": [1, 2, 3]}, {"foo": [1]}, {"fxo": [1, 2]}, {"fxo": [1, 2, 3]}, {"afo": 1}, {"afo": [1, 2]},
                  {"ao": 1}, {"b": "s"}, {"b": 1}, {"fxoa": "s"}):
        assert _ok(g, json.dumps(value)) == check.is_valid(value), value


# -- Pydantic v2 shapes (written by hand as Pydantic emits them) -----------------------------------

PYDANTIC = {
    "constr": {"properties": {"code": {"maxLength": 8, "minLength": 3, "pattern": "^[A-Z][A-Z0-9]*$",
                                       "title": "Code", "type": "string"}},
               "required": ["code"], "title": "Item", "type": "object"},
    "EmailStr-max_length": {"properties": {"email": {"format": "email", "maxLength": 40, "title": "Email",
                                                     "type": "string"}},
                            "required": ["email"], "title": "User", "type": "object"},
    "Optional": {"properties": {"nickname": {"anyOf": [{"maxLength": 10, "type": "string"}, {"type": "null"}],
                                             "default": None, "title": "Nickname"},
                                "age": {"anyOf": [{"minimum": 0, "type": "integer"}, {"type": "null"}],
                                        "title": "Age"}},
                 "required": ["age"], "title": "Person", "type": "object"},
    "Union-discriminator": {
        "$defs": {"Cat": {"properties": {"kind": {"const": "cat", "title": "Kind", "type": "string"},
                                         "lives": {"title": "Lives", "type": "integer", "maximum": 9}},
                          "required": ["kind", "lives"], "title": "Cat", "type": "object"},
                  "Dog": {"properties": {"kind": {"const": "dog", "title": "Kind", "type": "string"},
                                         "good": {"title": "Good", "type": "boolean"}},
                          "required": ["kind", "good"], "title": "Dog", "type": "object"}},
        "properties": {"pet": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"},
                                                 "propertyName": "kind"},
                               "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}], "title": "Pet"}},
        "required": ["pet"], "title": "Owner", "type": "object"},
    "nested": {
        "$defs": {"Address": {"properties": {"street": {"title": "Street", "type": "string", "maxLength": 20},
                                             "zip": {"pattern": "^[0-9]{5}$", "title": "Zip", "type": "string"}},
                              "required": ["street", "zip"], "title": "Address", "type": "object"}},
        "properties": {"name": {"title": "Name", "type": "string", "maxLength": 12},
                       "home": {"$ref": "#/$defs/Address"},
                       "others": {"items": {"$ref": "#/$defs/Address"}, "title": "Others", "type": "array",
                                  "maxItems": 2}},
        "required": ["name", "home"], "title": "Customer", "type": "object"},
}


@pytest.mark.parametrize("name", list(PYDANTIC))
def test_pydantic_shapes_generate_valid_values(vocab, name):
    schema = PYDANTIC[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: every keyword Pydantic writes is understood
        g = compile_json_schema(schema, vocab)
    assert g.warnings == []
    check = validator_for(schema)
    values = finished_values(g, np.random.default_rng(7), runs=4, budget=200)
    for value in values:
        assert check.is_valid(value), value
    assert len(values) >= 3
