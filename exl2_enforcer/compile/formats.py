"""Fragments for JSON Schema ``format`` values.

Each fragment matches the *content* of a JSON string (the bytes between the
quotes).  Every format here is spelled with printable ASCII other than ``"``
and ``\\``, which JSON writes literally, so the fragments are compiled in the
regex compiler's ``raw`` mode: they accept the canonical, unescaped spelling
only (``\\u0031`` for ``1`` is not offered).  That keeps them small and the
accepted text exactly equal to the decoded value.

The fragments are *sound*: every accepted string is valid for the format, also
under ``jsonschema.FormatChecker`` (draft 2020-12).  Where the standard allows
more than a compact automaton can express exactly, they accept a subset:

* ``date`` / ``date-time`` -- exact, leap years included; years 0001-9999
  (year 0000 is rejected by the checker), no leap second.
* ``time`` -- RFC 3339 ``full-time`` with a required offset; ``T``/``Z`` in
  either case.
* ``duration`` -- the RFC 3339 Appendix A grammar.
* ``hostname`` -- RFC 1123 labels; the last label starts with a letter (so a
  hostname never looks like an IPv4 address or a numeric TLD); at most 8
  labels, sized so the total never exceeds 253 characters.
* ``email`` -- ``dot-atom@hostname`` with at least two domain labels, local
  part at most 64 characters, whole address at most 254.
* ``ipv4`` -- dotted decimal without leading zeros.
* ``ipv6`` -- full and ``::``-compressed hex forms (no embedded IPv4, no zone).
* ``uuid`` -- 8-4-4-4-12 hex digits, either case.
* ``uri`` -- RFC 3986 ``scheme ":" hier-part ["?" query] ["#" fragment]`` with
  a registered-name host (no IP literals).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from exl2_enforcer.compile.nfa import NFA, Frag, FragmentMatcher
from exl2_enforcer.compile.regex import compile_regex
from exl2_enforcer.errors import UnknownFormatError


def _alt(*parts: str) -> str:
    return "(?:" + "|".join(parts) + ")"


# -- dates and times --------------------------------------------------------------------
_YEAR = _alt("[0-9]{3}[1-9]", "[0-9]{2}[1-9][0-9]", "[0-9][1-9][0-9]{2}", "[1-9][0-9]{3}")
# leap: divisible by 4 and not by 100, or by 400 -- i.e. the last two digits are a
# non-zero multiple of 4, or they are 00 and the first two are a non-zero multiple of 4
_MULT4 = _alt("0[48]", "[2468][048]", "[13579][26]")
_LEAP_YEAR = _alt(f"[0-9]{{2}}{_MULT4}", f"{_MULT4}00")
_MONTH_DAY = _alt(
    "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])",
    "(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "02-(?:0[1-9]|1[0-9]|2[0-8])",
)
#: RFC 3339 full-date, exact per month and leap year.
DATE_RE = _alt(f"{_YEAR}-{_MONTH_DAY}", f"{_LEAP_YEAR}-02-29")
_HOUR = "(?:[01][0-9]|2[0-3])"
#: RFC 3339 full-time: partial-time plus a required offset.
TIME_RE = f"{_HOUR}:[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[Zz]|[+-]{_HOUR}:[0-5][0-9])"
#: RFC 3339 date-time.
DATE_TIME_RE = f"{DATE_RE}[Tt]{TIME_RE}"

_N = "[0-9]+"
_DUR_SECOND = f"{_N}S"
_DUR_MINUTE = f"{_N}M(?:{_DUR_SECOND})?"
_DUR_TIME = "T" + _alt(f"{_N}H(?:{_DUR_MINUTE})?", _DUR_MINUTE, _DUR_SECOND)
_DUR_DATE = _alt(f"{_N}D", f"{_N}M(?:{_N}D)?", f"{_N}Y(?:{_N}M(?:{_N}D)?)?") + f"(?:{_DUR_TIME})?"
#: RFC 3339 Appendix A duration.
DURATION_RE = "P" + _alt(_DUR_DATE, _DUR_TIME, f"{_N}W")


# -- network names ------------------------------------------------------------------------
def _label(max_len: int, letter_first: bool = False) -> str:
    """An RFC 1123 label of 1..max_len characters: alphanumerics and inner hyphens."""
    first = "[A-Za-z]" if letter_first else "[A-Za-z0-9]"
    return f"{first}(?:[A-Za-z0-9-]{{0,{max_len - 2}}}[A-Za-z0-9])?"


def hostname_re(max_total: int = 253, min_labels: int = 1) -> str:
    """A hostname regex whose matches are at most ``max_total`` characters long.

    An exact length bound over free label lengths would need a product
    automaton of thousands of states, so two tiers are offered instead: up to
    4 labels of a generous length, or 5..8 shorter labels; each tier's label
    length is chosen so that its longest hostname fits in ``max_total``.
    """
    out = []
    for lo, hi in ((min_labels, 4), (max(min_labels, 5), 8)):
        size = min(63, (max_total - (hi - 1)) // hi)
        out.append(f"(?:{_label(size)}\\.){{{lo - 1},{hi - 1}}}" + _label(size, letter_first=True))
    return _alt(*out)


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
#: Dotted-decimal IPv4 without leading zeros.
IPV4_RE = f"{_OCTET}(?:\\.{_OCTET}){{3}}"


def _ipv6_re() -> str:
    """Full form, or ``::`` standing for at least one group (7 explicit groups at most)."""
    g = "[0-9A-Fa-f]{1,4}"
    forms = [f"{g}(?::{g}){{7}}"]
    for before in range(8):
        head = "" if before == 0 else f"{g}(?::{g}){{{before - 1}}}"
        after = 7 - before
        tail = "" if after == 0 else f"(?:{g}(?::{g}){{0,{after - 1}}})?"
        forms.append(f"{head}::{tail}")
    return _alt(*forms)


#: IPv6 in full or ``::``-compressed hex form.
IPV6_RE = _ipv6_re()
#: 8-4-4-4-12 hex digits.
UUID_RE = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"

# RFC 3986 character classes
_PCT = "%[0-9A-Fa-f]{2}"
_UNRESERVED_SUB = "A-Za-z0-9\\-._~!$&'()*+,;="
_PCHAR = _alt(f"[{_UNRESERVED_SUB}:@]", _PCT)
_SEGMENTS = f"(?:/{_PCHAR}*)*"
_AUTHORITY = f"(?:{_alt(f'[{_UNRESERVED_SUB}:]', _PCT)}*@)?{_alt(f'[{_UNRESERVED_SUB}]', _PCT)}*(?::[0-9]*)?"
#: RFC 3986 URI with a registered-name (or IPv4-looking) host, no IP literal.
URI_RE = (
    "[A-Za-z][A-Za-z0-9+.\\-]*:"
    + _alt(f"//{_AUTHORITY}{_SEGMENTS}", f"/(?:{_PCHAR}+{_SEGMENTS})?", f"{_PCHAR}+{_SEGMENTS}", "")
    + f"(?:\\?{_alt(_PCHAR, '[/?]')}*)?(?:#{_alt(_PCHAR, '[/?]')}*)?"
)

# RFC 5322 atext: what a dot-atom local part may contain besides dots
_ATEXT = ((0x21, 0x21), (0x23, 0x27), (0x2A, 0x2B), (0x2D, 0x2D), (0x2F, 0x39), (0x3D, 0x3D),
          (0x3F, 0x3F), (0x41, 0x5A), (0x5E, 0x7E))


def _dot_atom(nfa: NFA, max_len: int) -> Frag:
    """``atext+ ("." atext+)*`` of at most ``max_len`` bytes, built state by state.

    State ``k`` means "k bytes so far, last one atext"; ``dot[k]`` "last one a dot".
    """
    start, end = nfa.state(), nfa.state()
    atom = [start] + [nfa.state() for _ in range(max_len)]
    dot = [nfa.state() for _ in range(max_len)]
    for k in range(max_len):
        for lo, hi in _ATEXT:
            nfa.edge(atom[k], lo, hi, atom[k + 1])
            if k > 0:
                nfa.edge(dot[k], lo, hi, atom[k + 1])
        if k > 0:
            nfa.epsilon(atom[k], end)
            if k + 1 < max_len:  # a dot needs room for the atext after it
                nfa.edge(atom[k], 0x2E, 0x2E, dot[k + 1])
    nfa.epsilon(atom[max_len], end)
    return Frag(start, end)


def _email(nfa: NFA) -> Frag:
    local = _dot_atom(nfa, 64)
    domain = compile_regex(nfa, "@" + hostname_re(max_total=254 - 64 - 1, min_labels=2), mode="raw")
    return nfa.seq([local, domain])


def _from_regex(pattern: str) -> Callable[[NFA], Frag]:
    return lambda nfa: compile_regex(nfa, pattern, mode="raw")


_BUILDERS: dict[str, Callable[[NFA], Frag]] = {
    "date": _from_regex(DATE_RE),
    "time": _from_regex(TIME_RE),
    "date-time": _from_regex(DATE_TIME_RE),
    "duration": _from_regex(DURATION_RE),
    "email": _email,
    "hostname": _from_regex(hostname_re()),
    "ipv4": _from_regex(IPV4_RE),
    "ipv6": _from_regex(IPV6_RE),
    "uuid": _from_regex(UUID_RE),
    "uri": _from_regex(URI_RE),
}

#: The ``format`` names :func:`format_fragment` knows.
SUPPORTED_FORMATS: frozenset[str] = frozenset(_BUILDERS)
#: The formats the JSON Schema specification defines (drafts 4 to 2020-12); any other name
#: (draft 3's ``color``, OpenAPI's ``int32``, ``url``) is an annotation that validators ignore
SPEC_FORMATS: frozenset[str] = frozenset({
    "date-time", "date", "time", "duration", "email", "idn-email", "hostname", "idn-hostname", "ipv4", "ipv6",
    "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template", "json-pointer",
    "relative-json-pointer", "regex",
})


@functools.cache
def _format_matcher(name: str) -> FragmentMatcher:
    nfa = NFA()
    return FragmentMatcher(nfa, format_fragment(nfa, name))


def format_accepts(name: str, value: str) -> bool:
    """Whether the string ``value`` is in the language of ``format: name`` (the fragment's, so the
    same verdict a generated string gets).  Used to filter enum/const values next to a format.

    Raises :class:`UnknownFormatError` (a ``ValueError``) for unsupported names.
    """
    try:
        content = value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no format admits one
        return False
    return _format_matcher(name).matches(content)


def format_fragment(nfa: NFA, name: str) -> Frag:
    """A fragment matching the JSON string content of a valid ``format: name`` value.

    Raises :class:`UnknownFormatError` (a ``ValueError``) for unsupported names.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UnknownFormatError(name, SUPPORTED_FORMATS)
    return builder(nfa)
