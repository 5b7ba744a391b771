"""Bounded, linear compiles: enum/const equality and size, deep schemas, the compile budget,
vocabulary coverage, end ids at load, and the grammar cache's key and byte bound.

Answers are checked by forcing real token ids (the packaged Llama 3 vocabulary, encoded by
its own Hugging Face tokenizer) through the matcher, with ``jsonschema`` as the oracle.
"""

from __future__ import annotations

import gc
import hashlib
import json
import lzma

import jsonschema
import numpy as np
import pytest
import referencing
import referencing.jsonschema
from enforcer_oracle import MINI_TOKENIZER_FILE, encode, vocab_by_name

from exl2_enforcer import grammar as G
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.compile.schema.values import dedupe_json, json_equal, json_key
from exl2_enforcer.errors import SchemaError, VocabularyError
from exl2_enforcer.grammar import GrammarCache, compile_choice, compile_json_schema
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary


@pytest.fixture(scope="module")
def mini() -> TokenVocabulary:
    return vocab_by_name("mini")


def forced(g, text: str) -> bool:
    """Whether the real token ids of ``text`` all pass the masks and an end id may follow."""
    m = Matcher(g)
    for t in encode("mini", text):
        allowed = m.allowed_ids()
        in_mask = bool(np.isin(t, allowed))
        took = m.try_accept(t)
        assert in_mask == took, f"mask and automaton disagree on token {t} in {text!r}"
        if not took:
            return False
    ends = np.isin(sorted(g.vocab.end_ids), m.allowed_ids())
    assert ends.any() == m.is_accepting()
    return m.is_accepting()


def oracle(schema, instance) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


# ----------------------------------------------------------------------------- JSON equality


PAIRS = [
    (1, 1.0), (1, True), (0, False), (True, True), (None, False), (0, 0.0), (-0.0, 0), (2.5, 2.5), (1e300, 10**300),
    ("1", 1), ({"a": 1}, {"a": 1.0}), ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ([1, 2], [2, 1]), ([1, 2], [1.0, 2.0]),
    ({"a": [True]}, {"a": [1]}), ([], {}), ({"a": None}, {}), ([[1]], [[1.0]]), ("a", "a"), ("a", "A"),
]


@pytest.mark.parametrize("a,b", PAIRS)
def test_json_key_agrees_with_jsonschema_const(a, b):
    assert json_equal(a, b) == oracle({"const": a}, b) == oracle({"const": b}, a)
    assert (json_key(a) == json_key(b)) == oracle({"const": a}, b)


def test_dedupe_keeps_first_of_each_equal_group():
    values = [1, 1.0, True, "1", {"a": 1, "b": [1]}, {"b": [1.0], "a": 1}, [1, 2], [2, 1], None, False, 0]
    assert dedupe_json(values) == [1, True, "1", {"a": 1, "b": [1]}, [1, 2], [2, 1], None, False, 0]


def test_json_key_refuses_non_json():
    with pytest.raises(SchemaError, match="set is not a JSON value"):
        json_key({1, 2})


# ----------------------------------------------------------------------------- large enums


BIG_ENUM = [f"item-{i:05d}" for i in range(3000)] + [
    "item", "", "é", "a\"b", 1, 2.5, -7, True, None, {"a": 1, "b": [1, 2]}, [1, "x"], {"b": [1, 2], "a": 1.0}, 1.0,
]


@pytest.mark.parametrize("text", [
    '"item-00000"', '"item-02999"', '"item-01234"', '"item"', '""', '"é"', '"a\\"b"',
    "1", "1.0", "1.00", "2.5", "2.50", "-7", "-7.0", "true", "null",
    '{"a": 1, "b": [1, 2]}', '{"a":1.0,"b":[1,2.0]}', '[1, "x"]',
    '"item-03000"', '"item-0"', '"item-"', '"items"', "false", "0", "2", "-7.5", '"1"', "[1]", '{"a": 1}',
    '["x", 1]', '{"a": 1, "b": [2, 1]}',
])
def test_big_enum_matches_jsonschema(mini, text):
    schema = {"enum": BIG_ENUM}
    g = compile_json_schema(schema, mini)
    assert forced(g, text) == oracle(schema, json.loads(text)), text


def test_big_enum_escape_spellings_follow_the_escapes_option(mini):
    schema = {"enum": BIG_ENUM}
    # canonical escapes (the default) spell an enum string one way only, as documented
    assert not forced(compile_json_schema(schema, mini), '"\\u00e9"')
    assert forced(compile_json_schema(schema, mini, SchemaOptions(escapes="all")), '"\\u00e9"')


def test_enum_object_in_other_key_order_with_any_order(mini):
    schema = {"enum": [{"a": 1, "b": [1, 2]}, {"c": True}]}
    g = compile_json_schema(schema, mini, SchemaOptions(property_order="any"))
    for text in ('{"b": [1, 2], "a": 1}', '{"a": 1.0, "b": [1, 2]}', '{"c": true}'):
        assert forced(g, text) and oracle(schema, json.loads(text))
    for text in ('{"b": [2, 1], "a": 1}', '{"c": 1}', '{"a": 1}'):
        assert not forced(g, text) and not oracle(schema, json.loads(text))


def test_enum_with_sibling_keywords_keeps_only_valid_values(mini):
    schema = {"type": "integer", "enum": [1, 1.0, True, "1", 2.5, 3]}
    g = compile_json_schema(schema, mini)
    for text in ("1", "3", "true", '"1"', "2.5", "2"):
        assert forced(g, text) == oracle(schema, json.loads(text)), text


def test_enum_strings_share_prefixes_in_the_nfa():
    values = [f"shared-prefix-{i}" for i in range(5000)]
    nfa, _root, _w = compile_schema({"enum": values})
    spelled = sum(len(json.dumps(v)) for v in values)
    # shared prefixes and suffixes: far fewer states than bytes in the values
    assert len(nfa) < spelled // 3


def test_enum_intersection_in_all_of(mini):
    schema = {"allOf": [{"enum": [1, 2, 3, "a", {"k": 1}]}, {"enum": [3.0, "a", {"k": 1.0}, True]}]}
    g = compile_json_schema(schema, mini)
    for text in ("3", "3.0", '"a"', '{"k": 1}', "1", "true", "2"):
        assert forced(g, text) == oracle(schema, json.loads(text)), text


def test_choice_of_thousands(mini):
    choices = [f"opt{i}" for i in range(2000)] + ["o", "opt"]
    g = compile_choice(choices, mini)
    for text, ok in (("opt1999", True), ("opt", True), ("o", True), ("op", False), ("opt2000", False)):
        assert forced(g, text) == ok, text


# ----------------------------------------------------------------------------- deep schemas


def nested_objects(n: int) -> tuple[dict, str]:
    schema: dict = {"type": "integer"}
    text = "7"
    for _ in range(n):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
        text = '{"a":' + text + "}"
    return schema, text


def nested_arrays(n: int) -> tuple[dict, str]:
    schema: dict = {"type": "integer"}
    text = "7"
    for _ in range(n):
        schema = {"type": "array", "items": schema}
        text = "[" + text + "]"
    return schema, text


@pytest.mark.parametrize("make,n", [(nested_objects, 100), (nested_arrays, 200)])
def test_deep_schemas_compile_and_force(mini, make, n):
    schema, text = make(n)
    g = compile_json_schema(schema, mini, SchemaOptions(max_depth=n))  # the value nests n levels
    assert forced(g, text)
    assert not forced(g, text[1:])


def test_default_max_depth_bounds_deep_values(mini):
    """max_depth (default 16) bounds how deep the written value nests, recursive or not."""
    schema, _text = nested_objects(100)  # every value of it nests 100 deep: refused, naming the option
    with pytest.raises(SchemaError, match="deeper than max_depth=16 .*SchemaOptions.max_depth"):
        compile_json_schema(schema, mini)
    schema, text = nested_arrays(200)  # [] is a value one level deep: compiles, nothing past 16 levels
    g = compile_json_schema(schema, mini)
    assert not forced(g, text)
    assert forced(g, "[" * 16 + "]" * 16) and not forced(g, "[" * 17 + "]" * 17)


@pytest.mark.parametrize("make,n,limit", [(nested_arrays, 300, 256), (nested_objects, 20, 30)])
def test_too_deep_schema_names_pointer_and_limit(mini, make, n, limit):
    schema, _text = make(n)
    with pytest.raises(SchemaError) as err:
        compile_json_schema(schema, mini, SchemaOptions(max_schema_depth=limit))
    assert f"max_schema_depth={limit}" in str(err.value)
    depth = err.value.pointer.count("/") + 1
    assert depth == limit + 1
    # the pointer names a real place in the schema
    node = schema
    for part in err.value.pointer.split("/")[1:]:
        node = node[part]


def test_raising_the_depth_limit_compiles_deeper(mini):
    schema, text = nested_arrays(400)
    with pytest.raises(SchemaError, match="max_schema_depth=256"):
        compile_json_schema(schema, mini)
    g = compile_json_schema(schema, mini, SchemaOptions(max_schema_depth=500, max_depth=400))
    assert forced(g, text)


def test_deep_enum_value_is_guarded(mini):
    value: list = []
    for _ in range(2000):
        value = [value]
    with pytest.raises(SchemaError, match="max_schema_depth"):
        compile_json_schema({"const": value}, mini)


# ----------------------------------------------------------------------------- compile budget


class StepClock:
    """A clock that advances ``step`` seconds on every reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.readings = 0.0, step, 0

    def __call__(self) -> float:
        self.now += self.step
        self.readings += 1
        return self.now


WIDE = {"type": "object", "properties": {f"p{i}": {"type": "array", "items": {"type": "string"}} for i in range(40)}}


def test_compile_timeout_names_the_pointer_being_compiled():
    clock = StepClock(1.0)
    with pytest.raises(SchemaError, match=r"compile_timeout_s=5 s") as err:
        compile_schema(WIDE, SchemaOptions(compile_timeout_s=5), clock=clock)
    assert err.value.pointer.startswith("/properties/p")
    assert clock.readings <= 8  # stopped within a step of the limit, not at the end


def test_compile_within_the_timeout_succeeds():
    clock = StepClock(1e-3)
    nfa, _root, _w = compile_schema(WIDE, SchemaOptions(compile_timeout_s=5), clock=clock)
    assert len(nfa) > 0 and clock.readings > 40


def hashed(i: int) -> str:
    """Strings with little shared structure (a numbered series would compress to a few states)."""
    return hashlib.sha1(str(i).encode()).hexdigest()[:16]


def test_nfa_state_budget_is_deterministic(mini):
    schema = {"type": "object", "properties": {"small": {"type": "integer"},
                                               "big": {"enum": [hashed(i) for i in range(5000)]}}}
    with pytest.raises(SchemaError, match="max_nfa_states=2000") as err:
        compile_json_schema(schema, mini, SchemaOptions(max_nfa_states=2000))
    assert err.value.pointer == "/properties/big"
    g = compile_json_schema(schema, mini, SchemaOptions(max_nfa_states=200_000))
    assert forced(g, json.dumps({"small": 1, "big": hashed(4999)}))


@pytest.mark.parametrize("field,value", [("compile_timeout_s", 0), ("max_nfa_states", 0), ("max_schema_depth", 0)])
def test_budget_options_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        SchemaOptions(**{field: value})


# ----------------------------------------------------------------------------- vocabulary coverage


def without_bytes(vocab: TokenVocabulary, banned: bytes) -> TokenVocabulary:
    table = [None if b is None or any(x in banned for x in b) else b for b in vocab.token_bytes]
    return TokenVocabulary(table, special_ids=vocab.special_ids, end_ids=vocab.end_ids, kind=vocab.kind,
                           source="mini without digits")


def test_vocabulary_without_digits_is_refused_for_numbers(mini):
    no_digits = without_bytes(mini, b"0123456789")
    with pytest.raises(VocabularyError, match="0x30-0x39"):
        compile_json_schema({"type": "integer"}, no_digits)
    # a language that needs no digit still compiles, and its masks are never empty
    g = compile_json_schema({"enum": ["yes", "no"]}, no_digits)
    m = Matcher(g)
    for t in encode("mini", '"no"'):
        assert m.allowed_ids().size > 0
        m.accept_token(t)
    assert m.is_accepting()


def test_vocabulary_without_end_ids_is_refused_at_compile(mini):
    no_ends = TokenVocabulary(mini.token_bytes, special_ids=mini.special_ids, kind=mini.kind, source="no ends")
    with pytest.raises(VocabularyError, match="no end id"):
        compile_json_schema({"type": "boolean"}, no_ends)


def mini_json() -> dict:
    return json.loads(lzma.decompress(MINI_TOKENIZER_FILE.read_bytes()).decode("utf-8"))


def test_loader_refuses_a_tokenizer_with_no_end_id():
    data = mini_json()
    for tok in data["added_tokens"]:
        tok["content"] = f"<|renamed_{tok['id']}|>"
    with pytest.raises(VocabularyError, match="no end-of-generation id"):
        TokenVocabulary.from_json_str(json.dumps(data), source="renamed")
    vocab = TokenVocabulary.from_json_str(json.dumps(data), extra_end_ids=[8001], source="renamed")
    assert vocab.end_ids == {8001}


@pytest.mark.parametrize("eos", [4294967295, 1 << 24, [8001, 1 << 30]])
def test_absurd_end_id_in_config_json_is_refused(tmp_path, eos):
    (tmp_path / "tokenizer.json").write_text(json.dumps(mini_json()), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": eos}), encoding="utf-8")
    with pytest.raises(VocabularyError, match=r"end id \d+ is absurd"):
        TokenVocabulary.from_file(tmp_path)


def test_large_but_plausible_end_id_is_kept(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps(mini_json()), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [8001, 9000]}), encoding="utf-8")
    vocab = TokenVocabulary.from_file(tmp_path)
    assert vocab.end_ids == {8001, 9000}  # a padded logits row may hold ids past the tokenizer


# ----------------------------------------------------------------------------- grammar cache


def registry_with(schema) -> referencing.Registry:
    resource = referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT202012)
    return referencing.Registry().with_resource("urn:test:item", resource)


def test_new_registry_at_a_reused_address_gets_its_own_grammar(mini):
    schema = {"$ref": "urn:test:item"}
    for _ in range(3):
        reg = registry_with({"type": "string"})
        g = compile_json_schema(schema, mini, registry=reg)
        assert forced(g, '"x"') and not forced(g, "5")
        del reg, g
        gc.collect()
        reg = registry_with({"type": "integer"})  # very likely at the freed address
        g = compile_json_schema(schema, mini, registry=reg)
        assert forced(g, "5") and not forced(g, '"x"')


def test_options_are_part_of_the_key(mini):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    spaced = compile_json_schema(schema, mini)
    compact = compile_json_schema(schema, mini, SchemaOptions(max_whitespace=0))
    assert forced(spaced, '{"a": 1}') and not forced(compact, '{"a": 1}') and forced(compact, '{"a":1}')
    small = compile_json_schema(schema, mini, mask_cache_bytes=4096)
    assert small.engine.cache_bytes == 4096 and spaced.engine.cache_bytes != 4096


def test_the_compile_budget_stops_a_long_enum_at_its_pointer(mini):
    """An enum of many objects (a machine each) stops within the budget, naming the enum: a clock
    that passes the budget after a few reads, not wall time."""
    schema = {"type": "object", "properties": {"pick": {"enum": [{"k": i, "v": [i, None]} for i in range(3000)]}}}
    reads: list[int] = []

    def clock() -> float:  # one second per read: the budget counts the compiler's checks
        reads.append(1)
        return float(len(reads))

    compile_schema(schema, SchemaOptions(compile_timeout_s=1e9), clock=clock)
    checks = len(reads)
    assert checks >= 10  # the enum's values are checked in chunks, not once at the end
    reads.clear()
    with pytest.raises(SchemaError, match="compile_timeout_s") as err:
        compile_schema(schema, SchemaOptions(compile_timeout_s=checks - 4), clock=clock)
    assert err.value.pointer == "/properties/pick/enum"


def test_a_python_schema_sharing_sub_objects_is_bounded_by_its_text(mini):
    """A schema built in Python that reuses one sub-object in every branch is as large as its JSON
    text (3**k nodes here): it is refused by counting objects/arrays against max_nfa_states before
    meta-validation or the cache key expand it (k=16 ran for minutes), naming a pointer."""
    def dag(k: int) -> dict:
        node: dict = {"type": "integer"}
        for _ in range(k):
            node = {"anyOf": [{"type": "array", "prefixItems": [node, {"type": t}], "items": False, "minItems": 2}
                              for t in ("integer", "string", "boolean")]}
        return node

    options = SchemaOptions(max_nfa_states=5_000, max_depth=16)
    with pytest.raises(SchemaError, match="more than max_nfa_states=5000 objects/arrays") as err:
        compile_json_schema(dag(9), mini, options)
    assert err.value.pointer.startswith("/anyOf/")
    g = compile_json_schema(dag(3), mini, options)  # 3**3 branches: well within
    assert forced(g, "[[[1, 2], \"a\"], true]")


def test_a_schema_read_with_decimals_compiles_uncached(mini):
    """``parse_float=Decimal`` (documented in docs/schema-support.md) made the cache key's json.dumps
    raise a bare TypeError; such a schema now compiles every time, outside the cache (no JSON text
    keeps a Decimal apart from a float, which compares after rounding), and its bounds hold."""
    from decimal import Decimal

    schema = json.loads('{"type": "number", "minimum": -1.5, "maximum": 0.1}', parse_float=Decimal)
    assert isinstance(schema["maximum"], Decimal)
    before = len(G.GRAMMAR_CACHE)
    g = compile_json_schema(schema, mini)
    assert len(G.GRAMMAR_CACHE) == before and g not in G.GRAMMAR_CACHE
    assert compile_json_schema(schema, mini) is not g
    check = jsonschema.Draft202012Validator(schema)
    for text in ("0.1", "0.10", "-1.5", "0", "0.2", "0.11", "-1.51", "-2"):
        assert forced(g, text) == check.is_valid(json.loads(text, parse_float=Decimal)), text
    floats = compile_json_schema(json.loads('{"type": "number", "minimum": -1.5, "maximum": 0.1}'), mini)
    assert floats in G.GRAMMAR_CACHE and floats is not g
    # Decimals listed in enum/const (they were "not a JSON value", at the root's pointer)
    cases = {'{"enum": [1.5, 2, 0.1]}': (["1.5", "1.50", "2", "2.0", "0.1", "0.10"], ["1.6", "0.5", "1", "0.11"]),
             '{"type": "array", "items": {"const": 0.5}}': (["[0.5]", "[0.50, 0.5]", "[]"], ["[0.4]", "[0.05]"])}
    for text, (valid, invalid) in cases.items():
        listed = json.loads(text, parse_float=Decimal)
        g = compile_json_schema(listed, mini)
        check = jsonschema.Draft202012Validator(listed)
        for sample in valid + invalid:
            assert forced(g, sample) == check.is_valid(json.loads(sample, parse_float=Decimal)), (text, sample)
        assert all(forced(g, v) for v in valid)


def test_cache_clear_and_hits(mini):
    schema = {"type": "array", "items": {"type": "boolean"}}
    g1 = compile_json_schema(schema, mini)
    assert compile_json_schema(json.dumps(schema), mini) is g1
    G.GRAMMAR_CACHE.clear()
    assert g1 not in G.GRAMMAR_CACHE
    g2 = compile_json_schema(schema, mini)
    assert g2 is not g1 and g2 in G.GRAMMAR_CACHE


def test_cache_is_bounded_in_bytes(mini):
    grammars = [compile_json_schema({"type": "array", "items": {"type": "string", "maxLength": i + 1}}, mini)
                for i in range(6)]
    for g in grammars:
        forced(g, '["ab", "c"]')  # grow each one's DFA and mask cache
    sizes = [g.retained_bytes() for g in grammars]
    assert all(s > 0 for s in sizes)
    limit = max(sizes) * 2 + min(sizes) // 2
    cache = GrammarCache(max_bytes=limit, max_entries=64)
    for i, g in enumerate(grammars):
        assert cache.get_or_build(("k", i), lambda g=g: g) is g
        assert cache.retained_bytes() <= limit
    assert 1 <= len(cache) < len(grammars)
    assert grammars[-1] in cache and grammars[0] not in cache  # least recently used went first


def test_grammar_bigger_than_the_cache_is_returned_not_kept(mini):
    g = compile_json_schema({"type": "string"}, mini)
    cache = GrammarCache(max_bytes=g.retained_bytes() - 1)
    assert cache.get_or_build("k", lambda: g) is g
    assert len(cache) == 0


def test_retained_bytes_grow_with_masks(mini):
    G.GRAMMAR_CACHE.clear()
    g = compile_json_schema({"type": "array", "items": {"type": "integer"}}, mini)
    before = g.retained_bytes()
    assert forced(g, "[1, 22, 333]")
    assert g.retained_bytes() > before


def test_cache_entry_bound(mini):
    cache = GrammarCache(max_entries=2)
    gs = [compile_json_schema({"const": i}, mini) for i in range(3)]
    for i, g in enumerate(gs):
        cache.get_or_build(i, lambda g=g: g)
    assert len(cache) == 2 and gs[0] not in cache


def test_long_names_and_values_need_no_recursion(mini):
    long = "ab" * 1500
    schema = {"type": "object", "properties": {long: {"type": "integer"}, "k": {"enum": [long, "x" * 5000]}},
              "additionalProperties": {"type": "string"}}
    g = compile_json_schema(schema, mini)
    for inst in ({long: 1}, {long[:-1]: "s"}, {long + "a": "s"}, {long: "s"}, {long[:-1]: 1},
                 {"k": long}, {"k": "x" * 5000}, {"k": "x" * 4999}):
        assert forced(g, json.dumps(inst)) == oracle(schema, inst), str(inst)[:40]


def test_literal_automaton_matches_exactly_its_words():
    import random

    from nfa_walks import plain_matches

    from exl2_enforcer.compile.literal_set import literal_set_fragment
    from exl2_enforcer.compile.nfa import NFA

    rng = random.Random(7)
    for trial in range(200):
        alphabet = b"ab" if trial % 2 else b"abc"
        words = {bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(0, 30))}
        nfa = NFA()
        frag = literal_set_fragment(nfa, words)
        probes = list(words) + [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(40)]
        for w in probes:
            assert plain_matches(nfa, frag, w) == (w in words), (sorted(words), w)


def test_numbered_enum_shares_suffixes():
    nfa, _root, _w = compile_schema({"enum": [f"name_{i}" for i in range(100_000)]})
    assert len(nfa) < 200  # "name_" then the digits of 0..99999: a handful of states, not one per value


def test_lone_surrogate_in_enum_is_a_schema_error(mini):
    with pytest.raises(SchemaError, match="lone surrogate") as err:
        compile_json_schema({"properties": {"s": {"enum": ["ok", "\ud800"]}}}, mini)
    assert err.value.pointer == "/properties/s"


# -- oneOf / anyOf branches that only list values --------------------------------------------
def _forced(g, text: str) -> bool:
    """Whether the automaton accepts ``text`` as a complete value."""
    return g.automaton.matches(text.encode())


def test_documented_enum_as_one_of_consts_is_one_literal_set(mini):
    """{"oneOf": [{"const": v, "title": ...}, ...]} (a documented enum) compiles like an enum, in a
    fraction of the compile budget, with jsonschema's verdict on members, near misses and repeats."""
    values = [f"value_{i}" for i in range(5000)]
    schema = {"oneOf": [{"const": v, "title": f"V{i}", "description": "one of many"} for i, v in enumerate(values)]}
    clock = iter(range(10**9))  # one "second" per budget check: thousands of pairwise checks would trip it
    compile_schema(schema, SchemaOptions(compile_timeout_s=400), clock=lambda: float(next(clock)))
    g = compile_json_schema(schema, mini)
    check = jsonschema.Draft202012Validator(schema)
    for text in ['"value_0"', '"value_4999"', '"value_5000"', '"value_"', '"value_12x"', "12"]:
        assert _forced(g, text) == check.is_valid(json.loads(text)), text


@pytest.mark.parametrize("key", ["oneOf", "anyOf"])
def test_values_listed_twice(mini, key):
    """oneOf: a value two branches list matches both, so it is excluded (1 == 1.0; true != 1); anyOf keeps it."""
    schema = {key: [{"const": 1}, {"enum": [1.0, "a", True]}, {"const": "b", "$comment": "c"}, {"enum": [None]}]}
    g = compile_json_schema(schema, mini)
    check = jsonschema.Draft202012Validator(schema)
    for text in ["1", "1.0", '"a"', "true", '"b"', "null", "2", '"c"', "false"]:
        assert _forced(g, text) == check.is_valid(json.loads(text)), (key, text)
    assert _forced(g, "1") == (key == "anyOf")


def test_one_of_listing_only_repeats_admits_no_value(mini):
    with pytest.raises(SchemaError, match="listed twice") as err:
        compile_json_schema({"properties": {"x": {"oneOf": [{"const": 2}, {"enum": [2.0]}]}}}, mini)
    assert err.value.pointer == "/properties/x"


def test_branch_with_more_than_values_takes_the_general_path(mini):
    schema = {"oneOf": [{"const": "a"}, {"type": "integer", "minimum": 5}]}
    g = compile_json_schema(schema, mini)
    check = jsonschema.Draft202012Validator(schema)
    for text in ['"a"', "5", "4", '"b"']:
        assert _forced(g, text) == check.is_valid(json.loads(text)), text
