"""Cross-checks of the ECMA-262 regex compiler against Python's ``re``."""

from __future__ import annotations

import json
import random
import re
import zlib

import pytest
from nfa_walks import coreachable, plain_matches

from exl2_enforcer import Matcher, SchemaError, compile_json_schema, default_vocabulary
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.regex import compile_regex
from exl2_enforcer.errors import RegexError

# -- ECMA -> Python translation ----------------------------------------------------------
_PY_SPACE = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_IN_CLASS = {"d": "0-9", "w": "0-9A-Za-z_", "s": _PY_SPACE}
_OUTSIDE = {"d": "[0-9]", "D": "[^0-9]", "w": "[0-9A-Za-z_]", "W": "[^0-9A-Za-z_]",
            "s": f"[{_PY_SPACE}]", "S": f"[^{_PY_SPACE}]"}


def to_python(pattern: str) -> str:
    """Translate the ECMA patterns used below into an equivalent Python ``re`` pattern.

    Handles the syntax that differs: ASCII ``\\d``/``\\w``, Unicode ``\\s``, ``.`` and
    ``$`` (ECMA's only matches at the very end), ``\\u{...}``, escaped surrogate
    pairs, ``\\cX`` and ``(?<name>``.
    """
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            e = pattern[i + 1]
            if e in "dws" and in_class:
                out.append(_IN_CLASS[e])
            elif e in _OUTSIDE and not in_class:
                out.append(_OUTSIDE[e])
            elif e in "DWS":
                raise AssertionError("negated class escape inside a class: translate by hand")
            elif e == "u" and pattern[i + 2] == "{":
                end = pattern.index("}", i)
                out.append(f"\\U{int(pattern[i + 3:end], 16):08x}")
                i = end + 1
                continue
            elif e == "u":
                cp = int(pattern[i + 2:i + 6], 16)
                if 0xD800 <= cp <= 0xDBFF and pattern[i + 6:i + 8] == "\\u":
                    low = int(pattern[i + 8:i + 12], 16)
                    out.append(f"\\U{0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00):08x}")
                    i += 12
                    continue
                out.append(pattern[i:i + 6])
                i += 6
                continue
            elif e == "c":
                out.append(f"\\x{ord(pattern[i + 2]) % 32:02x}")
                i += 3
                continue
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            if pattern[i + 1:i + 2] == "^":
                out.append("^")
                i += 1
            if pattern[i + 1:i + 2] == "]":
                raise AssertionError("empty class: not translatable")
        elif c == ".":
            out.append("[^\\n\\r\\u2028\\u2029]")
        elif c == "$":
            out.append("\\Z")
        elif pattern.startswith("(?<", i) and pattern[i + 3] not in "=!":
            out.append("(?P<")
            i += 3
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


PATTERNS = [
    # literals, alternation, grouping
    "abc", "a|b|c", "a||b", "(|a)+", "colou?r", "(foo|foobar)baz", "(a|b)*abb", "((a|b)(c|d))+",
    "(?:ab|cd)*e", "(?<year>\\d{4})-(?<m>\\d\\d)", "(a*)*b", "(?:a|ab)(?:c|bcd)(d*)",
    # quantifiers
    "ab*c", "ab+c", "ab?c", "a{3}", "a{2,4}", "a{2,}", "(ab){1,3}", "x{0,20}y", "a{0}b", "(?:a|bc){2,3}",
    "a*?b", "a+?", "a{2,3}?", "a??b", "[ab]{5,6}", "(?:\\d+\\.)+\\d+",
    # classes and class escapes
    "[abc]+", "[a-z]{2,5}", "[^a-z]+", "[^abc]", "[a\\-z]+", "[a-]", "[-a]+", "[.]", "[\\]]", "[\\^a]",
    "\\d+", "\\D+", "\\w+", "\\W", "\\s+", "\\S+", "[\\d\\s]+", "[\\w-]+", "[^\\s]+", "\\s\\S\\s",
    "[\\s\\S]{2}", "[^\\n]*", "[0-9]{3}-[0-9]{4}", "[A-Z][a-z]+(?: [A-Z][a-z]+)*",
    # dot and escapes
    ".", ".+", "a.c", "[\\t\\n]+x", "\\t\\n\\r\\f\\v", "\\x41\\u0042", "\\0", "[\\b]", "\\cJ",
    "\\/path\\/", "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$", '"quoted"', "\\\\", '[\\\\"]+',
    # unicode
    "\\u00e9+", "[\\u00e0-\\u00ff]+", "[\\u0100-\\uffff]", "\\u{1F600}", "[\\u{1F600}-\\u{1F64F}]+",
    "\\uD83D\\uDE00", "😀+", "é|€|😀", "[^\\u0000-\\u007f]+", "[😀-🙏é]", "[^😀]",
    # literal braces (ECMA Annex B)
    "a{", "{foo}", "x{2,3", "a}", "]", "a{1,2}{",
    # anchors
    "^abc$", "^a", "b$", "^(a|b)$", "^a|b$", "^(?:foo|bar)+$", "(^a|b)c", "^$", "^", "$", "(?:^a|^b)c*$",
    "^[a-c]+|[x-z]+$", "^(a$|b$)",
]


# patterns the translator cannot handle mechanically, written by hand
PY_OVERRIDES = {"[\\s\\S]{2}": "(?s:.){2}"}


def alphabet_for(pattern: str, rng: random.Random) -> list[str]:
    """Characters relevant to a pattern: its own, their neighbours, and awkward extras."""
    chars = {c for c in pattern if c not in "\\"}
    chars |= {chr(ord(c) + d) for c in list(chars) for d in (-1, 1) if 0 < ord(c) + d < 0xD800}
    chars |= set("aZ09_ \n\r\t\"\\/é€😀\x00\x1f\u2028\u00a0\u3000")
    chars |= {chr(rng.randrange(0x20, 0xD800)) for _ in range(3)} | {chr(rng.randrange(0x10000, 0x110000))}
    return sorted(chars)


def sample(nfa: NFA, frag: Frag, rng: random.Random, live: set[int], max_steps: int = 300) -> bytes | None:
    """A random walk from start to end: random edges, a random byte in each range."""
    if frag.start not in live:
        return None
    for _ in range(10):
        q, out = frag.start, bytearray()
        for _ in range(max_steps):
            moves = [(None, t) for t in nfa.eps[q] if t in live]
            moves += [((lo, hi), t) for lo, hi, t in nfa.edges[q] if t in live]
            if q == frag.end and (not moves or rng.random() < 0.3):
                return bytes(out)
            rng_range, q = rng.choice(moves)
            if rng_range is not None:
                out.append(rng.randint(*rng_range))
        # an epsilon cycle or a long loop: try again
    return None


def mutate(s: str, alphabet: list[str], rng: random.Random) -> str:
    i = rng.randint(0, len(s))
    op = rng.randrange(3)
    if op == 0 or not s:
        return s[:i] + rng.choice(alphabet) + s[i:]
    i = min(i, len(s) - 1)
    return s[:i] + (rng.choice(alphabet) if op == 1 else "") + s[i + 1:]


def strings_for(pattern: str) -> list[str]:
    """Random strings over the pattern's alphabet, plus language samples and their mutations."""
    rng = random.Random(zlib.crc32(pattern.encode()))
    alphabet = alphabet_for(pattern, rng)
    out = {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(40)}
    nfa = NFA()
    frag = compile_regex(nfa, pattern, mode="raw")
    live = coreachable(nfa, frag)
    for _ in range(20):
        data = sample(nfa, frag, rng, live)
        if data is not None:
            s = data.decode("utf-8")
            # the wrapped forms give unanchored searches positives with context around them
            out |= {s, mutate(s, alphabet, rng), "x" + s + "\n", rng.choice(alphabet) + s,
                    s + rng.choice(alphabet)}
    return sorted(out)


def encodings(s: str, mode: str) -> list[bytes]:
    if mode == "raw":
        return [s.encode()]
    return sorted({json.dumps(s, ensure_ascii=a)[1:-1].encode() for a in (True, False)})


def test_pattern_count():
    assert len(PATTERNS) >= 60
    assert len(set(PATTERNS)) == len(PATTERNS)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_against_python_re(pattern):
    py = re.compile(PY_OVERRIDES.get(pattern) or to_python(pattern))
    strings = strings_for(pattern)
    nfa = NFA()
    frags = {(mode, search): compile_regex(nfa, pattern, mode=mode, search=search)
             for mode in ("json", "raw") for search in (False, True)}
    matched = 0
    for s in strings:
        expect = {False: py.fullmatch(s) is not None, True: py.search(s) is not None}
        matched += expect[False]
        for (mode, search), frag in frags.items():
            for data in encodings(s, mode):
                assert plain_matches(nfa, frag, data) == expect[search], (mode, search, s, data)
    # the language samples make sure each pattern is exercised on positives too
    assert matched > 0 or pattern in ("[^😀]",)


def test_json_mode_accepts_escapes_of_pattern_chars():
    nfa = NFA()
    frag = compile_regex(nfa, "a\"b\\\\c/\n😀")
    assert plain_matches(nfa, frag, b'\\u0061\\"b\\\\c\\/\\n\\uD83D\\uDE00')
    assert plain_matches(nfa, frag, b'a\\u0022\\u0062\\u005Cc/\\u000a\xf0\x9f\x98\x80')
    assert not plain_matches(nfa, frag, b'a"b\\\\c/\\n\xf0\x9f\x98\x80')  # raw quote is not string content


def test_empty_and_full_classes():
    nfa = NFA()
    nothing = compile_regex(nfa, "a[]", mode="raw")
    anything = compile_regex(nfa, "[^]", mode="raw")
    assert not plain_matches(nfa, nothing, b"a") and not plain_matches(nfa, nothing, b"a]")
    for s in ("a", "\n", "😀", "\u2028"):
        assert plain_matches(nfa, anything, s.encode())


def test_annex_b_literal_hyphen_and_brace_forms():
    nfa = NFA()
    frag = compile_regex(nfa, "[\\d-z]+", mode="raw")  # class escape beside '-': literal hyphen
    assert all(plain_matches(nfa, frag, s) for s in (b"1-z", b"z", b"-"))
    assert not plain_matches(nfa, frag, b"y")
    frag = compile_regex(nfa, "x{,5}", mode="raw")  # not a quantifier in ECMA, unlike Python 3.11
    assert plain_matches(nfa, frag, b"x{,5}") and not plain_matches(nfa, frag, b"xx")


def test_surrogate_escape_atoms_match_nothing():
    nfa = NFA()
    frag = compile_regex(nfa, "a\\uD800?b")
    assert plain_matches(nfa, frag, b"ab")
    assert not plain_matches(nfa, frag, b"a\\ud800b")


def test_large_counted_repeats():
    nfa = NFA()
    frag = compile_regex(nfa, "a{0,1000}b", mode="raw")
    assert plain_matches(nfa, frag, b"a" * 1000 + b"b")
    assert not plain_matches(nfa, frag, b"a" * 1001 + b"b")
    frag = compile_regex(nfa, "(?:ab){300}", mode="raw")
    assert plain_matches(nfa, frag, b"ab" * 300) and not plain_matches(nfa, frag, b"ab" * 299)


@pytest.mark.parametrize("pattern", [".{1000000}", "(?:.{1000}){1000}", "[a-z]{70000}", "a{99999999999}"])
def test_too_many_states(pattern):
    with pytest.raises(RegexError, match="too many states"):
        compile_regex(NFA(), pattern)


@pytest.mark.parametrize("pattern, position, message", [
    ("a(b", 1, "missing"), ("a)b", 1, "unmatched"), ("(?:a", 0, "missing"), ("[z-a]", 1, "out of order"),
    ("x[b-a]", 2, "out of order"), ("*a", 0, "nothing to repeat"), ("a|+", 2, "nothing to repeat"),
    ("a**", 2, "nothing to repeat"), ("{2}", 0, "nothing to repeat"), ("a{3}{2}", 4, "nothing to repeat"),
    ("a{2,1}", 1, "out of order"), ("^*", 1, "nothing to repeat"), ("ab[cd", 2, "unterminated"),
    ("(?=a)b", 0, "lookahead"), ("a(?!b)", 1, "lookahead"), ("(?<=a)b", 0, "lookbehind"),
    ("x(?<!a)b", 1, "lookbehind"), ("a\\bc", 1, "word boundary"), ("\\B", 0, "word boundary"),
    ("(a)\\1", 3, "backreference"), ("(?<n>a)\\k<n>", 7, "backreference"), ("a\\", 1, "backslash"),
    ("\\xZZ", 0, "hex"), ("\\u12", 0, "hex"), ("\\u{110000}", 0, "\\\\u"), ("\\q", 0, "unknown escape"),
    ("\\01", 0, "octal"), ("(?x)", 0, "invalid group"), ("(?<1a>x)", 3, "group name"),
    ("a^b", 1, "'\\^'"), ("a$b", 1, "'\\$'"), ("(a$|b)c", 2, "'\\$'"), ("a(^b)", 2, "'\\^'"),
    ("(^a)*", 1, "'\\^'"),
])
def test_errors_report_position(pattern, position, message):
    with pytest.raises(RegexError, match=message) as info:
        compile_regex(NFA(), pattern, search=True)
    assert info.value.position == position
    assert info.value.pattern == pattern


@pytest.mark.parametrize("pattern", ["(?i)hello", "(?P<year>\\d{4})", "a(?s).b", "(?-i:a)"])
def test_python_only_groups_say_so(pattern):
    """Inline flags and (?P<name>...) are Python re syntax, common in patterns written for re; the
    error said only "invalid group", which sent a new user looking for a typo."""
    with pytest.raises(RegexError, match="Python 're' syntax, not ECMA-262") as info:
        compile_regex(NFA(), pattern, search=True)
    assert info.value.position == pattern.index("(?")
    with pytest.raises(SchemaError, match="spell a flag out") as sinfo:
        compile_json_schema({"properties": {"a": {"type": "string", "pattern": pattern}}}, default_vocabulary())
    assert sinfo.value.pointer == "/properties/a/pattern"


def test_bad_mode():
    with pytest.raises(ValueError):
        compile_regex(NFA(), "a", mode="utf16")


# -- values listed next to a pattern (enum/const siblings, values inside enum objects, propertyNames)
# are checked with this ECMA-262 compiler, not Python's re (which jsonschema uses): "$" must not
# match before a final newline, \d and \w are ASCII, \p{..} and named groups parse
@pytest.mark.parametrize("schema,texts", [
    ({"enum": ["ab\n", "ab"], "pattern": "^ab$"}, {'"ab\\n"': False, '"ab"': True}),
    ({"enum": ["a", "é", "\u0663", "3"], "pattern": "^[\\w\\d]$"}, {'"a"': True, '"é"': False, '"\u0663"': False,
                                                                    '"3"': True}),
    ({"enum": ["a", "é", "1"], "pattern": "^\\p{L}$"}, {'"a"': True, '"é"': True, '"1"': False}),
    ({"enum": ["ab", "ac"], "pattern": "^a(?<second>b)$"}, {'"ab"': True, '"ac"': False}),
    ({"enum": [{"k": "ab\n"}, {"k": "ab"}], "properties": {"k": {"pattern": "ab$"}}},
     {'{"k":"ab\\n"}': False, '{"k":"ab"}': True}),
    ({"type": "object", "properties": {"ab\n": {}, "ab": {}}, "propertyNames": {"pattern": "^ab$"}},
     {'{"ab\\n":1}': False, '{"ab":1}': True}),
], ids=["dollar-newline", "ascii-classes", "unicode-property", "named-group", "nested", "propertyNames"])
def test_listed_values_obey_ecma_patterns(schema, texts):
    g = compile_json_schema(schema, default_vocabulary())
    for text, valid in texts.items():
        end = g.automaton.walk(Matcher(g).state, text.encode())
        assert (end >= 0 and g.automaton.is_accepting(end)) == valid, (schema, text)


def test_listed_values_next_to_an_unsupported_pattern_name_it():
    with pytest.raises(SchemaError, match="lookahead") as info:
        compile_json_schema({"properties": {"a": {"enum": ["ab"], "pattern": "a(?=b)"}}}, default_vocabulary())
    assert info.value.pointer == "/properties/a/pattern"
