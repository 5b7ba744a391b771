"""Cross-check the number automata against jsonschema on many bound combinations."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import pytest
from enforcer_oracle import vocab_by_name
from jsonschema import Draft202012Validator
from nfa_walks import plain_matches

from exl2_enforcer import compile_json_schema
from exl2_enforcer.compile import numbers as N
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.numbers import integer_fragment, number_fragment
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.errors import SchemaError

INT_RE = re.compile(r"-?(0|[1-9][0-9]*)")
INT_FRAC0_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.0+)?")
DEC_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
FULL_RE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")

JUNK = ["-0", "-0.0", "-0.00", "00", "01", "-01", "1.", ".5", "+1", "-", "", ".", "1..2", "1.2.3",
        "1e", "1e+", "e5", "--1", "0x10", " 1", "1 ", "1,0", "1e5", "1E+2", "-2.5e-1", "0e0", "-0e1",
        "1.5E3", "12e-1", "2.0e0", "-1e400", "1e400", "5e-324", "1E", "0.0", "0.00", "3.0", "-3.000"]

KWARGS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
          "exclusiveMaximum": "exclusive_maximum", "multipleOf": "multiple_of"}
MULTIPLES: list[Any] = [*range(1, 51), Decimal("0.5"), Decimal("0.01"), Decimal("0.25"),
                        Decimal("1.5"), Decimal("0.3"), Decimal("0.001")]


# -- helpers ------------------------------------------------------------------------

def build(kind: str, schema: dict[str, Any], *, floats: bool = False, **extra: Any) -> tuple[NFA, Frag]:
    """One NFA per fragment; ``floats`` passes Decimal bounds as Python floats."""
    kw = {KWARGS[k]: (float(v) if floats and isinstance(v, Decimal) else v) for k, v in schema.items()}
    nfa = NFA()
    make = integer_fragment if kind == "integer" else number_fragment
    return nfa, make(nfa, **kw, **extra)


def assert_no_dead_ends(nfa: NFA, frag: Frag) -> None:
    """Every state reachable from the start can still reach the end."""
    seen, todo = {frag.start}, [frag.start]
    back: dict[int, list[int]] = {}
    while todo:
        q = todo.pop()
        for t in [*(dst for _, _, dst in nfa.edges[q]), *nfa.eps[q]]:
            back.setdefault(t, []).append(q)
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert frag.end in seen
    alive, todo = {frag.end}, [frag.end]
    while todo:
        for s in back.get(todo.pop(), []):
            if s not in alive:
                alive.add(s)
                todo.append(s)
    assert seen <= alive, f"dead ends: {sorted(seen - alive)[:10]}"


def json_value(text: str) -> Any:
    """The value jsonschema should see: exact Decimal, int when integral."""
    v = json.loads(text, parse_float=Decimal)
    if isinstance(v, Decimal) and v.is_finite() and v == v.to_integral_value() and abs(v) < 10**50:
        return int(v)
    return v


def oracle(kind: str, schema: dict[str, Any]) -> Callable[[str], bool]:
    """Is ``text`` a JSON number that jsonschema accepts (``-0`` is the value 0)?

    By its decimal value, and, for a schema of ints and floats (what ``json.loads`` makes),
    also as Python reads it: ``json.loads`` rounds a text with a fraction to a double.
    """
    validator = Draft202012Validator({"type": kind, **schema})
    as_python = not any(isinstance(v, Decimal) for v in schema.values())

    def valid(text: str) -> bool:
        v = json.loads(text, parse_float=Decimal)
        by_value = validator.is_valid(json_value(text) if kind == "integer" else v)
        return by_value and (not as_python or validator.is_valid(json.loads(text)))

    return valid


def render(v: Decimal) -> list[str]:
    """A few plain spellings of ``v``: shortest, and with trailing zeros."""
    out = {format(v.normalize(), "f") if v else "0"}
    for places in (1, 3, 4):
        out.add(format(v.quantize(Decimal(1).scaleb(-places)), "f"))
    if v == v.to_integral_value():
        out.add(str(int(v)))
    return sorted(out)


def candidates(rng: random.Random, schema: dict[str, Any]) -> list[str]:
    """All integers in -1200..1200, random decimals, spellings near each bound, junk."""
    out = [str(i) for i in range(-1200, 1201)] + JUNK
    for _ in range(400):
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 4)))
        out.append(f"{rng.choice(['', '-'])}{rng.randint(0, 1200)}.{frac}")
    for key, b in schema.items():
        if key == "multipleOf":
            continue
        b = Decimal(b)
        for delta in ("0", "0.0001", "0.001", "0.01", "0.1", "0.5", "1", "2"):
            for v in (b + Decimal(delta), b - Decimal(delta)):
                out += render(v)
    return out


def check(kind: str, schema: dict[str, Any], rng: random.Random, *, floats: bool = False,
          allow_integral_fraction: bool = False) -> int:
    """Compare the fragment with the oracle; returns how many strings it accepted."""
    extra = {"allow_integral_fraction": True} if allow_integral_fraction else {}
    valid = oracle(kind, schema)
    try:
        nfa, frag = build(kind, schema, floats=floats, **extra)
    except SchemaError:
        assert not any(valid(s) for s in candidates(rng, schema) if DEC_RE.fullmatch(s)), schema
        return 0
    assert_no_dead_ends(nfa, frag)
    exact = INT_FRAC0_RE if allow_integral_fraction else INT_RE if kind == "integer" else DEC_RE
    accepted = 0
    for s in candidates(rng, schema):
        got = plain_matches(nfa, frag, s.encode())
        accepted += got
        if exact.fullmatch(s):
            assert got == valid(s), (kind, schema, s, got)
        elif FULL_RE.fullmatch(s):
            assert not got or valid(s), (kind, schema, s)  # outside the sublanguage: soundness
        else:
            assert not got, (kind, schema, s)
    return accepted


def random_bound(rng: random.Random) -> int | Decimal:
    if rng.random() < 0.5:
        return rng.randint(-1000, 1000)
    places = rng.randint(1, 3)
    return Decimal(rng.randint(-1000 * 10**places, 1000 * 10**places)).scaleb(-places)


def random_schema(rng: random.Random) -> dict[str, Any]:
    """One- or two-sided, inclusive/exclusive/both, sometimes with multipleOf."""
    schema: dict[str, Any] = {}
    lo, hi = sorted([random_bound(rng), random_bound(rng)])
    if rng.random() < 0.1:
        lo, hi = hi, lo  # occasionally empty
    for key_in, key_ex, v in (("minimum", "exclusiveMinimum", lo), ("maximum", "exclusiveMaximum", hi)):
        mode = rng.choice(["none", "incl", "excl", "both"])
        if mode in ("incl", "both"):
            schema[key_in] = v
        if mode in ("excl", "both"):
            schema[key_ex] = v if mode == "excl" else v + rng.choice([-1, 0, 1])
    if rng.random() < 0.4:
        schema["multipleOf"] = rng.choice(MULTIPLES)
    return schema


# -- exhaustive cross-checks ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["integer", "number"])
@pytest.mark.parametrize("seed", range(8))
def test_random_bounds(kind: str, seed: int) -> None:
    rng = random.Random(f"{kind}-{seed}")
    for _ in range(20):
        schema = random_schema(rng)
        check(kind, schema, rng, floats=rng.random() < 0.3)


FIXED: list[dict[str, Any]] = [
    {},
    {"minimum": 0},
    {"exclusiveMinimum": 0},
    {"maximum": 0},
    {"exclusiveMaximum": 0},
    {"minimum": Decimal("1.5")},
    {"minimum": Decimal("1.5"), "exclusiveMaximum": Decimal("2.25")},
    {"minimum": Decimal("-2.25"), "maximum": Decimal("-1.5")},
    {"exclusiveMinimum": Decimal("-0.5"), "exclusiveMaximum": Decimal("0.5")},
    {"minimum": -10**20, "maximum": 10**20},
    {"minimum": 10**20},
    {"exclusiveMaximum": -10**20},
    {"minimum": Decimal("0.001"), "maximum": Decimal("1.999")},
    {"minimum": 3, "maximum": 3},
    {"multipleOf": 7},
    {"multipleOf": Decimal("0.5")},
    {"multipleOf": Decimal("0.01"), "minimum": -5, "maximum": 5},
    {"multipleOf": Decimal("0.3"), "exclusiveMinimum": -100},
    {"multipleOf": 1000, "minimum": -999},
    {"multipleOf": 13, "minimum": -10**20, "maximum": 10**20},
]


@pytest.mark.parametrize("kind", ["integer", "number"])
@pytest.mark.parametrize("schema", FIXED, ids=lambda s: json.dumps(s, default=str))
def test_fixed_bounds(kind: str, schema: dict[str, Any]) -> None:
    assert check(kind, schema, random.Random(0)) > 0


@pytest.mark.parametrize("schema", FIXED[:12] + [{"multipleOf": 2, "maximum": 50}])
def test_integral_fraction(schema: dict[str, Any]) -> None:
    check("integer", schema, random.Random(1), allow_integral_fraction=True)


def test_huge_values_near_bounds() -> None:
    nfa, frag = build("integer", {"minimum": 10**20, "exclusiveMaximum": 10**21})
    for v, ok in ((10**20, True), (10**20 - 1, False), (10**21 - 1, True), (10**21, False), (-10**20, False)):
        assert plain_matches(nfa, frag, str(v).encode()) is ok, v
    nfa, frag = build("number", {"exclusiveMinimum": -10**20})
    # a text with a fraction is a float to Python: those within half a step (8192) of -1e20 read as it
    for text in ("-99999999999999999999.999999999", "-99999999999999991808.0", "-99999999999999991807.9",
                 "-99999999999999983616.5", "-1.5"):
        ok = Decimal(text) > -10**20 and float(text) > -10**20
        assert plain_matches(nfa, frag, text.encode()) is ok, text
    assert plain_matches(nfa, frag, b"-99999999999999999999")  # an int: exact
    assert not plain_matches(nfa, frag, b"-100000000000000000000.0000000001")
    assert not plain_matches(nfa, frag, b"-100000000000000000000")


# -- specific behaviour ----------------------------------------------------------------

def test_unbounded_number_is_full_grammar() -> None:
    nfa, frag = build("number", {})
    assert_no_dead_ends(nfa, frag)
    for s in ["0", "-1", "1.5", "1e5", "1E+5", "-2.5e-10", "0e0", "-0.5E1", "1e400", "-0", "-0.0", "-0e5",
              "-0.00E-1"]:
        assert plain_matches(nfa, frag, s.encode()), s
    for s in ["01", "1.", ".5", "+1", "1e", "e1", "1e+", "-", "-01"]:
        assert not plain_matches(nfa, frag, s.encode()), s


@pytest.mark.parametrize("kind", ["integer", "number"])
@pytest.mark.parametrize("schema,zero_ok", [({"minimum": 0}, True), ({"maximum": 0}, True),
                                            ({"exclusiveMinimum": 0}, False), ({"exclusiveMaximum": 0}, False),
                                            ({"minimum": -3, "maximum": 3}, True), ({"minimum": 1}, False),
                                            ({"multipleOf": 7}, True)])
def test_negative_zero_is_zero(kind: str, schema: dict[str, Any], zero_ok: bool) -> None:
    """``-0`` (and ``json.dumps(-0.0)``'s ``-0.0``) is the value 0: accepted exactly where ``0`` is."""
    nfa, frag = build(kind, schema)
    spellings = ["-0"] + (["-0.0"] if kind == "number" else [])
    for s in spellings:
        assert plain_matches(nfa, frag, s.encode()) is zero_ok, (schema, s)
    assert plain_matches(nfa, frag, b"0") is zero_ok


@pytest.mark.parametrize("kind", ["integer", "number"])
def test_exponents_refused_when_bounded(kind: str) -> None:
    nfa, frag = build(kind, {"minimum": 0, "maximum": 10**6})
    assert not plain_matches(nfa, frag, b"1e3")
    assert plain_matches(nfa, frag, b"1000")


def test_trailing_zeros_by_value() -> None:
    nfa, frag = build("number", {"exclusiveMaximum": Decimal("2.25"), "minimum": 1.5}, floats=True)
    accept = ["1.5", "1.50", "1.50001", "2.2499", "2", "2.0", "2.24999999"]
    refuse = ["1.49999", "2.25", "2.2500", "2.250000001", "1.4"]
    assert all(plain_matches(nfa, frag, s.encode()) for s in accept)
    assert not any(plain_matches(nfa, frag, s.encode()) for s in refuse)


def test_float_bounds_use_their_repr() -> None:
    nfa, frag = build("number", {"minimum": 0.1, "maximum": 0.3}, floats=True)
    assert plain_matches(nfa, frag, b"0.1") and plain_matches(nfa, frag, b"0.3")
    assert not plain_matches(nfa, frag, b"0.30000000000000001")


def test_state_counts_stay_small() -> None:
    def size(kind: str, schema: dict[str, Any]) -> int:
        return len(build(kind, schema)[0])

    assert size("integer", {}) <= 8
    assert size("integer", {"minimum": -10**20, "maximum": 10**20}) < 200
    assert size("number", {"minimum": Decimal("-123.456"), "maximum": Decimal("98765.4321")}) < 200
    assert size("integer", {"multipleOf": 1000}) < 20  # minimised: "ends in 000"


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind, schema", [
    ("integer", {"minimum": Decimal("1.2"), "maximum": Decimal("1.8")}),
    ("integer", {"exclusiveMinimum": 3, "exclusiveMaximum": 4}),
    ("integer", {"minimum": 5, "maximum": 4}),
    ("number", {"exclusiveMinimum": 3, "maximum": 3}),
    ("number", {"minimum": 3, "exclusiveMaximum": 3}),
    ("number", {"minimum": 0, "exclusiveMaximum": 0}),
    ("number", {"minimum": Decimal("0.001"), "maximum": Decimal("0.009"), "multipleOf": Decimal("0.01")}),
    ("integer", {"minimum": 1, "maximum": 6, "multipleOf": 7}),
])
def test_empty_range_raises(kind: str, schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="admits no value"):
        build(kind, schema)


@pytest.mark.parametrize("kind", ["integer", "number"])
@pytest.mark.parametrize("multiple", [10007, 1 / 3, Decimal("123.4567"), 0, -2])
def test_unsupported_multiple_of_raises(kind: str, multiple: Any) -> None:
    with pytest.raises(SchemaError, match="multipleOf") as info:
        build(kind, {"multipleOf": multiple})
    assert info.value.keyword == "multipleOf"


def test_multiple_of_state_budget() -> None:
    with pytest.raises(SchemaError, match="multipleOf"):
        build("integer", {"multipleOf": 9973, "minimum": -10**30, "maximum": 10**30})


@pytest.mark.parametrize("bad", ["3", True, float("nan"), float("inf"), [1]])
def test_bad_bound_types_raise(bad: Any) -> None:
    with pytest.raises(SchemaError, match="minimum"):
        integer_fragment(NFA(), minimum=bad, pointer="/properties/x")


def test_pointer_is_passed_through() -> None:
    with pytest.raises(SchemaError) as info:
        number_fragment(NFA(), minimum=2, maximum=1, pointer="/properties/x")
    assert info.value.pointer == "/properties/x"


def test_multiple_of_numbers_are_written_without_an_exponent():
    """docs/schema-support.md: under ``multipleOf`` the language is decimal notation only (a sound
    subset): ``1e-2`` is refused although it is a multiple of 0.01, ``0.01`` and ``10`` are taken."""
    auto = compile_json_schema({"type": "number", "multipleOf": 0.01}, vocab_by_name("llama3")).automaton
    assert auto.matches(b"0.01") and auto.matches(b"10") and auto.matches(b"-2.5")
    assert not auto.matches(b"1e-2") and not auto.matches(b"1E1") and not auto.matches(b"0.001")


def _same_language(a: Any, b: Any) -> bool:
    """Whether two DFAs (start 0, as :func:`number_dfa` gives them) accept the same texts: a walk
    over pairs of states that must agree on acceptance and on the bytes they take."""
    seen, todo = {(0, 0)}, [(0, 0)]
    while todo:
        x, y = todo.pop()
        if a.accept[x] != b.accept[y] or a.rows[x].keys() != b.rows[y].keys():
            return False
        for byte, t in a.rows[x].items():
            pair = (t, b.rows[y][byte])
            if pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return True


#: values an enum lists: integers to 2**53 and past it, integral floats, floats with a fraction
#: (shortest reprs of many lengths, subnormal to huge), both zeros
POINTS: list[Any] = [0, 1, -1, 9, 10, -10, 99, 100, 2**52, 2**53 - 1, 2**53, -2**53, 2**53 + 1, 10**20, 5.0, -0.0,
                     0.0, 1e15, -7.0, 2.0**53, 1e23, 0.1, -0.1, 2.5, 1 / 3, 1e-7, 123.456, 1e-20, 0.30000000000000004,
                     1.7976931348623157e308, 2.2250738585072014e-308, 4.35, -1e22, 1.5e300]
_rng = random.Random(10)
POINTS += [_rng.randrange(-10**6, 10**6) for _ in range(40)] + [_rng.randrange(-2**53, 2**53) for _ in range(40)]
POINTS += [_rng.uniform(-1e6, 1e6) for _ in range(40)] + [_rng.uniform(-1, 1) * 10.0 ** _rng.randrange(-30, 30)
                                                          for _ in range(40)]


@pytest.mark.parametrize("kind", ["number", "integer", "integer_with_fraction"])
def test_a_single_value_built_directly_has_the_general_language(kind: str) -> None:
    """``minimum == maximum`` (every number of an enum): the direct construction accepts exactly the
    texts of the general one (bounds machines intersected with the syntax), where it applies; it
    applies to the ints and floats an enum usually lists (it made an enum of 10,000 numbers
    compile in 0.3 s instead of 7 s)."""
    spellings = {"number": [N._INTEGERS, N._FRACTIONS], "integer": [N._INTEGERS],
                 "integer_with_fraction": [N._INTEGERS, N._INTEGRAL_FRACTIONS]}[kind]
    direct = 0
    for v in POINTS:
        kw = {"minimum": v, "maximum": v, "exclusive_minimum": None, "exclusive_maximum": None, "multiple_of": None}
        try:
            general = N.number_dfa(spellings, kw, "/enum/0", direct=False)
        except SchemaError:
            general = None
        got = N.number_dfa(spellings, kw, "/enum/0") if general is not None else None
        if general is not None and N._point(spellings, kw) is not None:
            direct += 1
            assert got is not None and _same_language(cast(Any, N._shrink(got)), general), (kind, v)
        elif general is None:  # no text: the same error either way
            with pytest.raises(SchemaError, match="admits no value"):
                N.number_dfa(spellings, kw, "/enum/0")
    integral_small = sum(1 for v in POINTS if float(v).is_integer() and abs(v) <= 2**53)
    assert direct >= integral_small  # the direct path was taken for every small integral value


def _variants(v: Any) -> list[str]:
    """Plain decimal texts at and near a listed number: its spellings, and one digit off, signs
    flipped, a digit more."""
    body = format(Decimal(repr(v)) if isinstance(v, float) else Decimal(v), "f")
    texts = [body, "-" + body.lstrip("-"), body.lstrip("-")]
    texts += [body + ".0", body + ".00", body + "0", body + ".01", body + "1"] if "." not in body else \
        [body + "0", body + "00", body + "1", body[:-1]]
    last = body[-1]
    texts.append(body[:-1] + str((int(last) + 1) % 10))
    return [t for t in texts if re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", t)]


def test_an_enum_of_numbers_accepts_exactly_the_spellings_of_its_values() -> None:
    """Through the schema compiler (the listed numbers share one automaton per kind of trailing
    zeros), on every value's spellings and near misses: what it accepts jsonschema finds valid, and
    it accepts every text whose exact decimal value is a listed value that ``json.loads`` reads it as
    (a text that only rounds to one, such as 4503599627370496.01 for 2**52, is left out by design:
    module docstring)."""
    values = [v for v in POINTS if not (isinstance(v, float) and v == 0.0 and str(v) == "-0.0")]
    schema = {"enum": values}
    validator = Draft202012Validator(schema)
    nfa, root, _warn = compile_schema(schema, SchemaOptions())
    exact = {Decimal(repr(v)) if isinstance(v, float) else Decimal(v): v for v in values}
    checked = refused = 0
    for v in values:
        for text in _variants(v):
            accepted = plain_matches(nfa, root, text.encode())
            if accepted:
                assert validator.is_valid(json.loads(text)), (v, text)
            same = exact.get(Decimal(text), None)  # the listed value the text equals exactly, if any
            assert accepted == (same is not None and json.loads(text) == same), (v, text)
            checked += 1
            refused += not accepted
    assert checked > 6 * len(values) and 0 < refused < checked
    for text in ["00", "07", "7.", "-", ".5", "1e3", "1E+2"]:
        assert not plain_matches(nfa, root, text.encode()), text
