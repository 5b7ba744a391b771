"""Soundness and coverage tests for the JSON Schema ``format`` fragments."""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import re
import uuid

import pytest
from enforcer_oracle import validator_for
from jsonschema import Draft202012Validator
from nfa_walks import coreachable, plain_matches

from exl2_enforcer import Matcher, compile_json_schema, default_vocabulary
from exl2_enforcer.compile.formats import SUPPORTED_FORMATS, UnknownFormatError, format_fragment
from exl2_enforcer.compile.nfa import NFA, Frag, FragmentMatcher

# FormatChecker() with no draft merges every draft's checkers, and draft 3's "time"
# (bare HH:MM:SS) wins there; the draft 2020-12 checker is the one that applies.
CHECKER = Draft202012Validator.FORMAT_CHECKER
SAMPLES_PER_FORMAT = 500


# -- independent reference validators (for formats whose jsonschema checker is absent or weak)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+", re.ASCII)


def valid_hostname(s: str) -> bool:
    labels = s.split(".")
    return (len(s) <= 253 and all(_LABEL.fullmatch(x) for x in labels)
            and not labels[-1].isdigit())


def valid_email(s: str) -> bool:
    local, at, domain = s.rpartition("@")
    return (bool(at) and 0 < len(local) <= 64 and len(s) <= 254
            and all(_ATEXT.fullmatch(x) for x in local.split("."))
            and "." in domain and valid_hostname(domain))


def valid_duration(s: str) -> bool:
    """ISO 8601 durations: designators in order, at least one, weeks alone."""
    m = re.fullmatch(r"P((?:\d+[YMWD])*)(?:T((?:\d+[HMS])+))?", s, re.ASCII)
    if m is None or (not m.group(1) and not m.group(2)):
        return False
    date_units = re.findall(r"[YMWD]", m.group(1))
    time_units = re.findall(r"[HMS]", m.group(2) or "")
    if "W" in date_units:
        return date_units == ["W"] and not time_units
    return (date_units == sorted(date_units, key="YMD".index) == list(dict.fromkeys(date_units))
            and time_units == sorted(time_units, key="HMS".index) == list(dict.fromkeys(time_units)))


_UNRESERVED_SUB = r"A-Za-z0-9\-._~!$&'()*+,;="
_PCT = "%[0-9A-Fa-f]{2}"
_URI_PARTS = re.compile(r"([^:/?#]+):(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))?", re.S)  # RFC 3986 App. B


def _only(chars: str, s: str) -> bool:
    """Whether ``s`` consists of the class ``chars`` and well-formed percent-escapes only."""
    return re.fullmatch(f"(?:[{chars}]|{_PCT})*", s, re.ASCII) is not None


def valid_uri(s: str) -> bool:
    """RFC 3986 ``URI`` (without IP-literal hosts), checked component by component."""
    m = _URI_PARTS.fullmatch(s)
    if m is None or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", m.group(1)):
        return False
    scheme, has_authority, authority, path, _, query, _, fragment = m.groups()
    if has_authority is not None:
        userinfo, at, host_port = authority.rpartition("@")
        host, _, port = host_port.partition(":") if ":" in host_port else (host_port, "", "")
        port_ok = port == "" or port.isdigit()
        if not (_only(_UNRESERVED_SUB + ":", userinfo) and _only(_UNRESERVED_SUB, host) and port_ok):
            return False
        if path and not path.startswith("/"):
            return False
    pchar = _UNRESERVED_SUB + ":@"
    return (_only(pchar + "/", path) and _only(pchar + "/?", query or "") and _only(pchar + "/?", fragment or ""))


EXTRA_CHECKS = {"hostname": valid_hostname, "email": valid_email, "duration": valid_duration, "uri": valid_uri,
                "ipv6": lambda s: bool(ipaddress.IPv6Address(s)) and "%" not in s,
                "ipv4": lambda s: bool(ipaddress.IPv4Address(s)),
                "uuid": lambda s: bool(uuid.UUID(s)) and len(s) == 36}


def is_valid(name: str, s: str) -> bool:
    """Valid under jsonschema's FormatChecker and under our stricter reference (if any)."""
    if not CHECKER.conforms(s, name):
        return False
    try:
        return EXTRA_CHECKS.get(name, lambda _: True)(s)
    except ValueError:
        return False


# -- sampling -----------------------------------------------------------------------------
def sample(nfa: NFA, frag: Frag, rng: random.Random, live: set[int], stay: float) -> bytes:
    """A random walk to the end; ``stay`` biases epsilon choices toward longer strings."""
    while True:
        q, out = frag.start, bytearray()
        for _ in range(3000):
            eps = [t for t in nfa.eps[q] if t in live]
            edges = [(lo, hi, t) for lo, hi, t in nfa.edges[q] if t in live]
            if q == frag.end and (not eps and not edges or rng.random() < 1 - stay):
                return bytes(out)
            if edges and (not eps or rng.random() < stay):
                lo, hi, q = rng.choice(edges)
                out.append(rng.randint(lo, hi))
            else:
                q = rng.choice(eps)
        # a walk that never finished: retry


@pytest.fixture(scope="module")
def compiled():
    nfa = NFA()
    return nfa, {name: format_fragment(nfa, name) for name in sorted(SUPPORTED_FORMATS)}


@pytest.mark.parametrize("name", sorted(SUPPORTED_FORMATS))
def test_random_walk_samples_are_valid(compiled, name):
    nfa, frags = compiled
    frag = frags[name]
    live = coreachable(nfa, frag)
    rng = random.Random(name)
    seen = set()
    for i in range(SAMPLES_PER_FORMAT):
        data = sample(nfa, frag, rng, live, stay=(0.3, 0.6, 0.9)[i % 3])
        value = json.loads(b'"' + data + b'"')
        assert is_valid(name, value), (name, value)
        seen.add(value)
    assert len(seen) > SAMPLES_PER_FORMAT // 5  # the walk explores, not repeats


@pytest.mark.parametrize("name", sorted(SUPPORTED_FORMATS))
def test_only_literal_printable_ascii(compiled, name):
    """Every byte is printable ASCII other than quote and backslash: no escaping ever needed."""
    nfa, frags = compiled
    for q in coreachable(nfa, frags[name]):
        for lo, hi, _ in nfa.edges[q]:
            assert 0x20 <= lo <= hi <= 0x7E and not lo <= 0x22 <= hi and not lo <= 0x5C <= hi


def longest(nfa: NFA, frag: Frag) -> int:
    """Length of the longest accepted string of an acyclic fragment (iterative DFS)."""
    best: dict[int, int] = {}
    stack = [(frag.start, False)]
    while stack:
        q, expanded = stack.pop()
        succ = [(t, 0) for t in nfa.eps[q]] + [(t, 1) for _, _, t in nfa.edges[q]]
        if expanded:
            tails = [best[t] + w for t, w in succ if best[t] >= 0]
            best[q] = max(tails + ([0] if q == frag.end else []), default=-1)
        elif q not in best:
            best[q] = -2  # in progress: meeting it again would mean a cycle
            stack.append((q, True))
            for t, _ in succ:
                assert best.get(t) != -2 or t == q, "fragment has a cycle"
                if t not in best:
                    stack.append((t, False))
    return best[frag.start]


@pytest.mark.parametrize("name, bound", [("hostname", 253), ("email", 254)])
def test_length_bounds(compiled, name, bound):
    nfa, frags = compiled
    n = longest(nfa, frags[name])
    assert bound - 20 <= n <= bound


def accepts(name: str, value: str) -> bool:
    nfa = NFA()
    return plain_matches(nfa, format_fragment(nfa, name), json.dumps(value)[1:-1].encode())


# -- generated valid values are accepted ------------------------------------------------------
def random_label(rng: random.Random, n: int, letter_first: bool = False) -> str:
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    first = rng.choice(alnum[:52] if letter_first else alnum)
    if n == 1:
        return first
    middle = "".join(rng.choice(alnum + "--") for _ in range(n - 2))
    return first + middle + rng.choice(alnum)


def gen_values(name: str, rng: random.Random) -> list[str]:
    """Valid values of a format, made independently of the fragment."""
    out = []
    for _ in range(60):
        d = datetime.date.fromordinal(rng.randint(1, datetime.date.max.toordinal()))
        off = rng.choice(["Z", "z", "+00:00", "-05:30", "+23:59", "-12:00"])
        frac = rng.choice(["", ".5", ".123456", ".000000001"])
        t = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{frac}{off}"
        host = ".".join(random_label(rng, rng.randint(1, 20)) for _ in range(rng.randint(0, 3)))
        host = (host + "." if host else "") + random_label(rng, rng.randint(2, 10), letter_first=True)
        groups = [f"{rng.randrange(0x10000) if rng.random() < 0.6 else 0:x}" for _ in range(8)]
        out += {
            "date": [d.isoformat()],
            "time": [t],
            "date-time": [f"{d.isoformat()}{rng.choice('Tt')}{t}"],
            "hostname": [host, random_label(rng, 62) + ".com"],
            "email": [f"{random_label(rng, rng.randint(1, 12))}.x+tag@{host}.org"],
            "ipv4": [str(ipaddress.IPv4Address(rng.randrange(2**32)))],
            "ipv6": [str(ipaddress.IPv6Address(":".join(groups))), ":".join(groups),
                     ipaddress.IPv6Address(":".join(groups)).exploded.upper()],
            "uuid": [str(uuid.UUID(int=rng.randrange(2**128))), str(uuid.uuid4()).upper()],
            "duration": [f"P{rng.randint(0, 99)}Y{rng.randint(0, 11)}M{rng.randint(1, 30)}DT{rng.randint(0, 23)}H"
                         f"{rng.randint(0, 59)}M{rng.randint(0, 59)}S", f"P{rng.randint(1, 52)}W",
                         f"PT{rng.randint(0, 9999)}S"],
            "uri": [f"https://{host}/{random_label(rng, 5)}?q={rng.randint(0, 99)}#frag"],
        }[name]
    return out + FIXED_VALID.get(name, [])


FIXED_VALID = {
    "date": ["2000-02-29", "2024-02-29", "0004-02-29", "0400-02-29", "0001-01-01", "9999-12-31", "1900-02-28"],
    "time": ["23:59:59Z", "00:00:00+00:00", "12:30:00.5-08:00"],
    "date-time": ["1970-01-01T00:00:00Z", "2024-02-29T12:00:00.123+05:30"],
    "hostname": ["localhost", "a", "example.com", "xn--bcher-kva.example", "a-b.c-d.e"],
    "email": ["user@example.com", "first.last+tag@sub.example.org", "x!#$%&'*+/=?^_`{|}~-@a.bc"],
    "ipv4": ["0.0.0.0", "255.255.255.255", "192.168.1.1", "10.0.0.254"],
    "ipv6": ["::", "::1", "1::", "fe80::1", "2001:db8::8a2e:370:7334", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
             "1:2:3:4:5:6:7:8", "ABCD:EF01:2345:6789:ABCD:EF01:2345:6789"],
    "uuid": ["00000000-0000-0000-0000-000000000000", "123e4567-e89b-12d3-a456-426614174000"],
    "duration": ["P1D", "PT1H", "PT1M", "PT1S", "P1Y", "P1M", "P1Y2M", "P2M3D", "PT1H30M", "P0D", "P3W"],
    "uri": ["mailto:user@example.com", "urn:isbn:0451450523", "file:///etc/passwd", "http://u:p@h:8080/a%20b",
            "news:comp.lang.python", "tel:+1-816-555-1212", "ftp://ftp.is.co.za/rfc/rfc1808.txt", "a:",
            "http://example.com", "https://example.com/?a=1&b=2#x/y?z"],
}

FIXED_INVALID = {
    "date": ["2023-02-29", "1900-02-29", "0100-02-29", "2024-02-30", "2024-04-31", "0000-01-01", "2024-13-01",
             "2024-00-10", "2024-01-00", "24-01-01", "2024-1-01", "2024/01/01"],
    "time": ["24:00:00Z", "12:00:00", "12:60:00Z", "12:00:60Z", "12:00:00+24:00", "12:00Z", "12:00:00.Z"],
    "date-time": ["2024-01-01 12:00:00Z", "2024-02-30T00:00:00Z", "2024-01-01T12:00:00"],
    "hostname": ["", "-a.com", "a-.com", "a..b", "a.", ".a", "a_b.com", "1.2.3.4", "a" * 64 + ".com",
                 ".".join(["a" * 63] * 4)],
    "email": ["user", "@example.com", "user@", ".a@b.cd", "a.@b.cd", "a..b@c.de", "a@b", "a b@c.de",
              "a" * 65 + "@b.cd"],
    "ipv4": ["256.0.0.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1.2.3.-4", " 1.2.3.4"],
    "ipv6": [":::", "1:2:3:4:5:6:7:8:9", "1::2::3", "1:2:3:4:5:6:7:8::", "12345::", "g::", ":1:2:3:4:5:6:7",
             "1:2:3:4:5:6:7", "::1%eth0"],
    "uuid": ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400",
             "{123e4567-e89b-12d3-a456-426614174000}", "g23e4567-e89b-12d3-a456-426614174000"],
    "duration": ["P", "PT", "1D", "P1", "PT1D", "P1H", "P1DT", "P1W2D", "P-1D", "P1.5D"],
    "uri": ["", "example.com", "1http://x", "http://exa mple.com", "http://x/%zz", "http://x/\u00e9",
            "http://x/<>", "://x"],
}


@pytest.mark.parametrize("name", sorted(SUPPORTED_FORMATS))
def test_generated_valid_values_accepted(name):
    rng = random.Random(name + "gen")
    nfa = NFA()
    frag = format_fragment(nfa, name)
    for value in gen_values(name, rng):
        assert is_valid(name, value), value  # the generator itself is right
        assert plain_matches(nfa, frag, value.encode()), (name, value)


@pytest.mark.parametrize("name", sorted(FIXED_INVALID))
def test_invalid_values_rejected(name):
    nfa = NFA()
    frag = format_fragment(nfa, name)
    for value in FIXED_INVALID[name]:
        assert not plain_matches(nfa, frag, json.dumps(value)[1:-1].encode()), (name, value)


def test_leap_years_exact():
    nfa = NFA()
    frag = format_fragment(nfa, "date")
    for year in list(range(1, 500)) + list(range(1890, 2110)) + [9996, 9999]:
        ok = plain_matches(nfa, frag, f"{year:04d}-02-29".encode())
        assert ok == (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)), year


def test_unknown_format():
    with pytest.raises(UnknownFormatError, match="'color'") as info:
        format_fragment(NFA(), "color")
    assert isinstance(info.value, ValueError)


def test_supported_formats():
    assert SUPPORTED_FORMATS == {"date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6",
                                 "uuid", "uri"}


# -- enum/const next to a format: the listed strings are filtered by the format too
ENUM_FORMAT_VALUES = {
    "email": ["a", "a@example.com", "x@y.z", "@example.com"],
    "date": ["2020-01-01", "2020-13-01", "2021-02-29", "x"],
    "time": ["12:00:00Z", "12:00:00", "25:00:00Z"],
    "ipv4": ["1.2.3.4", "300.1.1.1", "01.2.3.4"],
    "uuid": ["123e4567-e89b-12d3-a456-426614174000", "123e4567", "x"],
    "duration": ["P1D", "P", "1D"],
    "hostname": ["example.com", "-bad-.com", "a..b"],
}


@pytest.mark.parametrize("name", sorted(ENUM_FORMAT_VALUES))
def test_enum_and_const_values_obey_a_sibling_format(name):
    vocab = default_vocabulary()
    values = ENUM_FORMAT_VALUES[name] + [7]  # a non-string is not constrained by format
    for schema in ({"enum": values, "format": name},
                   {"anyOf": [{"const": v} for v in values], "format": name},
                   {"allOf": [{"enum": values}, {"format": name}]}):
        g = compile_json_schema(schema, vocab)
        check = validator_for(schema)
        for v in values:
            text = json.dumps(v).encode()
            end = g.automaton.walk(Matcher(g).state, text)
            accepted = end >= 0 and g.automaton.is_accepting(end)
            assert accepted == check.is_valid(v), (schema, v)


@pytest.mark.parametrize("max_sets", [4096, 3])
def test_fragment_matcher_agrees_with_the_reference_walk(max_sets):
    nfa = NFA()
    frag = format_fragment(nfa, "date")
    matcher = FragmentMatcher(nfa, frag, max_sets=max_sets)  # 3: the memo fills, walks go on unmemoised
    for text in ["2020-01-01", "2020-02-30", "2020-01-0", "", "2020-01-011", "2024-02-29", "2023-02-29"] * 2:
        assert matcher.matches(text.encode()) == plain_matches(nfa, frag, text.encode()), text
    assert len(matcher._sets) <= max(max_sets, 1)


def test_fragment_matcher_shared_by_threads():
    import threading

    nfa = NFA()
    frag = format_fragment(nfa, "ipv4")
    matcher = FragmentMatcher(nfa, frag)
    rng = random.Random(5)
    texts = [".".join(str(rng.randint(0, 300)) for _ in range(rng.randint(3, 5))) for _ in range(400)]
    expected = [plain_matches(nfa, frag, t.encode()) for t in texts]
    got: dict[int, list[bool]] = {}

    def work(i: int) -> None:
        got[i] = [matcher.matches(t.encode()) for t in texts[i::4] + texts]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert got[i] == expected[i::4] + expected
