"""Generation oracle: whatever the mask lets a sampler write is valid JSON for the schema.

* Random-logit generation: for every schema in ``tests/schemas/*.json`` and several
  seeds, sample token by token from the fast mask (Gumbel-max over random logits,
  some runs at high temperature) with a 400-token budget.  Every generation that
  ends with an end token must decode as UTF-8, parse with ``json.loads`` and validate
  with jsonschema (draft per ``$schema``, with format checking).  Once half the budget
  is spent the sampler favours end ids and structural tokens, and at least half the
  generations of every schema must finish.
* Forced instances: each schema file lists ``valid`` and ``invalid`` instances
  (``{"schema": ..., "valid": [...], "invalid": [...]}``); the real tokenizer's
  encoding of ``json.dumps(instance, ensure_ascii=False)`` (keys in schema order)
  must be accepted token by token and end accepting, and invalid ones refused.

Runs on the packaged mini Llama 3 vocabulary always and on the real Llama 3
tokenizer when ``../shared/tokenizers`` exists.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from enforcer_oracle import (
    encode,
    finished_values,
    generate,
    load_schema_file,
    schema_files,
    token_table,
    validator_for,
    vocab_by_name,
)

from exl2_enforcer.grammar import compile_json_schema
from exl2_enforcer.matcher import Matcher

FILES = schema_files()

#: examples for schema files that are bare schemas (function_call.json predates the wrapper format)
EXTRA_EXAMPLES = {
    "function_call": (
        [{"reason": "need the weather", "tool_calls": [{"name": "get_weather", "arguments": {
            "location": {"city": "Paris", "country": "FR"}, "unit": "celsius", "days": 3}}]},
         {"reason": "", "tool_calls": [
             {"name": "search", "arguments": {"query": "日本 news", "max_results": 5, "filters": ["news", "video"]}},
             {"name": "send_email", "arguments": {"to": ["a.b@example.com"], "subject": "Hi", "body": "Text\nmore",
                                                  "priority": "high"}},
             {"name": "get_weather", "arguments": {"location": {"city": "京都", "country": "日本"},
                                                   "unit": "fahrenheit"}}]}],
        [{"reason": "r", "tool_calls": []},
         {"reason": "r", "tool_calls": [{"name": "get_weather", "arguments": {
             "location": {"city": "Paris"}, "unit": "celsius", "days": 15}}]},
         {"reason": "r", "tool_calls": [{"name": "fly", "arguments": {"query": "x"}}]},
         {"reason": "r", "tool_calls": [{"name": "send_email", "arguments": {
             "to": ["not-an-email"], "subject": "s", "body": "b"}}]}]),
}

#: (seeds, budget) per vocabulary
PLAN = {"mini": (10, 400), "llama3": (5, 400)}
TEMPERATURES = (1.0, 0.5, 3.0, 8.0)


def _examples(path):
    schema, valid, invalid = load_schema_file(path)
    if path.stem in EXTRA_EXAMPLES:
        valid, invalid = EXTRA_EXAMPLES[path.stem]
    return schema, valid, invalid


@pytest.fixture(scope="module", params=["mini", "llama3"])
def vocab_name(request):
    vocab_by_name(request.param)  # skips when ../shared is missing
    return request.param


def test_enough_schema_files():
    assert len(FILES) >= 30, [p.name for p in FILES]
    for path in FILES:
        schema, valid, _invalid = _examples(path)
        assert valid, f"{path.name} has no valid example"
        # the examples are honest: valid ones validate, invalid ones do not
        v = validator_for(schema)
        for inst in valid:
            assert v.is_valid(inst), (path.name, inst, [e.message for e in v.iter_errors(inst)])
        for inst in _invalid:
            assert not v.is_valid(inst), (path.name, inst)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_random_generations_validate(vocab_name, path):
    schema, _valid, _invalid = _examples(path)
    vocab = vocab_by_name(vocab_name)
    g = compile_json_schema(schema, vocab)
    validator = validator_for(schema)
    n_seeds, budget = PLAN[vocab_name]
    finished, failures = 0, []
    for seed in range(n_seeds):
        rng = np.random.default_rng([seed, sum(map(ord, path.stem)), len(vocab_name)])
        gen = generate(g, rng, budget=budget, temperature=TEMPERATURES[seed % len(TEMPERATURES)])
        if not gen.finished:
            continue
        finished += 1
        try:
            text = gen.text.decode("utf-8")
        except UnicodeDecodeError as e:
            failures.append(f"seed {seed}: not UTF-8 ({e}): {gen.text!r}")
            continue
        if text != text.strip(" \t\r\n"):
            failures.append(f"seed {seed}: whitespace around the root value: {text!r}")
        if not g.automaton.matches(gen.text):
            failures.append(f"seed {seed}: the automaton does not accept its own output: {text!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            failures.append(f"seed {seed}: json.loads failed ({e}): {text!r}")
            continue
        errors = [e.message for e in validator.iter_errors(value)]
        if errors:
            failures.append(f"seed {seed}: invalid instance {text!r}: {errors[:3]}")
    assert not failures, "\n".join(failures)
    assert finished * 2 >= n_seeds, f"only {finished}/{n_seeds} generations finished within {budget} tokens"


def _feed(g, vocab, ids: list[int]) -> tuple[int | None, bool]:
    """Feed ``ids``; returns (index of the first refused token or None, accepting at the end)."""
    m = Matcher(g)
    for k, t in enumerate(ids):
        allowed = m.allowed_ids()
        in_mask = bool(np.isin(t, allowed))
        ok = m.try_accept(t)
        assert in_mask == ok, f"mask says {in_mask} but accept_token says {ok} for token {t} at {k}"
        if not ok:
            return k, False
    accepting = m.is_accepting()
    ends = np.isin(np.array(sorted(vocab.end_ids)), m.allowed_ids())
    assert ends.all() == accepting and ends.any() == accepting
    return None, accepting


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_forced_instances(vocab_name, path):
    schema, valid, invalid = _examples(path)
    vocab = vocab_by_name(vocab_name)
    g = compile_json_schema(schema, vocab)
    problems = []
    for inst in valid:
        for seps in ((", ", ": "), (",", ":")):
            text = json.dumps(inst, ensure_ascii=False, separators=seps)
            ids = encode(vocab_name, text)
            assert vocab.decode_bytes(ids) == text.encode("utf-8"), "tokenizer round trip"
            refused, accepting = _feed(g, vocab, ids)
            if refused is not None:
                pieces = [vocab.token_bytes[t] for t in ids]
                problems.append(f"valid {text!r}: token {refused} {pieces[refused]!r} refused after "
                                f"{b''.join(pieces[:refused])!r}")
            elif not accepting:
                problems.append(f"valid {text!r}: all tokens accepted but the end is not accepting")
            if g.automaton.matches(text.encode()) != (refused is None and accepting):
                problems.append(f"valid {text!r}: automaton.matches disagrees with token feeding")
    for inst in invalid:
        text = json.dumps(inst, ensure_ascii=False)
        refused, accepting = _feed(g, vocab, encode(vocab_name, text))
        if refused is None and accepting:
            problems.append(f"invalid {text!r} was accepted")
    assert not problems, "\n".join(problems)


def test_generation_is_deterministic_per_seed():
    """Same seed, same grammar: the same text (the oracle runs are reproducible)."""
    vocab = vocab_by_name("mini")
    schema, _v, _i = _examples(FILES[0])
    g = compile_json_schema(schema, vocab)
    a = generate(g, np.random.default_rng(5), budget=200)
    b = generate(g, np.random.default_rng(5), budget=200)
    assert a.ids == b.ids
    assert token_table(vocab).text_ids.size > 0


# ----------------------------------------------------------------------------- regressions


# Regression: free-form values (`true`, `{}`, additionalProperties: true) used to admit only the
# empty object `{}` under strict_objects.
def test_free_form_value_admits_objects_with_keys():
    vocab = vocab_by_name("mini")
    for schema in (True, {}, {"type": "array"}, {"type": "object", "additionalProperties": True}):
        g = compile_json_schema(schema, vocab)
        text = b'[{"a": 1}]' if schema == {"type": "array"} else b'{"a": {"b": 1}}'
        assert g.automaton.matches(text), (schema, text)


# Regression: the grammar cache key sorted keys, so a schema differing only in property order
# got the other schema's grammar.
def test_grammar_cache_respects_property_order():
    vocab = vocab_by_name("mini")
    ab = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "required": ["a", "b"], "$comment": "cache-order-probe"}
    ba = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
          "required": ["a", "b"], "$comment": "cache-order-probe"}
    g_ab = compile_json_schema(ab, vocab)
    assert g_ab.automaton.matches(b'{"a": 1, "b": 2}')
    g_ba = compile_json_schema(ba, vocab)
    assert g_ba.automaton.matches(b'{"b": 2, "a": 1}')
    assert not g_ba.automaton.matches(b'{"a": 1, "b": 2}')


def test_oneof_member_rules_do_not_prove_non_objects_disjoint():
    """``required``/``properties``/``additionalProperties`` hold vacuously for a string or a number, so
    branches without a type told apart only by members both take "hello": oneOf refuses it.  The
    member rules proved them disjoint and the engine accepted "hello" and 5."""
    from exl2_enforcer.compile.schema.compiler import SchemaOptions
    from exl2_enforcer.errors import SchemaError

    vocab = vocab_by_name("mini")
    spec = SchemaOptions(strict_objects=False, property_order="any")
    for schema in ({"oneOf": [{"additionalProperties": False}, {"required": ["r"]}]},
                   {"oneOf": [{"required": ["k"], "properties": {"k": {"const": 1}}},
                              {"required": ["k"], "properties": {"k": {"const": 2}}}]}):
        assert not validator_for(schema).is_valid("hello") and not validator_for(schema).is_valid(5)
        for options in (spec, SchemaOptions()):
            with pytest.raises(SchemaError, match="overlap"):
                compile_json_schema(schema, vocab, options)
        typed = {"oneOf": [{"type": "object", **b} for b in schema["oneOf"]]}  # objects only: disjoint
        g = compile_json_schema(typed, vocab, spec)
        for value in ({}, {"r": 1}, {"k": 1}, {"k": 2}, {"k": 3}, {"k": 1, "r": 0}, "hello"):
            assert g.automaton.matches(json.dumps(value).encode()) == validator_for(typed).is_valid(value), value


@pytest.mark.parametrize("name", ["mini", "llama3"])
def test_oneof_tag_with_a_default_under_closed_objects(name):
    """pydantic's tagged union whose Literal tag has a default: on open objects {"lives": 1, "good": true}
    matches both models, but under strict_objects the engine writes only a branch's own members, and
    each branch requires one the other does not list, so no output matches both: it compiles, and
    every output (listed and generated) is valid.  A branch that requires nothing of its own is
    still refused (a value of the other branch may match it)."""
    from exl2_enforcer.compile.schema.compiler import SchemaOptions
    from exl2_enforcer.errors import SchemaError

    cat = {"type": "object", "properties": {"kind": {"const": "cat", "default": "cat"}, "lives": {"type": "integer"}},
           "required": ["lives"], "title": "Cat"}
    dog = {"type": "object", "properties": {"kind": {"const": "dog", "default": "dog"}, "good": {"type": "boolean"}},
           "required": ["good"], "title": "Dog"}
    schema = {"$defs": {"Cat": cat, "Dog": dog}, "type": "object", "required": ["pet"], "properties": {
        "pet": {"oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
                "discriminator": {"propertyName": "kind"}}}}
    vocab = vocab_by_name(name)
    g = compile_json_schema(schema, vocab)
    check = validator_for(schema)
    assert not check.is_valid({"pet": {"lives": 1, "good": True}})  # both branches: not "exactly one"
    for pet in ({"kind": "cat", "lives": 9}, {"lives": 9}, {"kind": "dog", "good": True}, {"good": False},
                {"kind": "cat", "good": True}, {"lives": 1, "good": True}, {"kind": "dog", "lives": 2}, {}):
        value = {"pet": pet}
        assert g.automaton.matches(json.dumps(value).encode()) == check.is_valid(value), pet
    values = finished_values(g, np.random.default_rng(3), runs=12, budget=80)
    assert values and all(check.is_valid(v) for v in values)
    # open objects (the spec's reading): the same union may overlap
    with pytest.raises(SchemaError, match="'kind' is not required in both"):
        compile_json_schema(schema, vocab, SchemaOptions(strict_objects=False))
    # a branch that lists more members (or allows more) does not close: no proof
    for extra in ({"additionalProperties": True}, {"patternProperties": {"^x": {}}}):
        open_cat = {**cat, **extra}
        with pytest.raises(SchemaError, match="overlap"):
            compile_json_schema({**schema, "$defs": {"Cat": open_cat, "Dog": dog}}, vocab)
    lazy_cat = {**cat, "required": []}  # a dog's {"good": true} is a valid cat on open objects
    with pytest.raises(SchemaError, match="overlap"):
        compile_json_schema({**schema, "$defs": {"Cat": lazy_cat, "Dog": dog}}, vocab)


# Regression: oneOf disjointness was proved under strict_objects' closed objects while validity is
# judged on the open schema, so {'b': 1} (matching both branches, hence invalid) was accepted.
# The engine must refuse such a oneOf (it cannot enforce "exactly one"), whatever strict_objects says,
# and still enforce a oneOf whose branches are disjoint on open objects too.
@pytest.mark.parametrize("strict_objects", [True, False])
def test_oneof_disjointness_judged_on_open_objects(strict_objects):
    from exl2_enforcer.compile.schema.compiler import SchemaOptions
    from exl2_enforcer.errors import SchemaError

    vocab = vocab_by_name("mini")
    options = SchemaOptions(strict_objects=strict_objects)
    overlapping = {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                             {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}]}
    assert not validator_for(overlapping).is_valid({"b": 1})  # both branches match
    with pytest.raises(SchemaError) as info:
        compile_json_schema(overlapping, vocab, options)
    assert info.value.pointer == "/oneOf" and "overlap" in str(info.value)

    closed = {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                         "additionalProperties": False},
                        {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"],
                         "additionalProperties": False}]}
    g = compile_json_schema(closed, vocab, options)
    for value in ({"a": 1}, {"b": 1}, {"a": 1, "b": 1}, {}, {"c": 1}):
        text = json.dumps(value).encode()
        assert g.automaton.matches(text) == validator_for(closed).is_valid(value), value
