"""The literal-set automaton (enum/const strings, choices) and the sealed blocks it emits.

* structure: the block keeps :class:`~exl2_enforcer.compile.nfa.Sealed`'s rules, checked by a
  full walk over its states, and is deterministic;
* language: exactly the words, by a reference NFA matcher, then through the lazy DFA and real
  token masks against ``jsonschema`` (members, near misses, prefixes);
* the automaton's whole-NFA analyses give the same answers when they step over sealed blocks as
  when they visit every state;
* the compile budget counts the block's states before they are made.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random

import jsonschema
import pytest
from enforcer_oracle import vocab_by_name
from nfa_walks import plain_matches

from exl2_enforcer.compile.literal_set import LiteralSet, literal_set_fragment, neighbour_prefixes
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.engine.automaton import Automaton, completion_depth, zero_weight_cycle
from exl2_enforcer.errors import EnforcerError, SchemaError
from exl2_enforcer.grammar import compile_choice, compile_json_schema
from exl2_enforcer.matcher import Matcher


def hexes(n: int, seed: int = 0) -> list[str]:
    """Strings with little shared structure (the case a literal automaton compresses least)."""
    return [hashlib.sha1(f"{seed}:{i}".encode()).hexdigest()[:16] for i in range(n)]


def check_sealed(nfa: NFA, deterministic: bool = True) -> None:
    """Every sealed block keeps the rules of :class:`Sealed` (a full walk over the NFA); the blocks
    of byte literals also read single bytes, at most one edge per byte and state, no epsilon but to
    the exit or its common suffix."""
    entered: dict[int, list[int]] = {}
    for q in range(len(nfa)):
        for t in [*(t for _lo, _hi, t in nfa.edges[q]), *nfa.eps[q]]:
            entered.setdefault(t, []).append(q)
    for lo, block in nfa.sealed.items():
        inside = range(lo, block.exit)
        seen_bytes = set()
        for q in inside:
            assert q not in nfa.calls and q not in nfa.loop_of
            targets = [*(t for _lo, _hi, t in nfa.edges[q]), *nfa.eps[q]]
            assert all(lo <= t <= block.exit for t in targets), q
            seen_bytes.update((a, b) for a, b, _t in nfa.edges[q])
            if deterministic:
                firsts = [a for a, b, _t in nfa.edges[q] if a == b]
                assert len(firsts) == len(nfa.edges[q]) == len(set(firsts)) and len(nfa.eps[q]) <= 1, q
            if q != lo:
                assert all(lo <= p < block.exit for p in entered.get(q, [])), f"{q} entered from outside"
        assert seen_bytes == set(block.byte_ranges)
        # every interior state reaches the exit
        live, todo = {block.exit}, [block.exit]
        back = {t: [p for p in ps if lo <= p < block.exit] for t, ps in entered.items()}
        while todo:
            for p in back.get(todo.pop(), []):
                if p not in live:
                    live.add(p)
                    todo.append(p)
        assert set(inside) <= live


def random_words(rng: random.Random) -> set[bytes]:
    alphabet = rng.choice([b"ab", b"abc", b"a\"", b"\x00\xff"])
    tail = rng.choice([b"", b"\"", b"xy"])  # a common suffix is factored out: cover it with and without
    return {bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) + tail for _ in range(rng.randint(0, 30))}


@pytest.mark.parametrize("seed", range(6))
def test_literal_set_matches_exactly_its_words(seed):
    rng = random.Random(seed)
    for _trial in range(60):
        words = random_words(rng)
        nfa = NFA()
        nfa.state()  # the block need not start at state 0
        frag = literal_set_fragment(nfa, words)
        check_sealed(nfa)
        alphabet = sorted({b for w in words for b in w} | {ord("a")})
        probes = list(words) + [w[:-1] for w in words if w] + [w + b"a" for w in words]
        probes += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 9))) for _ in range(40)]
        for w in probes:
            assert plain_matches(nfa, frag, w) == (w in words), (sorted(words), w)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 500])
def test_neighbour_prefixes_agree_with_a_byte_by_byte_count(n):
    rng = random.Random(n)
    # NUL bytes and words that are prefixes of others: the padded comparison must not be fooled
    words = sorted({bytes(rng.choice(b"\x00\x01a") for _ in range(rng.randint(0, 8))) for _ in range(n)})

    def common(a, b) -> int:
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        return k

    assert neighbour_prefixes(words) == [0] + [common(a, b) for a, b in zip(words, words[1:])]
    texts = sorted({"".join(rng.choice("\x00a\ud800😀é") for _ in range(rng.randint(0, 8))) for _ in range(n)})
    assert neighbour_prefixes(texts) == [0] + [common(a, b) for a, b in zip(texts, texts[1:])]


def test_large_random_sets_match_exactly_their_words():
    rng = random.Random(11)
    for _trial in range(4):
        words = {bytes(rng.choice(b"\x00ab") for _ in range(rng.randint(0, 10))) for _ in range(400)}
        nfa = NFA()
        frag = literal_set_fragment(nfa, words)
        check_sealed(nfa)
        probes = list(words) + [w[:-1] for w in words if w] + [w + b"\x00" for w in words]
        for w in probes:
            assert plain_matches(nfa, frag, w) == (w in words), w


def test_empty_set_matches_nothing_and_the_empty_word_alone_matches_empty():
    nfa = NFA()
    nothing = literal_set_fragment(nfa, [])
    assert not plain_matches(nfa, nothing, b"") and not nfa.sealed
    only_empty = literal_set_fragment(nfa, [b""])
    assert plain_matches(nfa, only_empty, b"") and not plain_matches(nfa, only_empty, b"a")


def test_state_count_is_announced_before_emitting():
    for words in ([b"abc"], [b"", b"a"], [f'"{h}"'.encode() for h in hexes(300)], [b"x%d" % i for i in range(500)]):
        built = LiteralSet(words)
        nfa = NFA()
        literal_set_fragment(nfa, [b"zz", b"zy"])
        before = len(nfa)
        built.emit(nfa)
        assert len(nfa) - before == built.n_states


def test_numbered_series_shares_prefixes_and_suffixes():
    words = [f'"name_{i}"'.encode() for i in range(100_000)]
    built = LiteralSet(words)
    assert built.n_states < 200  # "name_" then the digits of 0..99999 merge into a handful of nodes


def test_random_strings_cost_at_most_their_bytes():
    words = [f'"{h}"'.encode() for h in hexes(2000)]
    built = LiteralSet(words)
    assert built.n_states < sum(map(len, words)) - len(words)  # shared prefixes and the closing quote


def test_ticks_while_building():
    calls = []
    LiteralSet([b"w%d" % i for i in range(3 * LiteralSet.TICK_EVERY)], tick=lambda: calls.append(1))
    assert len(calls) == 3


# ----------------------------------------------------------------------------- through the DFA


def test_automaton_accepts_exactly_the_members_of_a_large_string_enum():
    values = hexes(3000)
    schema = {"enum": values}
    nfa, root, _w = compile_schema(schema)
    check_sealed(nfa)
    a = Automaton(nfa, root)
    validator = jsonschema.Draft202012Validator(schema)
    rng = random.Random(3)
    probes = values[:200] + values[-50:]
    for v in values[:300]:
        i = rng.randrange(len(v))
        probes += [v[:i] + rng.choice("0123456789abcdefg") + v[i + 1:], v[:-1], v + "0", v[1:], v.upper()]
    for p in probes:
        text = json.dumps(p).encode()
        assert a.matches(text) == validator.is_valid(p), p
        assert not a.matches(text[:-1])  # a prefix is never a complete value


@pytest.fixture(scope="module")
def mini():
    return vocab_by_name("mini")


MIXED = ["ab", "a", "", "é", "a\"b\\c", "line\nbreak", "😀", 1, 1.5, -0, True, False, None,
         {"k": [1, "x"]}, [None, {"a": 1}], "1", "true", "null"]


@pytest.mark.parametrize("options", [SchemaOptions(), SchemaOptions(escapes="all"), SchemaOptions(max_whitespace=0)])
def test_mixed_enum_against_jsonschema(mini, options):
    schema = {"properties": {"v": {"enum": MIXED}}, "required": ["v"]}
    g = compile_json_schema(schema, mini, options)
    check_sealed(g.automaton.nfa, deterministic=options.escapes == "canonical")
    validator = jsonschema.Draft202012Validator(schema)
    candidates = MIXED + ["abc", "b", "A", "é ", 1.0, 1.50, 0.0, 2, "false", [None], {"k": [1.0, "x"]}, {"k": []}]
    for v in candidates:
        text = json.dumps({"v": v}, ensure_ascii=False, separators=(",", ":")).encode()
        assert g.automaton.matches(text) == validator.is_valid({"v": v}), v
    if options.escapes == "all":
        assert g.automaton.matches(b'{"v":"\\u00e9"}') and g.automaton.matches(b'{"v":"\\u0061b"}')
    else:
        assert not g.automaton.matches(b'{"v":"\\u00e9"}')


def test_sibling_keywords_filter_a_large_enum(mini):
    values = hexes(2000) + ["short", "x"]
    schema = {"enum": values, "type": "string", "pattern": "^[0-7]", "minLength": 2}
    nfa, root, _w = compile_schema(schema)
    a = Automaton(nfa, root)
    validator = jsonschema.Draft202012Validator(schema)
    kept = [v for v in values if validator.is_valid(v)]
    assert 0 < len(kept) < len(values)
    for v in values:
        assert a.matches(json.dumps(v).encode()) == (v in kept), v


def test_choice_of_many_unrelated_strings(mini):
    choices = hexes(1500, seed=1) + ["x"]
    g = compile_choice(choices, mini)
    for c in choices[:100] + ["x"]:
        assert g.automaton.matches(c.encode())
    for c in ("", choices[0][:-1], choices[0] + "0", "y"):
        assert not g.automaton.matches(c.encode())


def test_first_mask_of_a_large_enum_allows_only_the_opening_quote(mini):
    g = compile_json_schema({"enum": hexes(5000)}, mini)
    m = Matcher(g)
    allowed = [bytes(mini.token_bytes[t]) for t in m.allowed_ids() if mini.token_bytes[t] is not None]
    assert allowed and all(b.startswith(b'"') for b in allowed)
    starts = {json.dumps(v)[:2] for v in hexes(5000)}
    assert {b[:2].decode() for b in allowed if len(b) >= 2} <= starts


# ----------------------------------------------------------------------------- whole-NFA analyses


ANALYSED = {
    "type": "object",
    "properties": {
        "kind": {"enum": hexes(50) + [None, True]},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "any": {"anyOf": [{"const": "fixed"}, {"$ref": "#/$defs/node"}]},
    },
    "$defs": {"node": {"type": "object", "properties": {
        "name": {"enum": ["a", "b"]}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
}


def unsealed(nfa: NFA) -> NFA:
    plain = copy.copy(nfa)
    plain.sealed = {}
    return plain


def test_analyses_agree_with_and_without_sealed_blocks():
    nfa, root, _w = compile_schema(ANALYSED)
    assert len(nfa.sealed) >= 4
    check_sealed(nfa)
    ends = {root.end} | {c.end for c, _r, _w in nfa.calls.values()} | {o.callee_end for o, _k in nfa.loop_of.values()}
    assert completion_depth(nfa, ends) == completion_depth(unsealed(nfa), ends)
    assert zero_weight_cycle(nfa, root) == zero_weight_cycle(unsealed(nfa), root) is None
    sealed, plain = Automaton(nfa, root), Automaton(unsealed(nfa), root)
    assert (sealed.class_of_byte == plain.class_of_byte).all() and sealed.n_classes == plain.n_classes


def test_sealed_blocks_survive_a_template_splice():
    tmpl = NFA()
    frag = literal_set_fragment(tmpl, [b"ab", b"ac"])
    nfa = NFA()
    nfa.state()
    moved = nfa.splice(tmpl, frag)
    check_sealed(nfa)
    assert isinstance(moved, Frag) and plain_matches(nfa, moved, b"ac") and not plain_matches(nfa, moved, b"a")


def test_seal_refuses_overlapping_or_unknown_blocks():
    nfa = NFA()
    literal_set_fragment(nfa, [b"abc"])
    with pytest.raises(ValueError, match="overlaps"):
        nfa.seal(1, 2, [(97, 97)])
    with pytest.raises(ValueError, match="existing states"):
        nfa.seal(len(nfa), len(nfa) + 3, [(97, 97)])


# ----------------------------------------------------------------------------- budget


def test_state_budget_refuses_a_large_enum_before_building_its_states():
    schema = {"properties": {"big": {"enum": hexes(5000)}}}
    with pytest.raises(SchemaError, match="max_nfa_states=20000") as err:
        compile_schema(schema, SchemaOptions(max_nfa_states=20_000))
    assert err.value.pointer == "/properties/big"


def test_time_budget_stops_a_large_enum():
    readings = []

    def clock() -> float:
        readings.append(1)
        return float(len(readings))  # one second per reading

    values = [f"v{i}" for i in range(10 * LiteralSet.TICK_EVERY)]
    with pytest.raises(SchemaError, match="compile_timeout_s") as err:
        compile_schema({"properties": {"e": {"enum": values}}}, SchemaOptions(compile_timeout_s=9.5), clock=clock)
    assert err.value.pointer == "/properties/e"


def test_choice_budget_names_the_parameter(mini):
    choices = hexes(500, seed=2)
    with pytest.raises(EnforcerError, match="max_nfa_states=1000"):
        compile_choice(choices, mini, max_nfa_states=1000)
    assert compile_choice(choices, mini, max_nfa_states=20_000).automaton.matches(choices[7].encode())
    with pytest.raises(EnforcerError, match="max_nfa_states"):
        compile_choice(choices, mini, max_nfa_states=0)


def test_choice_with_a_lone_surrogate_is_refused_by_index(mini):
    with pytest.raises(EnforcerError, match="choice 1 holds a lone surrogate"):
        compile_choice(["ok", "bad\ud800"], mini)


# ----------------------------------------------------------------------------- spelled sets (escapes="all")


SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def spell_char(ch: str, rng: random.Random) -> str:
    """One JSON spelling of ``ch`` inside a string, chosen at random among all of them."""
    cp = ord(ch)
    options = []
    if cp >= 0x20 and ch not in '"\\' and not 0xD800 <= cp <= 0xDFFF:
        options.append(ch)
    if ch in SHORT:
        options.append(SHORT[ch])
    units = [cp] if cp < 0x10000 else [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
    options.append("".join("\\u" + (f"{u:04x}" if rng.random() < 0.5 else f"{u:04X}") for u in units))
    return rng.choice(options)


def spelled(word: str, rng: random.Random) -> bytes:
    return ('"' + "".join(spell_char(ch, rng) for ch in word) + '"').encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("seed", range(4))
def test_spelled_strings_accept_every_spelling_of_exactly_the_members(seed):
    rng = random.Random(seed)
    alphabet = 'ab"\\/\né😀\x01'
    for _trial in range(15):
        words = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(1, 80))}
        schema = {"enum": sorted(words)}
        nfa, root, _w = compile_schema(schema, SchemaOptions(escapes="all"))
        check_sealed(nfa, deterministic=False)
        a = Automaton(nfa, root)
        probes = list(words) + [w[:-1] for w in words if w] + [w + "a" for w in words]
        probes += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(30)]
        for p in probes:
            for _ in range(3):
                text = spelled(p, rng)
                assert a.matches(text) == (p in words), (sorted(words), text)
            assert not a.matches(spelled(p, rng)[:-1])


def test_spelled_strings_leave_out_a_value_no_text_spells():
    # a lone surrogate has no spelling of its own (an escape of it would pair with a following one);
    # as before literal sets, such a value is simply never produced
    nfa, root, _w = compile_schema({"enum": ["\ud800", "x", "y\ud800"]}, SchemaOptions(escapes="all"))
    a = Automaton(nfa, root)
    assert a.matches(b'"x"') and a.matches(b'"\\u0078"')
    assert not a.matches(b'"\\ud800"') and not a.matches(b'"y"') and not a.matches(b'"\\u0078\\u0078"')


def test_a_large_spelled_enum_shares_prefixes(mini):
    values = hexes(2000, seed=4)
    g = compile_json_schema({"enum": values}, mini, SchemaOptions(escapes="all"))
    nfa = g.automaton.nfa
    check_sealed(nfa, deterministic=False)
    # shared prefixes: fewer states than a copy of each character's 7-state spelling per value
    assert len(nfa) < 6 * sum(map(len, values))
    # and the start state holds one configuration, not one per value
    assert len(g.automaton.states[g.automaton.start].configs) == 1
    rng = random.Random(5)
    for v in values[:50]:
        assert g.automaton.matches(spelled(v, rng))
        assert not g.automaton.matches(spelled(v[:-1] + "g", rng))


def test_spelling_shape_is_checked():
    bad = NFA()
    start, end = bad.state(), bad.state()
    bad.edge(start, 97, 97, end)
    bad.edge(end, 98, 98, start)  # an exit with an outgoing edge cannot be merged onto a shared state
    with pytest.raises(ValueError, match="exit"):
        LiteralSet(["ab"], spell=lambda cp: (bad, Frag(start, end)))


def test_time_budget_reaches_the_spellings_of_many_characters():
    readings = []

    def clock() -> float:
        readings.append(1)
        return float(len(readings))  # one second per reading

    # 1,100 distinct characters in 11 values: the values alone would tick no budget check
    values = ["".join(chr(0x4E00 + 100 * i + k) for k in range(100)) for i in range(11)]
    schema = {"properties": {"e": {"enum": values}}}
    with pytest.raises(SchemaError, match="compile_timeout_s") as err:
        compile_schema(schema, SchemaOptions(escapes="all", compile_timeout_s=4.5), clock=clock)
    assert err.value.pointer == "/properties/e"
    readings.clear()
    nfa, root, _w = compile_schema(schema, SchemaOptions(escapes="all", compile_timeout_s=60), clock=clock)
    assert Automaton(nfa, root).matches(json.dumps({"e": values[3]}).encode())
