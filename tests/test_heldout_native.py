"""Held-out exactness of the native cold path: plain DFA rows in C and whitespace runs counted.

Schemas nobody tuned the engine for (an OpenAI-style tool, a pydantic model with
Optional/Union/Literal/enums and nested item objects, recursive ``$ref``,
``patternProperties`` and ``additionalProperties`` schemas, a union of tool calls, counted
patterns, formats, bounded numbers and ``multipleOf``) plus regexes, used through the public
API.  Along every token sequence the packed masks of three cold paths must be equal: the C
walk counting whitespace runs (the default), the C walk stepping every whitespace byte
(``native.ws_runs = False``) and the numpy walks with Python rows (``native.enabled = False``).
The sequences are valid instances written compact, with ``json.dumps`` separators,
indented by 2 and 4 spaces, by tabs and with CRLF line ends, and seeded random walks; a
valid instance is accepted exactly when its longest whitespace run fits ``max_whitespace``
and its nesting fits ``max_depth``, and every random walk that finishes is valid under
``jsonschema``.  Random mixed whitespace at every place inside a value (listed enum/const
values too) is accepted when every run fits and refused exactly at the token holding the
first byte past the limit.  llama2 is only walked at random: its encoder prefixes a space.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from data_sets import in_ci
from enforcer_oracle import encode, generate, validator_for, vocab_by_name

from exl2_enforcer import CompiledGrammar, Matcher, SchemaOptions, compile_json_schema, compile_regex
from exl2_enforcer.engine import native
from exl2_enforcer.grammar import GRAMMAR_CACHE

needs_native = pytest.mark.skipif(not native.available and not in_ci(),
                                  reason="C extension not built (no compiler at install); CI requires it")
pytestmark = needs_native

#: the three cold paths: (native.enabled, native.ws_runs)
PATHS = {"C, whitespace runs": (True, True), "C, whitespace stepped": (True, False), "numpy": (False, False)}

WEATHER_TOOL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and country"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "include_hourly": {"type": "boolean"},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
PYDANTIC_ORDER = {  # as pydantic v2 writes Optional[...], Union[int, Literal[...]], an Enum and list[Item]
    "$defs": {
        "Status": {"enum": ["pending", "shipped", "delivered"], "title": "Status", "type": "string"},
        "Item": {
            "properties": {
                "sku": {"pattern": "^[A-Z]{3}-\\d{4,6}$", "title": "Sku", "type": "string"},
                "qty": {"exclusiveMinimum": 0, "maximum": 1000, "title": "Qty", "type": "integer"},
                "price": {"anyOf": [{"multipleOf": 0.5, "minimum": 0, "type": "number"}, {"type": "null"}],
                          "default": None, "title": "Price"},
                "tags": {"items": {"type": "string", "maxLength": 12}, "maxItems": 3, "title": "Tags",
                         "type": "array"},
            },
            "required": ["sku", "qty"], "title": "Item", "type": "object",
        },
    },
    "properties": {
        "order_id": {"format": "uuid", "title": "Order Id", "type": "string"},
        "status": {"$ref": "#/$defs/Status"},
        "kind": {"const": "order", "title": "Kind", "type": "string"},
        "items": {"items": {"$ref": "#/$defs/Item"}, "minItems": 1, "maxItems": 4, "title": "Items", "type": "array"},
        "note": {"anyOf": [{"type": "string", "maxLength": 30}, {"type": "null"}], "default": None, "title": "Note"},
        "priority": {"anyOf": [{"type": "integer"}, {"type": "string", "enum": ["low", "high"]}], "title": "Priority"},
        "placed_at": {"format": "date-time", "title": "Placed At", "type": "string"},
    },
    "required": ["order_id", "status", "kind", "items", "placed_at"],
    "title": "Order", "type": "object",
}
RECURSIVE_COMMENT = {
    "$defs": {"Comment": {
        "type": "object",
        "properties": {
            "author": {"type": "string", "format": "email"},
            "body": {"type": "string", "minLength": 1, "maxLength": 40},
            "replies": {"type": "array", "items": {"$ref": "#/$defs/Comment"}, "maxItems": 3},
        },
        "required": ["author", "body"],
    }},
    "$ref": "#/$defs/Comment",
}
OPEN_MAP = {
    "type": "object",
    "properties": {"id": {"type": "integer"}},
    "patternProperties": {"^x-[a-z]+$": {"type": "string", "format": "hostname"},
                          "^n_\\d{2}$": {"type": "number", "minimum": -1.5, "maximum": 99.5}},
    "additionalProperties": {"type": "array", "items": {"type": "string", "format": "ipv4"}, "maxItems": 2},
    "maxProperties": 5,
}
HEADERS = {"type": "object", "additionalProperties": {"type": "string", "format": "uri", "maxLength": 60},
           "maxProperties": 4}
SEARCH_TOOLS = {"oneOf": [
    {"type": "object", "properties": {"tool": {"const": "search"}, "query": {"type": "string", "minLength": 2},
                                      "limit": {"type": "integer", "minimum": 1, "maximum": 50, "multipleOf": 5}},
     "required": ["tool", "query"], "additionalProperties": False},
    {"type": "object", "properties": {"tool": {"const": "fetch"}, "url": {"type": "string", "format": "uri"},
                                      "timeout": {"type": "number", "exclusiveMaximum": 30, "minimum": 0.5}},
     "required": ["tool", "url"], "additionalProperties": False},
    {"type": "object", "properties": {"tool": {"const": "ping"}, "host": {"type": "string", "format": "ipv4"}},
     "required": ["tool", "host"], "additionalProperties": False},
]}
CODES = {
    "type": "array",
    "items": {"type": "object",
              "properties": {"code": {"type": "string", "pattern": "^[A-F0-9]{2}(:[A-F0-9]{2}){5}$"},
                             "zip": {"type": "string", "pattern": "^\\d{5}(-\\d{4})?$"},
                             "ratio": {"type": "number", "minimum": 0, "maximum": 1},
                             "level": {"type": "integer", "multipleOf": 3, "minimum": -9, "maximum": 30}},
              "required": ["code"]},
    "maxItems": 4,
}

#: name -> (schema, valid instances)
CASES: dict[str, tuple[Any, list[Any]]] = {
    "weather_tool": (WEATHER_TOOL, [
        {"name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius", "days": 3}},
        {"name": "get_weather", "arguments": {"location": "Zürich \"CH\"\n", "unit": "fahrenheit",
                                              "include_hourly": True}},
    ]),
    "pydantic_order": (PYDANTIC_ORDER, [
        {"order_id": "123e4567-e89b-12d3-a456-426614174000", "status": "shipped", "kind": "order",
         "items": [{"sku": "ABC-1234", "qty": 2, "price": 12.5, "tags": ["red", "xl"]},
                   {"sku": "XYZ-000001", "qty": 1000, "price": None}],
         "note": None, "priority": "high", "placed_at": "2024-02-29T23:59:59.123+05:30"},
    ]),
    "recursive_comment": (RECURSIVE_COMMENT, [
        {"author": "a@b.co", "body": "hi", "replies": [
            {"author": "x.y@example.org", "body": "nested", "replies": [
                {"author": "q@q.io", "body": "deep", "replies": []}]}]},
    ]),
    "open_map": (OPEN_MAP, [{"id": 5, "x-host": "example.com", "n_42": 99.5,
                             "other": ["10.0.0.1", "255.255.255.255"]}]),
    "headers": (HEADERS, [{"Location": "https://example.com/a?b=c#d", "X-Ref": "urn:isbn:0451450523"}]),
    "search_tools": (SEARCH_TOOLS, [{"tool": "fetch", "url": "http://example.org/x", "timeout": 29.5},
                                    {"tool": "ping", "host": "192.168.1.254"}]),
    "codes": (CODES, [[{"code": "AB:CD:EF:01:23:45", "zip": "12345-6789", "ratio": 0.25, "level": -9},
                       {"code": "00:00:00:00:00:00", "zip": "00000", "ratio": 1, "level": 30}]]),
}
#: whitespace inside listed values (enum/const objects and arrays), a closed tuple and non-ASCII keys:
#: only in the whitespace test
LITERAL_CASES: dict[str, tuple[Any, list[Any]]] = {
    "enum_objects": ({"enum": [{"a": [1, 2], "b": {"c": None}}, [True, None, "x y"], {"k": []}]},
                     [{"a": [1, 2], "b": {"c": None}}, [True, None, "x y"]]),
    "const_nested": ({"type": "object", "properties": {
        "cfg": {"const": {"mode": "fast", "levels": [1, [2, 3]]}}, "n": {"type": "integer"}}, "required": ["cfg"]},
        [{"cfg": {"mode": "fast", "levels": [1, [2, 3]]}, "n": -4}]),
    "prefix_items": ({"type": "array", "prefixItems": [{"type": "string", "format": "date"},
                                                      {"type": "number", "multipleOf": 0.25}, {"enum": ["a", 1]}],
                      "items": False, "minItems": 2}, [["2024-01-31", 0.75, 1]]),
    "unicode_keys": ({"type": "object", "properties": {
        "日本": {"type": "string", "maxLength": 3},
        "emoji😀": {"type": "array", "items": {"type": "integer"}, "maxItems": 5}}, "required": ["日本"]},
        [{"日本": "語😀x", "emoji😀": [1, -2, 3]}]),
}
FORCED_TOKENIZERS = ["llama3", "qwen3", "gemma3", "deepseek_v3"]
ALL_TOKENIZERS = ["llama3", "qwen3", "llama2", "gemma3", "deepseek_v3"]

SPELLINGS: dict[str, Callable[[Any], str]] = {
    "compact": lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")),
    "default": lambda v: json.dumps(v, ensure_ascii=False),
    "indent2": lambda v: json.dumps(v, ensure_ascii=False, indent=2),
    "indent4": lambda v: json.dumps(v, ensure_ascii=False, indent=4),
    "tabs": lambda v: json.dumps(v, ensure_ascii=False, indent="\t"),
    "crlf": lambda v: json.dumps(v, ensure_ascii=False, indent=2).replace("\n", "\r\n"),
}


def longest_whitespace_run(text: str) -> int:
    """Longest run of JSON whitespace outside strings in ``text``."""
    best = run = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
            continue
        run = run + 1 if ch in " \t\r\n" else 0
        best = max(best, run)
        in_string = ch == '"'
    return best


def allows(mask: np.ndarray, token_id: int) -> bool:
    return bool((int(mask[token_id >> 5]) >> (token_id & 31)) & 1)


def masks_along(compile_grammar: Callable[[], CompiledGrammar], ids: list[int]) -> tuple[list[np.ndarray], int, bool]:
    """Masks of a fresh grammar (cold) before each of ``ids`` and after the last; the number of
    tokens accepted before the first one the mask refuses; whether the matcher then accepts."""
    m = Matcher(compile_grammar())
    masks = []
    for i, tid in enumerate(ids):
        masks.append(m.packed_mask().copy())
        if not allows(masks[-1], tid):
            return masks, i, False
        m.accept_token(tid)
    masks.append(m.packed_mask().copy())
    return masks, len(ids), m.is_accepting()


def same_on_every_path(compile_grammar: Callable[[], CompiledGrammar], ids: list[int], label: object,
                       monkeypatch: pytest.MonkeyPatch) -> tuple[int, bool]:
    """Run ``ids`` through each cold path (a fresh compile each); assert equal masks and outcomes;
    return the numpy path's (tokens accepted, accepting at the end)."""
    runs = {}
    for path, (enabled, ws_runs) in PATHS.items():
        monkeypatch.setattr(native, "enabled", enabled)
        monkeypatch.setattr(native, "ws_runs", ws_runs)
        GRAMMAR_CACHE.clear()
        runs[path] = masks_along(compile_grammar, ids)
    GRAMMAR_CACHE.clear()
    ref_masks, ref_accepted, ref_accepting = runs["numpy"]
    for path, (masks, accepted, accepting) in runs.items():
        assert (accepted, accepting) == (ref_accepted, ref_accepting), (label, path)
        for i, (a, b) in enumerate(zip(masks, ref_masks)):
            assert np.array_equal(a, b), f"{label}: {path} mask {i} differs from numpy's (after ids {ids[:i][-4:]})"
    return ref_accepted, ref_accepting


def schema_grammar(schema: Any, tokenizer: str, **options: Any) -> Callable[[], CompiledGrammar]:
    vocab, opts = vocab_by_name(tokenizer), SchemaOptions(**options)
    return lambda: compile_json_schema(schema, vocab, opts)


#: each spelling on two of the tokenizers, every tokenizer three times
SPELLING_RUNS = [(spelling, FORCED_TOKENIZERS[(i + j) % len(FORCED_TOKENIZERS)])
                 for i, spelling in enumerate(SPELLINGS) for j in (0, 2)]


@pytest.mark.parametrize(("spelling", "tokenizer"), SPELLING_RUNS)
def test_valid_instances_give_equal_masks_and_are_accepted_when_their_whitespace_fits(tokenizer, spelling,
                                                                                      monkeypatch):
    """Each case's valid instances in this spelling, at max_whitespace 0, 1, 3 and 20 (one per case,
    in turn): every path gives the numpy masks, and the instance is accepted exactly when its
    longest whitespace run fits (else refused at the same token on every path)."""
    limits = [0, 1, 3, 20]
    for k, (name, (schema, instances)) in enumerate(CASES.items()):
        check = validator_for(schema)
        max_whitespace = limits[(k + FORCED_TOKENIZERS.index(tokenizer) + len(spelling)) % len(limits)]
        make = schema_grammar(schema, tokenizer, max_whitespace=max_whitespace)
        for instance in instances:
            assert check.is_valid(instance), (name, instance)
            text = SPELLINGS[spelling](instance)
            ids = encode(tokenizer, text)
            assert vocab_by_name(tokenizer).decode_bytes(ids) == text.encode()
            accepted, accepting = same_on_every_path(make, ids, (name, spelling, max_whitespace), monkeypatch)
            fits = longest_whitespace_run(text) <= max_whitespace
            assert accepting == fits, (name, spelling, max_whitespace, accepted, len(ids))


def sprinkle_whitespace(compact: str, rnd: random.Random, max_whitespace: int, overflow: bool) -> tuple[str, int]:
    """``compact`` JSON with random whitespace runs of mixed bytes at every place JSON allows one
    inside the value, each at most ``max_whitespace`` long (often exactly that); with ``overflow``,
    one run is one byte longer.  Returns the text and the UTF-8 offset of the first byte past the
    limit (-1 without ``overflow``)."""
    places = [i for i, ch in enumerate(json_structure(compact)) if ch]
    lengths = [rnd.choice([0, min(1, max_whitespace), max_whitespace, rnd.randint(0, max_whitespace)]) for _ in places]
    if overflow:
        lengths[rnd.randrange(len(places))] = max_whitespace + 1
    out, over, last = [], -1, 0
    for place, n in zip(places, lengths):
        out.append(compact[last:place])
        last = place
        if n > max_whitespace:
            over = len("".join(out).encode()) + max_whitespace
        out.append("".join(rnd.choice(" \t\r\n  \n") for _ in range(n)))
    out.append(compact[last:])
    return "".join(out), over


def json_structure(compact: str) -> list[bool]:
    """Per character index of ``compact`` (plus one past the end): whether a whitespace run may
    stand just before it inside the value (after ``{[,:`` or before ``}]``)."""
    ok = [False] * (len(compact) + 1)
    in_string = escaped = False
    for i, ch in enumerate(compact):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
            continue
        if ch in "}]":
            ok[i] = True
        if ch in "{[,:":
            ok[i + 1] = True
        in_string = ch == '"'
    ok[len(compact)] = False  # nothing may follow the value
    return ok


@pytest.mark.parametrize("tokenizer", ["llama3", "qwen3", "gemma3"])
def test_random_whitespace_is_counted_exactly(tokenizer, monkeypatch):
    """Random runs of mixed JSON whitespace (spaces, tabs, CR, LF) at every place inside the value,
    listed values included, up to max_whitespace 1, 2, 3 or 5: equal masks on every path; accepted when every run fits,
    else refused exactly at the token holding the first byte past the limit."""
    rnd = random.Random(tokenizer)
    vocab = vocab_by_name(tokenizer)
    for name, (schema, instances) in {**CASES, **LITERAL_CASES}.items():
        max_whitespace = rnd.choice([1, 2, 3, 5])
        make = schema_grammar(schema, tokenizer, max_whitespace=max_whitespace)
        for overflow in (False, True):
            compact = json.dumps(instances[0], ensure_ascii=False, separators=(",", ":"))
            text, over = sprinkle_whitespace(compact, rnd, max_whitespace, overflow)
            ids = encode(tokenizer, text)
            assert vocab.decode_bytes(ids) == text.encode()
            accepted, accepting = same_on_every_path(make, ids, (name, text), monkeypatch)
            assert accepting == (not overflow), (name, text)
            if overflow:
                before = len(vocab.decode_bytes(ids[:accepted]))
                assert before <= over < before + len(vocab.token_bytes[ids[accepted]]), (name, text, accepted)


@pytest.mark.parametrize("tokenizer", ["llama3", "qwen3", "deepseek_v3"])
def test_max_depth_refuses_the_same_token_on_every_path(tokenizer, monkeypatch):
    """The recursive comment nests 6 levels: max_depth 6 takes it pretty-printed, max_depth 3 refuses
    it at the same token on every path, inside the second ``replies`` (the first that opens level 4)."""
    schema, (instance,) = CASES["recursive_comment"]
    text = json.dumps(instance, indent=1)
    ids = encode(tokenizer, text)
    _, accepting = same_on_every_path(schema_grammar(schema, tokenizer, max_depth=6, max_whitespace=8), ids,
                                      "depth 6", monkeypatch)
    assert accepting
    accepted, accepting = same_on_every_path(schema_grammar(schema, tokenizer, max_depth=3, max_whitespace=8), ids,
                                             "depth 3", monkeypatch)
    assert not accepting
    written = vocab_by_name(tokenizer).decode_bytes(ids[:accepted]).decode()
    first, second = [m.start() for m in re.finditer('"replies"', text)][:2]
    assert first < len(written) <= second + len('"replies": [')


@pytest.mark.parametrize("max_whitespace", [1, 3, 20])
@pytest.mark.parametrize("tokenizer", ALL_TOKENIZERS)
def test_random_walks_give_equal_masks_and_finish_valid(tokenizer, max_whitespace, monkeypatch):
    """Seeded random walks over the default path's masks (whitespace tokens included); replayed on
    every path they give the same masks, and those that finish are valid under jsonschema."""
    rng = np.random.default_rng([ALL_TOKENIZERS.index(tokenizer), max_whitespace])
    finished = 0
    names = list(CASES)
    for name in names[max_whitespace % 3::3] + names[ALL_TOKENIZERS.index(tokenizer) % 3::3][:1]:
        schema, _ = CASES[name]
        make = schema_grammar(schema, tokenizer, max_whitespace=max_whitespace, max_depth=4)
        GRAMMAR_CACHE.clear()
        gen = generate(make(), rng, budget=120)
        accepted, _ = same_on_every_path(make, gen.ids, (name, "walk"), monkeypatch)
        assert accepted == len(gen.ids)
        if gen.finished:
            finished += 1
            value = json.loads(gen.text)
            assert validator_for(schema).is_valid(value), (name, gen.text)
    assert finished > 0


REGEXES = {
    "phone": (r"\+?1?[ -]?\(?\d{3}\)?[ -]?\d{3}-\d{4}", ["+1 (555) 123-4567", "555 123-4567"]),
    "iso_week": (r"\d{4}-W(0[1-9]|[1-4]\d|5[0-3])(-[1-7])?", ["2024-W09-3", "1999-W53"]),
    "words": (r"([A-Z][a-z]{1,8} ){2,4}[a-z]+\.", ["Hello World again.", "Ab Cd Ef Gh done."]),
    "spaced_json": (r"[ \t]{0,6}\{\s{0,4}\"k\" *: *\d{1,3}[\r\n ]{0,3}\}", ['  \t{ "k" : 12 }', '{\n\n"k":1\r\n}']),
}


#: ECMA-262's ``\s`` (WhiteSpace and LineTerminator) for Python's ``re``, whose ``\s`` also takes
#: U+001C..U+001F and U+0085 but not U+FEFF
ECMA_SPACE = "[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"


def python_pattern(pattern: str) -> str:
    return pattern.replace("\\s", ECMA_SPACE)


@pytest.mark.parametrize("tokenizer", ["llama3", "qwen3", "gemma3"])
def test_regexes_give_equal_masks_and_match(tokenizer, monkeypatch):
    """Regex mode: matching texts are accepted with equal masks on every path; random walks replay
    equally and those that finish match the pattern."""
    rng = np.random.default_rng(FORCED_TOKENIZERS.index(tokenizer))
    vocab = vocab_by_name(tokenizer)
    for name, (pattern, texts) in REGEXES.items():
        def make(pattern: str = pattern) -> CompiledGrammar:
            return compile_regex(pattern, vocab)
        for text in texts:
            assert re.fullmatch(python_pattern(pattern), text)
            ids = encode(tokenizer, text)
            assert vocab.decode_bytes(ids) == text.encode()
            assert same_on_every_path(make, ids, (name, text), monkeypatch)[1]
        for _ in range(2):
            GRAMMAR_CACHE.clear()
            gen = generate(make(), rng, budget=50)
            same_on_every_path(make, gen.ids, (name, "walk"), monkeypatch)
            if gen.finished:
                assert re.fullmatch(python_pattern(pattern), gen.text.decode()), (name, gen.text)
