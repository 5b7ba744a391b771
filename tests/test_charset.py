"""Tests for code point sets and their exact UTF-8 / JSON-string encodings."""

from __future__ import annotations

import json
import random
import zlib

import pytest
from nfa_walks import plain_matches

from exl2_enforcer.compile.charset import (
    ANY_CP,
    DIGIT,
    SPACE,
    SURROGATES,
    WORD,
    CodePointSet,
    cp_contains,
    cp_from_chars,
    cp_intersect,
    cp_minus,
    cp_negate,
    cp_union,
    json_char_fragment,
    utf8_fragment,
)
from exl2_enforcer.compile.nfa import NFA

BOUNDARIES = [0, 0x1F, 0x20, 0x21, 0x22, 0x2F, 0x5C, 0x7E, 0x7F, 0x80, 0x81, 0x7FF, 0x800, 0x801, 0xFFF, 0x1000,
              0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10001,
              0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFE, 0x10FFFF]


def random_cps(rng: random.Random, n: int) -> list[int]:
    """Code points from all planes, weighted toward encoding boundaries."""
    out = list(BOUNDARIES)
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            out.append(rng.randrange(0x80))
        elif r < 0.45:
            out.append(rng.randrange(0x80, 0x800))
        elif r < 0.7:
            out.append(rng.randrange(0x800, 0x10000))
        elif r < 0.8:
            out.append(rng.choice(BOUNDARIES) + rng.randint(-2, 2))
        else:
            out.append(rng.randrange(0x10000, 0x110000))
    return [c for c in out if 0 <= c <= 0x10FFFF]


def random_set(rng: random.Random, n_ranges: int) -> CodePointSet:
    """A random set mixing small and plane-spanning ranges."""
    ranges = []
    for _ in range(n_ranges):
        lo = rng.choice(random_cps(rng, 0)) if rng.random() < 0.3 else rng.randrange(0x110000)
        ranges.append((lo, min(0x10FFFF, lo + rng.choice([0, 1, 5, 63, 64, 1000, 70000]))))
    return cp_union(ranges)


SETS = {
    "any": ANY_CP,
    "empty": (),
    "digit": DIGIT,
    "word": WORD,
    "space": SPACE,
    "not_word": cp_negate(WORD),
    "points": cp_from_chars('"\\/\b\f\n\r\t\x00\x7f\x80\u07ff\u0800\uffff\U00010000\U0010ffff'),
    "bmp_edges": ((0x7F, 0x81), (0x7FF, 0x801), (0xD7F0, 0xE010), (0xFFF0, 0x10010)),
    "astral": ((0x1F600, 0x1F64F), (0x10FC00, 0x10FFFF), (0x103FF, 0x10400)),
    "random1": random_set(random.Random(1), 6),
    "random2": random_set(random.Random(2), 12),
}


# -- set algebra ---------------------------------------------------------------------------
def as_pyset(s: CodePointSet) -> set[int]:
    return {c for lo, hi in s for c in range(lo, hi + 1)}


def test_set_algebra_matches_python_sets():
    rng = random.Random(7)
    for _ in range(300):
        a = cp_union([(x, x + rng.randint(0, 5)) for x in rng.sample(range(200), rng.randint(0, 6))])
        b = cp_union([(x, x + rng.randint(0, 5)) for x in rng.sample(range(200), rng.randint(0, 6))])
        for s in (a, b):
            assert all(lo <= hi for lo, hi in s)
            # canonical form: disjoint and non-adjacent
            assert all(s[i][1] + 1 < s[i + 1][0] for i in range(len(s) - 1))
        assert as_pyset(cp_union(a, b)) == as_pyset(a) | as_pyset(b)
        assert as_pyset(cp_intersect(a, b)) == as_pyset(a) & as_pyset(b)
        assert as_pyset(cp_minus(a, b)) == as_pyset(a) - as_pyset(b)
        neg = cp_negate(a)
        assert cp_intersect(neg, a) == ()
        assert cp_union(neg, a) == ANY_CP


def test_set_constants():
    assert cp_from_chars("cab") == ((0x61, 0x63),)
    assert SURROGATES == ((0xD800, 0xDFFF),)
    assert cp_negate(ANY_CP) == () and cp_negate(()) == ANY_CP
    space_chars = "\t\n\v\f\r \u00a0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    assert all(cp_contains(SPACE, ord(c)) for c in space_chars)
    assert not any(cp_contains(SPACE, c) for c in (0x08, 0x0E, 0x1F, 0x85, 0x200B, 0x180E))
    assert as_pyset(WORD) == {ord(c) for c in "0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}


# -- UTF-8 ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def utf8_frags():
    nfa = NFA()
    return nfa, {name: utf8_fragment(nfa, s) for name, s in SETS.items()}


def test_any_cp_fragment_is_compact():
    nfa = NFA()
    utf8_fragment(nfa, ANY_CP)
    assert len(nfa) <= 40
    nfa = NFA()
    json_char_fragment(nfa, ANY_CP)
    assert len(nfa) <= 80


@pytest.mark.parametrize("name", sorted(SETS))
def test_utf8_fragment_exact_on_code_points(utf8_frags, name):
    nfa, frags = utf8_frags
    frag, cps = frags[name], SETS[name]
    for c in random_cps(random.Random(zlib.crc32(name.encode())), 1500):
        if 0xD800 <= c <= 0xDFFF:
            assert not plain_matches(nfa, frag, chr(c).encode("utf-8", "surrogatepass"))
        else:
            assert plain_matches(nfa, frag, chr(c).encode()) == cp_contains(cps, c), hex(c)


def reference_one_char(data: bytes, cps: CodePointSet) -> bool:
    """Whether ``data`` is well-formed UTF-8 for exactly one code point of ``cps``."""
    try:
        text = data.decode("utf-8")  # strict: rejects overlongs, surrogates, > U+10FFFF
    except UnicodeDecodeError:
        return False
    return len(text) == 1 and cp_contains(cps, ord(text))


@pytest.mark.parametrize("name", ["any", "bmp_edges", "astral", "random2", "points"])
def test_utf8_fragment_rejects_malformed_bytes(utf8_frags, name):
    nfa, frags = utf8_frags
    frag, cps = frags[name], SETS[name]
    fixed = [b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
             b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff",
             b"\x80", b"\xc2", b"\xe0\xa0", b"\xf0\x90\x80", b"a\x80", b"", b"ab"]
    rng = random.Random(11)
    interesting = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC,
                   0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    randoms = [bytes(rng.choice(interesting) if rng.random() < 0.6 else rng.randrange(256)
                     for _ in range(rng.randint(1, 5))) for _ in range(2500)]
    for data in fixed + randoms:
        assert plain_matches(nfa, frag, data) == reference_one_char(data, cps), data


# -- JSON string characters ---------------------------------------------------------------
@pytest.fixture(scope="module")
def json_frags():
    nfa = NFA()
    return nfa, {name: json_char_fragment(nfa, s) for name, s in SETS.items()}


def spellings(c: str) -> set[bytes]:
    """Every valid JSON-string spelling of one character (hex in both cases)."""
    out = {json.dumps(c, ensure_ascii=a)[1:-1].encode() for a in (True, False)}
    cp = ord(c)
    if cp <= 0xFFFF:
        units = [cp]
    else:
        units = [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
    out.add("".join(f"\\u{u:04x}" for u in units).encode())
    out.add("".join(f"\\u{u:04X}" for u in units).encode())
    if len(units) == 2:
        out.add(f"\\u{units[0]:04X}\\u{units[1]:04x}".encode())
    if c == "/":
        out.add(b"\\/")
    if cp >= 0x20 and c not in '"\\':
        out.add(c.encode())
    return out


@pytest.mark.parametrize("name", sorted(SETS))
def test_json_char_every_spelling(json_frags, name):
    nfa, frags = json_frags
    frag, cps = frags[name], SETS[name]
    for c in random_cps(random.Random(zlib.crc32(name.encode()) + 1), 700) + list(range(0x30)) + [0x5C, 0x7F]:
        if 0xD800 <= c <= 0xDFFF:
            for form in (f"\\u{c:04x}", f"\\u{c:04X}"):
                assert not plain_matches(nfa, frag, form.encode()), form
            continue
        expected = cp_contains(cps, c)
        for form in spellings(chr(c)):
            assert plain_matches(nfa, frag, form) == expected, (hex(c), form)


@pytest.mark.parametrize("name", ["any", "points", "astral"])
def test_json_char_rejects_invalid_forms(json_frags, name):
    nfa, frags = json_frags
    frag = frags[name]
    bad = [b'"', b"\\", b"\n", b"\x00", b"\x1f", b"\\a", b"\\U0041", b"\\u004", b"\\u00411", b"\\x41",
           b"\\ud800", b"\\udfff", b"\\udc00\\ud800", b"\\ud83d\\u0041", b"\\ud83d", b"\\ud83d\\ud83d",
           b"\\u{41}", b"\xed\xa0\x80", b"aa", b""]
    for data in bad:
        assert not plain_matches(nfa, frag, data), data


def reference_json_char(data: bytes, cps: CodePointSet) -> bool:
    """Whether ``data`` is JSON string content decoding to one non-surrogate code point of ``cps``."""
    try:
        text = json.loads(b'"' + data + b'"')
    except (ValueError, UnicodeDecodeError):
        return False
    return len(text) == 1 and not 0xD800 <= ord(text) <= 0xDFFF and cp_contains(cps, ord(text))


@pytest.mark.parametrize("name", ["any", "points", "bmp_edges", "astral", "random1"])
def test_json_char_fuzz_against_json_module(json_frags, name):
    nfa, frags = json_frags
    frag, cps = frags[name], SETS[name]
    rng = random.Random(5)
    pieces = ["\\", "u", "U", "0", "1", "7", "9", "a", "A", "d", "D", "8", "b", "c", "e", "f", "F", "n", "/",
              '"', "\\u", "\\ud83d", "\\ude00", "\\uDBFF", "\\udfff", "\\u00", "\\u000", "é", "\x01", " "]
    samples = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 6))) for _ in range(3000)]
    for s in samples:
        data = s.encode()
        assert plain_matches(nfa, frag, data) == reference_json_char(data, cps), s


def test_no_surrogate_in_any_frag():
    nfa = NFA()
    frag = json_char_fragment(nfa, SURROGATES)
    for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF):
        assert not plain_matches(nfa, frag, f"\\u{c:04x}".encode())
    assert not plain_matches(nfa, frag, b"\\ud83d\\ude00")
