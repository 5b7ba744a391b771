"""Bad schemas fail loudly at the right place; regex and choice constraints do what they say.

Every invalid, unsupported or empty schema must raise :class:`SchemaError` whose
``pointer`` (RFC 6901) names the offending subschema or keyword.  Lenient mode turns
unsupported keywords into warnings.  ``compile_regex_constraint`` and
``compile_choice`` outputs are checked by generation and by feeding texts.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings

import numpy as np
import pytest
from enforcer_oracle import encode, generate, validator_for, vocab_by_name

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, RegexError, SchemaError
from exl2_enforcer.grammar import compile_choice, compile_json_schema, compile_regex_constraint
from exl2_enforcer.matcher import Matcher


@pytest.fixture(scope="module")
def vocab():
    return vocab_by_name("mini")


def _fresh(schema):
    """A copy of ``schema`` that misses the grammar cache (a unique annotation)."""
    if isinstance(schema, dict):
        return {**schema, "$comment": f"fresh {uuid.uuid4()}"}
    return schema


# (id, schema, expected pointer)
BAD = [
    ("type-not-a-string", {"type": 5}, "/type"),
    ("unknown-type-name", {"properties": {"a": {"type": "strin"}}}, "/properties/a/type"),
    ("type-list-unknown", {"type": ["string", "frog"]}, "/type"),
    ("negative-maxLength", {"properties": {"s": {"type": "string", "maxLength": -1}}}, "/properties/s/maxLength"),
    ("multipleOf-zero", {"properties": {"n": {"type": "integer", "multipleOf": 0}}}, "/properties/n/multipleOf"),
    ("unresolvable-ref", {"properties": {"a": {"$ref": "#/$defs/missing"}}}, "/properties/a/$ref"),
    ("remote-ref", {"properties": {"a": {"$ref": "http://example.com/schema.json"}}}, "/properties/a/$ref"),
    ("malformed-pattern", {"properties": {"a": {"type": "string", "pattern": "[a-"}}}, "/properties/a/pattern"),
    ("bad-quantifier", {"properties": {"a": {"type": "string", "pattern": "a{2,1}"}}}, "/properties/a/pattern"),
    ("unsupported-lookahead", {"properties": {"a": {"type": "string", "pattern": "(?=a)b"}}},
     "/properties/a/pattern"),
    ("not-const", {"properties": {"a": {"not": {"const": [1]}}}}, "/properties/a/not/const"),
    ("not-escaped-names", {"properties": {"a/b": {"properties": {"c~d": {"not": {"const": [1]}}}}}},
     "/properties/a~1b/properties/c~0d/not/const"),
    ("if-then-in-items", {"type": "array", "items": {"if": {"const": [1]}, "then": {}}}, "/items/if/const"),
    ("patternProperties-too-many", {"type": "object", "additionalProperties": True,
                                    "patternProperties": {f"^{c}": {"type": "integer"} for c in "abcde"}},
     "/patternProperties"),
    ("uniqueItems", {"properties": {"a": {"type": "array", "uniqueItems": True}}}, "/properties/a/uniqueItems"),
    ("contains-with-tuple", {"type": "array", "prefixItems": [{}], "contains": {"type": "integer"}}, "/contains"),
    ("propertyNames-overlap", {"type": "object", "properties": {"ab": {}}, "additionalProperties": True,
                               "propertyNames": {"maxLength": 3}}, "/propertyNames"),
    ("unevaluatedProperties-anyOf", {"anyOf": [{"properties": {"a": {}}}], "unevaluatedProperties": False},
     "/unevaluatedProperties"),
    ("not-behind-ref", {"$defs": {"x": {"not": {"enum": [[1]]}}}, "properties": {"a": {"$ref": "#/$defs/x"}}},
     "/$defs/x/not/enum"),
    ("unsupported-format", {"properties": {"s": {"type": "string", "format": "uri-template"}}},
     "/properties/s/format"),
    ("enum-empty-after-type", {"properties": {"a": {"type": "integer", "enum": ["x", "y"]}}}, "/properties/a"),
    ("enum-empty", {"properties": {"a": {"enum": []}}}, "/properties/a"),
    ("const-wrong-type", {"properties": {"a": {"type": "integer", "const": "x"}}}, "/properties/a"),
    ("min-gt-max-integer", {"properties": {"n": {"type": "integer", "minimum": 5, "maximum": 3}}}, "/properties/n"),
    ("empty-integer-range", {"properties": {"n": {"type": "integer", "minimum": 2.5, "maximum": 2.9}}},
     "/properties/n"),
    ("exclusive-empty-number", {"properties": {"n": {"type": "number", "exclusiveMinimum": 3, "maximum": 3}}},
     "/properties/n"),
    ("maxLength-lt-minLength", {"properties": {"s": {"type": "string", "minLength": 5, "maxLength": 3}}},
     "/properties/s"),
    ("required-forbidden", {"type": "object", "properties": {"a": {}}, "required": ["b"],
                            "additionalProperties": False}, "/required"),
    ("required-forbidden-nested", {"properties": {"a": {"type": "object", "additionalProperties": False,
                                                        "required": ["z"]}}}, "/properties/a/required"),
    # at the object's required, like required-forbidden: a union leaves such a branch out (test_empty_branches.py)
    ("required-false", {"type": "object", "required": ["a"], "properties": {"a": False}}, "/required"),
    ("oneOf-overlap", {"properties": {"x": {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}}},
     "/properties/x/oneOf"),
    ("oneOf-integer-number", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, "/oneOf"),
    ("minItems-gt-maxItems", {"properties": {"arr": {"type": "array", "minItems": 3, "maxItems": 2}}},
     "/properties/arr"),
    ("closed-tuple-too-short", {"properties": {"arr": {"type": "array", "prefixItems": [{}], "items": False,
                                                       "minItems": 2}}}, "/properties/arr"),
    ("allOf-types", {"allOf": [{"type": "string"}, {"type": "integer"}]}, "/allOf/1"),
    ("allOf-consts", {"allOf": [{"const": 1}, {"const": 2}]}, "/allOf/1"),
    ("pattern-with-format", {"properties": {"s": {"type": "string", "pattern": "^a+$", "format": "date"}}},
     "/properties/s"),
    ("pattern-length-empty", {"properties": {"s": {"type": "string", "pattern": "^a{5}$", "maxLength": 3}}},
     "/properties/s"),
    ("const-nan", {"properties": {"a": {"const": float("nan")}}}, "/properties/a/const"),
    ("enum-infinity", {"properties": {"a": {"enum": [1, float("inf")]}}}, "/properties/a/enum/1"),
    ("custom meta-schema", {"$schema": "http://example.com/my-meta"}, "/$schema"),
    ("array-items-in-2020", {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                             "items": [{"type": "string"}]}, "/items"),
    ("minProperties-unreachable", {"type": "object", "properties": {"a": {}}, "minProperties": 2}, ""),
    ("maxProperties-below-required", {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"],
                                      "maxProperties": 1}, ""),
]


@pytest.mark.parametrize("schema,pointer", [(s, p) for _, s, p in BAD], ids=[i for i, _, _ in BAD])
def test_bad_schema_pointer(vocab, schema, pointer):
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh(schema), vocab)
    assert info.value.pointer == pointer, str(info.value)
    # the message names the place too
    assert (pointer or "/") in str(info.value)


def test_unsupported_keyword_names_keyword(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema({"properties": {"a": {"not": {"const": [1]}}}}, vocab)
    assert info.value.keyword == "not"


def test_unique_items_error_says_when_and_what_to_do(vocab):
    """pydantic writes uniqueItems for every set[...] field; a bare "not supported" sent a new user
    to the docs to learn that it works with maxItems <= 1 and what to write instead."""
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 9},
                                                        "uniqueItems": True}}}
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh(schema), vocab)
    text = str(info.value)
    assert info.value.pointer == "/properties/tags/uniqueItems" and info.value.keyword == "uniqueItems"
    assert "maxItems above 1" in text and "de-duplicate" in text and "lenient" in text
    # with maxItems 1 it compiles
    compile_json_schema(_fresh({"type": "array", "uniqueItems": True, "maxItems": 1}), vocab)


def test_oneof_error_names_a_discriminator_that_is_not_required(vocab):
    """pydantic's discriminated union of models whose Literal tag has a default lists the tag with
    const values but does not require it: the error said "make them disjoint (e.g. a const
    discriminator)" to a schema that had one.  It now names the member and the fix."""
    cat = {"type": "object", "properties": {"kind": {"const": "cat", "default": "cat", "type": "string"},
                                            "lives": {"type": "integer"}}, "required": ["lives"]}
    dog = {"type": "object", "properties": {"kind": {"const": "dog", "default": "dog", "type": "string"},
                                            "good": {"type": "boolean"}}, "required": ["good"]}
    schema = {"$defs": {"Cat": cat, "Dog": dog}, "type": "object", "required": ["pet"], "properties": {
        "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                "discriminator": {"propertyName": "kind"}}}}
    # (under the default strict_objects each branch writes only its own members, so the required
    # lives/good tell the outputs apart and it compiles: test_oneof_tag_with_a_default_under_closed_objects)
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh(schema), vocab, SchemaOptions(strict_objects=False))
    assert info.value.pointer == "/properties/pet/oneOf"
    assert "'kind' is not required in both" in str(info.value) and "add 'kind'" in str(info.value)
    # required in both: proven disjoint by the discriminator, compiles
    for branch in (cat, dog):
        branch["required"] = ["kind", *branch["required"]]
    compile_json_schema(_fresh(schema), vocab)
    # branches that share no such member keep the general advice
    with pytest.raises(SchemaError, match=r"e\.g\. a const discriminator"):
        compile_json_schema(_fresh({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}), vocab)


@pytest.mark.parametrize("bad", ["int", ["string", "float"]])
def test_unknown_type_name_lists_the_names(vocab, bad):
    """jsonschema's own message ("'int' is not valid under any of the given schemas") does not say
    what a type may be; the error now lists the seven names.  A property called "type" is not the
    keyword and gets no such hint."""
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh({"type": "object", "properties": {"a": {"type": bad}}}), vocab)
    assert info.value.pointer == "/properties/a/type"
    assert "a type is one of array, boolean, integer, null, number, object, string" in str(info.value)
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh({"type": "object", "properties": {"type": 5}}), vocab)
    assert info.value.pointer == "/properties/type" and "a type is one of" not in str(info.value)


def test_format_with_a_huge_maxlength_says_what_to_change(vocab):
    """pydantic's HttpUrl/AnyUrl write {"format": "uri", "minLength": 1, "maxLength": 2083}: refused
    with only "the length bound needs more than 250000 automaton states".  The error now names the
    format, the bound and the fix; a smaller bound compiles."""
    url = {"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083}
    with pytest.raises(SchemaError) as info:
        compile_json_schema(_fresh({"type": "object", "properties": {"url": url}}), vocab)
    text = str(info.value)
    assert info.value.pointer == "/properties/url" and info.value.keyword == "maxLength"
    assert "format 'uri'" in text and "maxLength 2083" in text and "a smaller maxLength" in text
    compile_json_schema(_fresh({**url, "maxLength": 200}), vocab)


def test_schema_text_that_is_not_json(vocab):
    with pytest.raises(SchemaError) as info:
        compile_json_schema("{not json", vocab)
    assert info.value.pointer == ""


def test_recursion_without_base_case_is_rejected(vocab):
    schema = {"$defs": {"n": {"type": "object", "properties": {"c": {"$ref": "#/$defs/n"}}, "required": ["c"]}},
              "$ref": "#/$defs/n"}
    with pytest.raises(SchemaError):
        compile_json_schema(schema, vocab)


def test_schema_error_is_an_enforcer_error(vocab):
    with pytest.raises(EnforcerError):
        compile_json_schema({"type": 5}, vocab)
    with pytest.raises(ValueError):
        compile_json_schema({"type": 5}, vocab)


# ----------------------------------------------------------------------------- lenient mode


def test_lenient_turns_unsupported_keywords_into_warnings(vocab):
    schema = _fresh({"type": "object", "properties": {"a": {"type": "integer", "not": {"const": [3]}},
                                                      "b": {"type": "array", "uniqueItems": True}}})
    with pytest.warns(UserWarning) as record:
        g = compile_json_schema(schema, vocab, SchemaOptions(lenient=True))
    text = " ".join(str(w.message) for w in record)
    assert "/properties/a/not" in text and "/properties/b/uniqueItems" in text
    assert any("/properties/a/not" in w for w in g.warnings)
    # the keyword is ignored: the language is that of the schema without it
    assert g.automaton.matches(b'{"a": 3, "b": [1, 1]}')
    # strict mode still refuses
    with pytest.raises(SchemaError):
        compile_json_schema(_fresh(schema), vocab, SchemaOptions(lenient=False))


def test_lenient_unknown_format_falls_back_to_free_string(vocab):
    schema = _fresh({"type": "string", "format": "color"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = compile_json_schema(schema, vocab, SchemaOptions(lenient=True))
    assert any("color" in w for w in g.warnings)
    assert g.automaton.matches(b'"#ff0000"')


def test_cached_lenient_grammar_keeps_its_warnings(vocab):
    schema = _fresh({"properties": {"a": {"not": {"const": [1]}}}})
    with pytest.warns(UserWarning):
        g1 = compile_json_schema(schema, vocab, SchemaOptions(lenient=True))
    g2 = compile_json_schema(schema, vocab, SchemaOptions(lenient=True))
    assert g2.warnings == g1.warnings and g2.warnings


# ----------------------------------------------------------------------------- regex constraints

REGEXES = ["[0-9]{3}-[a-z]+", "(yes|no|maybe)", "[A-Z][a-z]{0,6}( [A-Z][a-z]{0,6}){0,2}", "-?(0|[1-9][0-9]{0,3})",
           "(ab)+c?", "日本(語|人)?", "[^\\n\"]{1,5}!"]


@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_generations_fullmatch(vocab, pattern):
    g = compile_regex_constraint(pattern, vocab)
    finished = 0
    for seed in range(10):
        gen = generate(g, np.random.default_rng([seed, len(pattern)]), budget=40,
                       temperature=(1.0, 4.0)[seed % 2])
        if gen.finished:
            finished += 1
            text = gen.text.decode("utf-8")
            assert re.fullmatch(pattern, text), (pattern, text)
    assert finished >= 5


def test_regex_texts(vocab):
    g = compile_regex_constraint("[0-9]{3}-[a-z]+", vocab)
    for text, ok in [("123-abc", True), ("000-z", True), ("12-abc", False), ("123-", False), ("1234-a", False),
                     ("123-abc\n", False), ("123-aBc", False)]:
        assert g.automaton.matches(text.encode()) is ok, text
        m = Matcher(g)
        fed = all(m.try_accept(t) for t in encode("mini", text))
        assert (fed and m.is_accepting()) is ok, text


def test_malformed_regex_constraint(vocab):
    with pytest.raises(RegexError) as info:
        compile_regex_constraint("ab[c-", vocab)
    assert info.value.position == 2
    with pytest.raises(RegexError):
        compile_regex_constraint("a{3,1}", vocab)


# ----------------------------------------------------------------------------- choice constraints


@pytest.mark.parametrize("choices", [["yes", "no", "maybe"], ["a", "ab", "abc"], ["日本", "日本語", "🙂"],
                                     ['{"x": 1}', "[]"]])
def test_choice_generations(vocab, choices):
    g = compile_choice(choices, vocab)
    seen = set()
    for seed in range(16):
        gen = generate(g, np.random.default_rng([seed, 3]), budget=20, temperature=5.0)
        assert gen.finished
        text = gen.text.decode("utf-8")
        assert text in choices
        seen.add(text)
    assert len(seen) >= 2
    for c in choices:
        assert g.automaton.matches(c.encode())
        m = Matcher(g)
        for t in encode("mini", c):
            m.accept_token(t)
        assert m.is_accepting()
    for bad in ("ye", "yesno", "", "abcd", "日"):
        if bad not in choices:
            assert not g.automaton.matches(bad.encode()), bad


def test_choice_prefix_is_not_complete(vocab):
    g = compile_choice(["yes", "no", "maybe"], vocab)
    m = Matcher(g)
    for t in encode("mini", "may"):
        m.accept_token(t)
    assert not m.is_accepting()
    assert not np.isin(sorted(vocab.end_ids), m.allowed_ids()).any()


def test_bad_choices(vocab):
    with pytest.raises(EnforcerError):
        compile_choice([], vocab)
    with pytest.raises(EnforcerError):
        compile_choice(["ok", ""], vocab)
    with pytest.raises(EnforcerError):
        compile_choice(["ok", 3], vocab)  # type: ignore[list-item]
    # a str is a Sequence[str]: compile_choice("yes") accepted "y", "e" or "s"
    with pytest.raises(EnforcerError, match=r"for one choice pass \[choice\]"):
        compile_choice("yes", vocab)


def test_choice_texts_round_trip_through_json(vocab):
    """A JSON-looking choice is taken literally, byte for byte."""
    g = compile_choice(['{"x": 1}'], vocab)
    assert g.automaton.matches(b'{"x": 1}')
    assert not g.automaton.matches(b'{"x":1}')
    assert json.loads('{"x": 1}') == {"x": 1}


# ----------------------------------------------------------------------------- valid schemas must compile


# Regression: enum/const filtering validated values out of context, so a sibling $ref to the root's
# $defs raised jsonschema's _WrappedReferencingError instead of compiling.
def test_const_next_to_nested_ref_compiles(vocab):
    schema = {"$defs": {"t": {"type": "integer"}}, "type": "object", "properties": {
        "p": {"type": "object", "properties": {"x": {"$ref": "#/$defs/t"}}, "const": {"x": 1}}}}
    g = compile_json_schema(_fresh(schema), vocab)
    assert g.automaton.matches(b'{"p": {"x": 1}}')


# Regression: the oneOf disjointness check validated a const branch against another branch out of
# context, so a $ref to the root's $defs raised _WrappedReferencingError.
def test_oneof_const_branch_next_to_ref_branch_compiles(vocab):
    schema = {"$defs": {"t": {"type": "integer"}}, "type": "object", "properties": {"p": {"oneOf": [
        {"const": {"x": "s"}},
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/t"}}, "required": ["x"]}]}}}
    g = compile_json_schema(_fresh(schema), vocab)
    assert g.automaton.matches(b'{"p": {"x": 1}}') and g.automaton.matches(b'{"p": {"x": "s"}}')


def test_non_string_ref_is_a_schema_error(vocab):
    # draft 4's meta-schema does not check $ref, so the schema reaches the compiler
    with pytest.warns(UserWarning), pytest.raises(SchemaError) as e:
        compile_json_schema(_fresh({"$ref": 5}), vocab)
    assert e.value.pointer == "/$ref"


def test_schema_bytes_that_are_not_utf8(vocab):
    with pytest.raises(SchemaError, match="not valid JSON"):
        compile_json_schema(b"\xff", vocab)


@pytest.mark.parametrize("field, value", [("max_whitespace", "2"), ("max_depth", 2.5),
                                          ("max_schema_depth", None), ("compile_timeout_s", "1")])
def test_options_of_the_wrong_type_name_the_field(field, value):
    with pytest.raises(EnforcerError, match=field):
        SchemaOptions(**{field: value})


def test_regex_constraint_pattern_must_be_a_string(vocab):
    with pytest.raises(EnforcerError, match="pattern must be a str"):
        compile_regex_constraint(5, vocab)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["schema", "any"])
def test_lone_surrogate_property_name_is_spelled_as_its_escape(vocab, order):
    # json.loads('{"\\ud800": 1}') has a key with a lone surrogate: canonical spelling is the escape
    schema = _fresh({"properties": {"\ud800": {"type": "integer"}}, "required": ["\ud800"]})
    m = Matcher(compile_json_schema(schema, vocab, SchemaOptions(property_order=order, max_whitespace=0)))
    for tid in encode("mini", '{"\\ud800":1}'):
        assert m.try_accept(tid)
    assert m.is_accepting()


def test_not_const_string_next_to_length_names_the_users_not(vocab):
    # the error used to name the rewritten schema's "/anyOf/5", a place the user's schema lacks
    schema = _fresh({"properties": {"x": {"type": "string", "not": {"const": "a"}, "maxLength": 2}}})
    with pytest.raises(SchemaError) as e:
        compile_json_schema(schema, vocab)
    assert e.value.pointer == "/properties/x/not"


@pytest.mark.parametrize("compile_", [lambda v: compile_json_schema({}, v), lambda v: compile_regex_constraint("a", v),
                                      lambda v: compile_choice(["a"], v)])
def test_a_vocab_that_is_not_a_token_vocabulary_is_named(compile_):
    # e.g. an ExLlamaV2Tokenizer passed where the vocabulary goes (was: AttributeError 'fingerprint')
    with pytest.raises(EnforcerError, match="vocab must be a TokenVocabulary"):
        compile_(object())


def _ref_chain(n: int) -> dict:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(n)}
    defs[f"d{n}"] = {"type": "integer", "minimum": 3}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def test_long_ref_chain_compiles(vocab):
    """1,500 $refs in a row nest the compile far deeper than the 3-level JSON text suggests."""
    g = compile_json_schema(_ref_chain(1500), vocab)
    assert g.automaton.matches(b"42") and not g.automaton.matches(b"2")


def test_too_long_ref_chain_blames_the_chain_not_max_schema_depth(vocab):
    with pytest.raises(SchemaError, match=r"JSON nests only 3 levels, so a chain of \$ref") as err:
        compile_json_schema(_ref_chain(4000), vocab, SchemaOptions(max_schema_depth=20))
    assert "lower its nesting" not in str(err.value)
    assert err.value.pointer.startswith("/$defs/d")


@pytest.mark.parametrize("schema,pointer", [
    ({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#", "type": "integer"}, ""),
    ({"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/a",
      "$defs": {"a": {"$ref": "#/$defs/b", "minimum": 1}, "b": {"$ref": "#/$defs/a", "maximum": 5}}}, "/$defs/a"),
], ids=["self", "pair"])
def test_ref_cycle_through_sibling_keywords_names_the_cycle(vocab, schema, pointer):
    # merging the siblings into the target meets the same $ref again: refused as a cycle (it was
    # reported as a $ref chain too long for the stack)
    with pytest.raises(SchemaError, match="reaches itself again") as info:
        compile_json_schema(schema, vocab)
    assert info.value.pointer == pointer and info.value.keyword == "$ref"


def test_recursion_through_a_ref_with_sibling_keywords(vocab):
    # "kids" items are the node itself plus a sibling keyword: compiled once as a shared machine,
    # so the recursion goes through it instead of unfolding the merge without end
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/node",
              "$defs": {"node": {"type": "object", "additionalProperties": False, "properties": {
                  "val": {"type": "string", "maxLength": 3},
                  "kids": {"type": "array", "maxItems": 2, "items": {"$ref": "#/$defs/node", "required": ["val"]}}}}}}
    g = compile_json_schema(schema, vocab)
    check = validator_for(schema)
    for value in ({}, {"kids": []}, {"kids": [{}]}, {"kids": [{"val": "a"}]}, {"val": "x", "kids": [{"val": "long"}]},
                  {"val": "x", "kids": [{"val": "a", "kids": [{"val": "b"}, {}]}]},
                  {"val": "x", "kids": [{"val": "a", "kids": [{"val": "b"}, {"val": "c", "kids": []}]}]}):
        text = json.dumps(value, separators=(",", ":")).encode()
        end = g.automaton.walk(Matcher(g).state, text)
        assert (end >= 0 and g.automaton.is_accepting(end)) == check.is_valid(value), value


def _all_of_chain(n: int, cycle: bool) -> dict:
    """``d_i = allOf[$ref d_(i+1), {minimum: -i}]``, ending in an integer, or back at d0."""
    last = {"allOf": [{"$ref": "#/$defs/d0"}]} if cycle else {"type": "integer"}
    defs = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"minimum": -i}]} if i < n - 1 else last
            for i in range(n)}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def test_a_long_all_of_chain_is_not_called_a_cycle(vocab):
    """Past the merge nesting limit a chain that ends was refused as a cycle ("reaches itself"): now
    the limit is named, and the message says it may be either; a chain within it compiles."""
    from exl2_enforcer.compile.schema.merge import MAX_MERGE_NESTING

    g = compile_json_schema(_all_of_chain(MAX_MERGE_NESTING // 2, False), vocab)

    def takes(text: str) -> bool:
        m = Matcher(g)
        return all(m.try_accept(t) for t in encode("llama3", text)) and m.is_accepting()

    assert takes("5") and takes("0") and not takes("-2") and not takes('"x"')  # minimum 0 wins
    with pytest.raises(SchemaError, match=f"nest more than {MAX_MERGE_NESTING} deep") as info:
        compile_json_schema(_all_of_chain(MAX_MERGE_NESTING + 5, False), vocab)
    assert "reaches itself" not in str(info.value) and "a chain of allOf this long" in str(info.value)
    assert info.value.pointer.startswith("/$defs/d")
    with pytest.raises(SchemaError, match="reaches itself|a cycle"):
        compile_json_schema(_all_of_chain(5, True), vocab)
