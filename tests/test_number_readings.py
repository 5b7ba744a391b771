"""Numbers past what a double holds exactly (2**53, 1e23, 0.1's neighbours) against the oracle.

The oracle is ``jsonschema`` on ``json.loads`` of the output text: a text without ``.`` is an exact
``int``, one with ``.`` the nearest double.  The engine accepts a text only when that oracle and the
spec's decimal reading (the text's decimal value against the schema's numbers as written) both
accept it (docs/schema-support.md), so each case here checks ``accepted == python and decimal``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from enforcer_oracle import bytes_to_id, encode, token_table, validator_for, vocab_by_name

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import default_vocabulary

TWO53 = 2**53


def decimal_reading(text: str) -> Any:
    """The text's exact value (integral values as ints, so that ``type: integer`` sees them)."""
    v = json.loads(text, parse_float=Decimal)
    if isinstance(v, Decimal) and v == v.to_integral_value():
        return int(v)
    return v


def as_written(schema: Any) -> Any:
    """The schema with each float read as the decimal its JSON text spells (its repr)."""
    return json.loads(json.dumps(schema), parse_float=Decimal)


def expected(schema: Any, text: str) -> bool:
    """What the engine must decide: Python's reading and the decimal one both accept."""
    python = validator_for(schema).is_valid(json.loads(text))
    return python and validator_for(as_written(schema)).is_valid(decimal_reading(text))


def documented_subset(schema: dict[str, Any], text: str) -> bool:
    """The documented refusals: an integer written with a nonzero fraction digit is not
    generated (``integral_fractions`` admits only ``.0``), and with ``multipleOf`` a number
    written with a fraction stays within +-2**53 (docs/schema-support.md)."""
    if "." not in text:
        return True
    if schema.get("type") == "integer" and not text.rstrip("0").endswith("."):
        return False
    return "multipleOf" not in schema or abs(Decimal(text)) <= TWO53


def spellings(v: int | float) -> list[str]:
    """Integer and fraction spellings of ``v``, its neighbours, and texts that round to it."""
    d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
    exact = Decimal(v)  # a float's binary value
    out = set()
    for x in (d, exact, d + 1, d - 1, d + Decimal("0.5"), d - Decimal("0.5"), d + Decimal("1e-20"),
              d - Decimal("1e-20")):
        plain = format(x, "f")
        out.add(plain)
        if "." not in plain:
            out |= {plain + ".0", plain + ".00"}
    return sorted(out)


def _listed_numbers(schema: dict[str, Any]) -> list[Any]:
    return [schema["const"]] if "const" in schema else list(schema["enum"])


LISTED = {
    "const-2**53+1": {"const": TWO53 + 1},
    "const-2**53": {"const": TWO53},
    "const--(2**53+1)": {"const": -(TWO53 + 1)},
    "const-1e23-float": {"const": 1e23},
    "const-10**23-int": {"const": 10**23},
    "enum-big-ints": {"enum": [TWO53 + 1, TWO53 + 3, 2**63 + 1, 10**30 + 7, "x"]},
    "enum-floats": {"enum": [0.1, 1e23, 2.5e-8, 123456789.123456789]},
    "const-object-2**53+1": {"const": {"id": TWO53 + 1}},
    # equal to Python (1e23 == 99999999999999991611392), not as written: neither value hides the other
    "enum-float-and-its-binary-int": {"enum": [1e23, 99999999999999991611392]},
}


@pytest.fixture(scope="module")
def mini():
    return default_vocabulary()


@pytest.mark.parametrize("name", list(LISTED))
def test_listed_numbers_match_the_oracle(mini, name):
    schema = LISTED[name]
    g = compile_json_schema(schema, mini)
    tried = 0
    for value in _listed_numbers(schema):
        inner = value["id"] if isinstance(value, dict) else value
        if isinstance(inner, str):
            continue
        for text in spellings(inner):
            full = f'{{"id": {text}}}' if isinstance(value, dict) else text
            tried += 1
            assert g.automaton.matches(full.encode()) == expected(schema, full), (name, full)
    assert tried


def test_const_beyond_2_53_takes_only_its_integer_spelling(mini):
    """The reported case: 9007199254740993.0 is read as the float 9007199254740992.0."""
    g = compile_json_schema({"const": TWO53 + 1}, mini)
    assert g.automaton.matches(b"9007199254740993")
    assert not g.automaton.matches(b"9007199254740993.0")
    assert not g.automaton.matches(b"9007199254740992.0")


BOUNDS = {
    "exclusiveMaximum-2**53": {"type": "number", "exclusiveMaximum": TWO53},
    "maximum-2**53+3": {"type": "number", "maximum": TWO53 + 3},
    "minimum-2**53+1": {"type": "number", "minimum": TWO53 + 1},
    "exclusiveMinimum-0.1": {"type": "number", "exclusiveMinimum": 0.1},
    "exclusiveMaximum-0.1": {"type": "number", "exclusiveMaximum": 0.1},
    "maximum-1e23": {"type": "number", "maximum": 1e23},
    "minimum--1e23": {"type": "number", "minimum": -1e23},
    "exclusiveMinimum-1e23": {"type": "number", "exclusiveMinimum": 1e23},
    "integer-maximum-1e23": {"type": "integer", "maximum": 1e23},
    "multipleOf-3": {"type": "number", "multipleOf": 3},
    "multipleOf-2-bounded": {"type": "number", "multipleOf": 2, "minimum": TWO53 - 10},
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_bounds_match_the_oracle(mini, name):
    schema = BOUNDS[name]
    g = compile_json_schema(schema, mini, SchemaOptions(integral_fractions=True))
    pivots = [v for k, v in schema.items() if k not in ("type", "multipleOf")] or [TWO53 + 1]
    outcomes = set()
    for pivot in pivots:
        for text in spellings(pivot) + spellings(pivot + 3 if isinstance(pivot, int) else pivot * 1.5):
            want = expected(schema, text) and documented_subset(schema, text)
            outcomes.add(want)
            assert g.automaton.matches(text.encode()) == want, (name, text)
    assert outcomes == {True, False}


def test_exclusive_bound_refuses_what_rounds_onto_it(mini):
    """0.09999999999999999999 is below 0.1, but json.loads reads it as 0.1."""
    g = compile_json_schema({"type": "number", "exclusiveMaximum": 0.1}, mini)
    assert not g.automaton.matches(b"0.09999999999999999999")
    assert g.automaton.matches(b"0.0999999999999999")


def test_integral_fractions_stay_finite(mini):
    """``1000...0.0`` past 1.8e308 reads as inf, which is no integer to jsonschema."""
    g = compile_json_schema({"type": "integer", "minimum": 0}, mini, SchemaOptions(integral_fractions=True))
    huge = "1" + "0" * 400
    assert g.automaton.matches(huge.encode())
    assert not g.automaton.matches((huge + ".0").encode())
    assert g.automaton.matches(b"1" + b"0" * 300 + b".0")


def test_mask_after_an_unrepresentable_const_offers_no_fraction():
    """With the real llama3 vocabulary: after ``9007199254740993`` only an end token is allowed."""
    vocab = vocab_by_name("llama3")
    g = compile_json_schema({"enum": [TWO53 + 1, "a"]}, vocab)
    m = Matcher(g)
    for tid in encode("llama3", "9007199254740993"):
        m.accept_token(tid)
    allowed = m.allowed_ids()
    assert allowed.size and all(int(t) in vocab.end_ids for t in allowed)
    table = token_table(vocab)
    dot = bytes_to_id(table)[b"."]
    assert dot not in set(np.asarray(allowed).tolist())
