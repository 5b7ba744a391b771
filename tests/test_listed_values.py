"""enum/const values are checked like generated ones: depth (``max_depth``) and unsupported formats.

* A listed value that nests deeper than ``max_depth`` could never be written: it is a SchemaError
  at the value's pointer (``/enum/3``), never dropped silently while other values remain.
* A string value reaching a ``format`` the specification defines but this engine lacks (``iri``)
  is refused as a generated string there is (``lenient``: a warning, the format an annotation).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from enforcer_oracle import validator_for
from nfa_walks import plain_matches

from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.errors import SchemaError
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.tokens.vocabulary import default_vocabulary


@pytest.fixture(scope="module")
def mini():
    return default_vocabulary()


def _error(schema: Any, vocab, **options: Any) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, vocab, SchemaOptions(**options))
    return info.value


# -- depth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema,place,keyword", [
    ({"enum": [1, "x", [[[1]]]]}, "/enum/2", "enum"),
    ({"properties": {"a": {"enum": [{"b": {"c": [1]}}, 2]}}}, "/properties/a/enum/0", "enum"),
    ({"const": {"a": [[0]]}}, "/const", "const"),
    ({"anyOf": [{"const": 1}, {"enum": [2, [[["deep"]]]]}]}, "/anyOf/1/enum/1", "enum"),
], ids=["enum", "enum-in-property", "const", "listed-in-anyOf"])
def test_value_deeper_than_max_depth_is_refused_at_its_pointer(mini, schema, place, keyword):
    error = _error(schema, mini, max_depth=2)
    assert error.pointer == place and error.keyword == keyword
    assert "max_depth=2" in str(error)


def test_values_within_max_depth_are_kept(mini):
    g = compile_json_schema({"enum": [[[1]], {"a": [2]}, 3]}, mini, SchemaOptions(max_depth=2))
    for text in (b"[[1]]", b'{"a": [2]}', b"3"):
        assert g.automaton.matches(text), text


# -- formats -------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema,place", [
    ({"const": {"a": "not an iri"}, "properties": {"a": {"format": "iri"}}}, "/properties/a/format"),
    ({"type": "array", "items": {"format": "iri-reference"}, "enum": [["x"], []]}, "/items/format"),
    ({"type": "object", "properties": {"ab": {}}, "propertyNames": {"format": "idn-hostname"}},
     "/propertyNames/format"),
], ids=["const-object-member", "enum-array-item", "propertyNames-declared-name"])
def test_unsupported_format_reaching_a_listed_string_is_refused(mini, schema, place):
    error = _error(schema, mini)
    assert error.pointer == place and error.keyword == "format"
    assert "is not supported" in str(error)


def test_listed_and_generated_strings_follow_one_rule(mini):
    """The generated-string case the docs describe, and its listed twin, name the same place."""
    generated = _error({"properties": {"a": {"type": "string", "format": "iri"}}}, mini)
    listed = _error({"properties": {"a": {"type": "string", "format": "iri"}}, "const": {"a": "x"}}, mini)
    assert (generated.pointer, generated.keyword) == (listed.pointer, listed.keyword) == ("/properties/a/format",
                                                                                          "format")


def test_lenient_treats_it_as_an_annotation_with_a_warning(mini):
    schema = {"const": {"a": "not an iri"}, "properties": {"a": {"format": "iri"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = compile_json_schema(schema, mini, SchemaOptions(lenient=True))
    assert g.automaton.matches(b'{"a": "not an iri"}')
    assert any("'iri' at /properties/a/format" in w for w in g.warnings), g.warnings


@pytest.mark.parametrize("schema,text,asserted", [
    ({"const": {"a": 5}, "properties": {"a": {"format": "iri"}}}, b'{"a": 5}', True),  # formats check strings
    ({"const": {"a": "x"}, "properties": {"a": {"format": "phone"}}}, b'{"a": "x"}', True),  # no spec format
    ({"const": {"a": "x"}, "properties": {"a": {"format": "iri"}}}, b'{"a": "x"}', False),  # annotations only
], ids=["non-string-value", "unspecified-format", "format_assertion-off"])
def test_values_no_unsupported_format_checks_are_kept(mini, schema, text, asserted):
    g = compile_json_schema(schema, mini, SchemaOptions(format_assertion=asserted))
    assert g.automaton.matches(text)


@pytest.mark.parametrize("schema", [
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer", "enum": [1, 2.0, 2.5, -0.0]},
    {"$schema": "http://json-schema.org/draft-04/schema#", "allOf": [{"enum": [1, 3.0]}, {"type": "integer"}]},
    {"$schema": "http://json-schema.org/draft-04/schema#", "enum": [1, 2.0]},
    {"type": "integer", "enum": [1, 2.0, 7]},
    {"type": ["integer", "string"], "const": 4},
    {"type": "number", "enum": [1, 2.0]},
    {"enum": [1, 2.0]},
], ids=["d4-type", "d4-allOf", "d4-no-type", "2020-type", "2020-type-list", "2020-number", "2020-bare"])
def test_listed_integers_are_written_with_a_fraction_only_where_that_is_valid(schema):
    """Draft 4's ``integer`` refuses ``1.0``: a listed integer beside it was still offered as ``1.0``
    (invalid output).  Each text here is accepted exactly when the draft's validator finds it valid,
    except that ``1.0`` beside ``type: integer`` is left out in every draft (``integral_fractions`` is
    off), as it is for a plain ``type: integer``."""
    validator = validator_for(schema)
    nfa, root, _warn = compile_schema(schema, SchemaOptions())
    integer_type = "integer" in str(schema)
    for text in ["1", "1.0", "1.00", "2", "2.0", "3", "3.0", "4", "4.0", "7", "7.0", "2.5", "0", "-0", "0.0", "5"]:
        valid = validator.is_valid(json.loads(text))
        accepted = plain_matches(nfa, root, text.encode())
        if accepted:
            assert valid, text
        elif valid:
            assert integer_type and "." in text, text  # only the fraction spellings beside integer


@pytest.mark.parametrize("draft,fraction_ok", [("http://json-schema.org/draft-04/schema#", False),
                                               ("https://json-schema.org/draft/2020-12/schema", True)])
def test_integral_fractions_follow_the_draft(draft, fraction_ok):
    """``integral_fractions=True`` offers ``1.0`` for ``type: integer`` where the draft counts it as an
    integer (draft 6 on), never in draft 4 (it offered it there: invalid output)."""
    schema = {"$schema": draft, "type": "integer", "minimum": 0, "maximum": 9}
    nfa, root, _warn = compile_schema(schema, SchemaOptions(integral_fractions=True))
    assert validator_for(schema).is_valid(1.0) == fraction_ok
    assert plain_matches(nfa, root, b"1.0") == fraction_ok and plain_matches(nfa, root, b"1")
