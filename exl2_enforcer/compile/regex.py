"""Compile a subset of ECMA-262 regular expressions into byte-level NFA fragments.

The compiler parses a pattern into a small AST, peels the anchors ``^``/``$``
off the start and end of the top-level alternatives, and emits every
character atom as a code point set through :mod:`exl2_enforcer.compile.charset`:

* mode ``"json"`` -- the fragment matches the *content* of a JSON string
  literal (between the quotes) whose decoded value matches the pattern, so
  every character may also be written as an escape;
* mode ``"raw"`` -- the fragment matches raw UTF-8 text.

Semantics follow ECMA-262 without flags, as JSON Schema asks, except that a
character atom always stands for one Unicode *code point* (as in Python and
in ECMA's ``u`` mode) rather than one UTF-16 code unit: ``[^a]`` matches one
emoji.  ``\\d`` and ``\\w`` are ASCII-only, ``\\s`` is Unicode white space, ``.``
excludes the four line terminators.  ``{`` that does not start a valid
quantifier is a literal (ECMA Annex B), as are ``}`` and ``]``; so is ``-``
next to a class escape inside a class (``[\\d-z]``).  ``\\u{...}`` is read as a
code point escape (as in ``u`` mode), and an escaped surrogate pair
``\\uD83D\\uDE00`` as the one astral character it encodes; a lone surrogate
escape matches nothing (no valid text contains one), and surrogates are
dropped from classes.  ``\\x`` needs two hex digits and ``\\c`` a letter.
``\\p{...}``/``\\P{...}`` name a Unicode general category (``L``, ``Lu``,
``Letter``, ``gc=Nd``; :mod:`.unicode_props`); scripts are refused.

Unsupported (raise :class:`RegexError` naming the feature and its position):
word boundaries ``\\b``/``\\B``, backreferences ``\\1``/``\\k<name>``, octal
escapes, lookahead/lookbehind, anchors anywhere but at the start or end of a
top-level alternative, and unknown letter escapes such as ``\\a`` (engines
disagree on their meaning).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

from exl2_enforcer.compile.charset import (
    ANY_CP,
    DIGIT,
    LINE_TERMINATORS,
    SPACE,
    SURROGATES,
    WORD,
    CodePointSet,
    cp_from_chars,
    cp_minus,
    cp_negate,
    cp_union,
    json_char_fragment,
    utf8_fragment,
)
from exl2_enforcer.compile.nfa import NFA, Frag, FragmentMatcher
from exl2_enforcer.compile.unicode_props import general_category
from exl2_enforcer.errors import RegexError

#: Default bound on the NFA states one pattern may create.
MAX_STATES = 200_000


#: letters Python's re takes as inline flags after "(?" (ECMA-262 has none)
_INLINE_FLAGS = frozenset("aiLmsux")

class Chars(NamedTuple):
    """One character from a code point set."""

    cps: CodePointSet


class Seq(NamedTuple):
    """Items matched one after another."""

    items: tuple["Node", ...]


class Alt(NamedTuple):
    """Any one of the alternatives."""

    items: tuple["Node", ...]


class Repeat(NamedTuple):
    """``item`` repeated ``lo``..``hi`` times (``hi`` None = unbounded)."""

    item: "Node"
    lo: int
    hi: int | None
    pos: int


class Anchor(NamedTuple):
    """``^`` or ``$`` at pattern position ``pos``."""

    kind: str
    pos: int


Node = Chars | Seq | Alt | Repeat | Anchor
EMPTY = Seq(())

_CLASS_ESCAPES: dict[str, CodePointSet] = {
    "d": DIGIT, "D": cp_negate(DIGIT), "w": WORD, "W": cp_negate(WORD), "s": SPACE, "S": cp_negate(SPACE),
}
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}
_QUANT_RE = re.compile(r"\{([0-9]+)(,([0-9]*))?\}")
_GROUP_NAME_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_HEX = "0123456789abcdefABCDEF"


# -- parsing --------------------------------------------------------------------------
class _Parser:
    """Recursive-descent parser from pattern text to :data:`Node` trees."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def error(self, message: str, pos: int | None = None) -> RegexError:
        return RegexError(message, self.p, self.i if pos is None else pos)

    def peek(self, k: int = 0) -> str:
        return self.p[self.i + k] if self.i + k < len(self.p) else ""

    def parse(self) -> Node:
        node = self.alternation()
        if self.i < len(self.p):  # only a stray ')' stops the top-level alternation early
            raise self.error("unmatched ')'")
        return node

    def alternation(self) -> Node:
        alts = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            alts.append(self.sequence())
        return alts[0] if len(alts) == 1 else Alt(tuple(alts))

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            items.append(self.term())
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def term(self) -> Node:
        start = self.i
        atom = self.atom()
        qpos = self.i
        quant = self.quantifier()
        if quant is None:
            return atom
        if isinstance(atom, Anchor):
            raise self.error("nothing to repeat", qpos)
        return Repeat(atom, quant[0], quant[1], start)

    def braces(self) -> tuple[int, int | None, int] | None:
        """A ``{n}``, ``{n,}`` or ``{n,m}`` quantifier at the cursor: (lo, hi, length)."""
        m = _QUANT_RE.match(self.p, self.i)
        if m is None:
            return None
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        if hi is not None and hi < lo:
            raise self.error("numbers out of order in {} quantifier")
        return lo, hi, m.end() - m.start()

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            quant = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{" and (b := self.braces()) is not None:
            self.i += b[2]
            quant = (b[0], b[1])
        else:
            return None
        if self.peek() == "?":  # lazy: same language
            self.i += 1
        return quant

    def atom(self) -> Node:
        c, pos = self.p[self.i], self.i
        if c == "(":
            return self.group()
        if c == "[":
            return Chars(self.char_class())
        self.i += 1
        if c == ".":
            return Chars(cp_negate(LINE_TERMINATORS))
        if c in "^$":
            return Anchor(c, pos)
        if c in "*+?":
            raise self.error("nothing to repeat", pos)
        if c == "{":
            self.i = pos
            if self.braces() is not None:
                raise self.error("nothing to repeat", pos)
            self.i = pos + 1
        if c == "\\":
            esc = self.escape(in_class=False)
            return Chars(esc if isinstance(esc, tuple) else ((esc, esc),))
        return Chars(((ord(c), ord(c)),))

    def group(self) -> Node:
        start = self.i
        self.i += 1
        if self.peek() == "?":
            rest = self.p[self.i + 1:self.i + 3]
            if rest[:1] == ":":
                self.i += 2
            elif rest[:1] in ("=", "!"):
                raise self.error("lookahead assertions are not supported", start)
            elif rest in ("<=", "<!"):
                raise self.error("lookbehind assertions are not supported", start)
            elif rest[:1] == "<":
                m = _GROUP_NAME_RE.match(self.p, self.i + 2)
                if m is None or self.p[m.end():m.end() + 1] != ">":
                    raise self.error("invalid group name", self.i + 2)
                self.i = m.end() + 1
            elif rest[:1] == "P" or rest[:1] in _INLINE_FLAGS or rest[:1] == "-":
                # Python's (?P<name>...) and inline flags such as (?i): common in patterns written for re
                raise self.error("invalid group: this is Python 're' syntax, not ECMA-262 (JSON Schema's"
                                 " regex dialect): write (?<name>...) for a named group, and spell a flag"
                                 " out ((?i)abc as [Aa][Bb][Cc])", start)
            else:
                raise self.error("invalid group", start)
        inner = self.alternation()
        if self.peek() != ")":
            raise self.error("missing ')'", start)
        self.i += 1
        return inner

    def char_class(self) -> CodePointSet:
        start = self.i
        self.i += 1
        negate = self.peek() == "^"
        self.i += negate
        parts: list[CodePointSet] = []
        while True:
            if self.i >= len(self.p):
                raise self.error("unterminated character class", start)
            if self.p[self.i] == "]":
                self.i += 1
                break
            a_pos = self.i
            a = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                b = self.class_atom()
                if isinstance(a, int) and isinstance(b, int):
                    if a > b:
                        raise self.error("range out of order in character class", a_pos)
                    parts.append(((a, b),))
                    continue
                # Annex B: a class escape next to '-' makes the '-' literal
                parts += [_as_set(a), cp_from_chars("-"), _as_set(b)]
            else:
                parts.append(_as_set(a))
        cps = cp_union(*parts)
        return cp_negate(cps) if negate else cps

    def class_atom(self) -> int | CodePointSet:
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return ord(c)
        if self.peek() == "b":  # backspace inside a class
            self.i += 1
            return 0x08
        if self.peek() == "-":
            self.i += 1
            return ord("-")
        return self.escape(in_class=True)

    def escape(self, in_class: bool) -> int | CodePointSet:
        """Parse the escape after a backslash; a code point or a class escape's set."""
        pos = self.i - 1
        c = self.peek()
        if not c:
            raise self.error("pattern ends with a backslash", pos)
        self.i += 1
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c]
        if c in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[c]
        if c in "bB":
            raise self.error(f"word boundary \\{c} is not supported", pos)
        if c in "123456789" or c == "k":
            raise self.error("backreferences are not supported", pos)
        if c == "0":
            if self.peek().isdigit():
                raise self.error("octal escapes are not supported", pos)
            return 0
        if c == "x":
            return self.hex_digits(2, pos)
        if c == "u":
            return self.unicode_escape(pos)
        if c in "pP" and self.peek() == "{":
            return self.property_escape(c == "P", pos)
        if c == "c" and self.peek().isascii() and self.peek().isalpha():
            self.i += 1
            return ord(self.p[self.i - 1]) % 32
        if c.isascii() and c.isalnum():
            raise self.error(f"unknown escape \\{c}", pos)
        return ord(c)

    def property_escape(self, negated: bool, pos: int) -> CodePointSet:
        """``\\p{Category}``/``\\P{Category}``: a Unicode general category (u-mode meaning)."""
        end = self.p.find("}", self.i)
        name = self.p[self.i + 1:end] if end > 0 else ""
        try:
            cps = general_category(name)
        except KeyError:
            raise self.error(f"unknown or unsupported Unicode property \\p{{{name}}} (general categories"
                             " only)", pos) from None
        self.i = end + 1
        return cp_negate(cps) if negated else cps

    def hex_digits(self, n: int, pos: int) -> int:
        digits = self.p[self.i:self.i + n]
        if len(digits) < n or any(d not in _HEX for d in digits):
            raise self.error(f"expected {n} hex digits in escape", pos)
        self.i += n
        return int(digits, 16)

    def unicode_escape(self, pos: int) -> int:
        if self.peek() == "{":
            end = self.p.find("}", self.i)
            digits = self.p[self.i + 1:end] if end > 0 else ""
            if not digits or any(d not in _HEX for d in digits) or int(digits, 16) > 0x10FFFF:
                raise self.error("bad \\u{...} escape", pos)
            self.i = end + 1
            return int(digits, 16)
        cp = self.hex_digits(4, pos)
        # an escaped surrogate pair denotes one astral code point
        if 0xD800 <= cp <= 0xDBFF and self.p[self.i:self.i + 2] == "\\u":
            save = self.i
            self.i += 2
            try:
                low = self.hex_digits(4, save)
            except RegexError:
                low = -1
            if 0xDC00 <= low <= 0xDFFF:
                return 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            self.i = save
        return cp


def _as_set(x: int | CodePointSet) -> CodePointSet:
    return ((x, x),) if isinstance(x, int) else x


def parse_regex(pattern: str) -> Node:
    """Parse ``pattern`` into an AST; raises :class:`RegexError` on bad syntax."""
    return _Parser(pattern).parse()


# -- anchors ---------------------------------------------------------------------------
class _Variant(NamedTuple):
    start: int | None  # position of the peeled '^', if any
    end: int | None  # position of the peeled '$', if any
    node: Node


def _has_anchor(node: Node) -> bool:
    if isinstance(node, Anchor):
        return True
    if isinstance(node, (Seq, Alt)):
        return any(_has_anchor(n) for n in node.items)
    if isinstance(node, Repeat):
        return _has_anchor(node.item)
    return False


def _split_anchors(node: Node, pattern: str) -> list[_Variant]:
    """Distribute top-level alternatives and peel leading ``^`` / trailing ``$``.

    Anchors left inside a returned node are in positions this compiler cannot
    express; emitting them raises.
    """
    if not _has_anchor(node):
        return [_Variant(None, None, node)]
    if isinstance(node, Anchor):
        return [_Variant(node.pos if node.kind == "^" else None, node.pos if node.kind == "$" else None, EMPTY)]
    if isinstance(node, Alt):
        return [v for n in node.items for v in _split_anchors(n, pattern)]
    if not isinstance(node, Seq):
        return [_Variant(None, None, node)]
    if len(node.items) == 1:
        return _split_anchors(node.items[0], pattern)
    first, middle, last = node.items[0], node.items[1:-1], node.items[-1]
    out: list[_Variant] = []
    for head in _split_anchors(first, pattern):
        if head.end is not None:
            raise RegexError("'$' is only supported at the end of the pattern", pattern, head.end)
        for tail in _split_anchors(last, pattern):
            if tail.start is not None:
                raise RegexError("'^' is only supported at the start of the pattern", pattern, tail.start)
            out.append(_Variant(head.start, tail.end, Seq((head.node, *middle, tail.node))))
    return out


# -- emission --------------------------------------------------------------------------
class _Emitter:
    """Emits AST nodes into an NFA, refusing to grow it past ``max_states``."""

    def __init__(self, nfa: NFA, pattern: str, mode: str, max_states: int) -> None:
        if mode not in ("json", "raw"):
            raise ValueError(f"unknown regex mode {mode!r}; expected 'json' or 'raw'")
        self.nfa = nfa
        self.pattern = pattern
        self.char: Callable[[NFA, CodePointSet], Frag] = json_char_fragment if mode == "json" else utf8_fragment
        self.base = len(nfa)
        self.max_states = max_states

    def too_many(self, pos: int) -> RegexError:
        return RegexError(f"pattern expands to too many states (more than {self.max_states})", self.pattern, pos)

    def emit(self, node: Node) -> Frag:
        nfa = self.nfa
        if isinstance(node, Chars):
            cps = cp_minus(node.cps, SURROGATES)
            frag = self.char(nfa, cps) if cps else nfa.nothing()
        elif isinstance(node, Seq):
            frag = nfa.seq([self.emit(n) for n in node.items])
        elif isinstance(node, Alt):
            frag = nfa.alt([self.emit(n) for n in node.items])
        elif isinstance(node, Repeat):
            frag = self.repeat(node)
        else:
            where = "start" if node.kind == "^" else "end"
            message = f"'{node.kind}' is only supported at the {where} of the pattern"
            raise RegexError(message, self.pattern, node.pos)
        if len(nfa) - self.base > self.max_states:
            raise self.too_many(0)
        return frag

    def repeat(self, node: Repeat) -> Frag:
        if node.hi == 0:
            return self.nfa.empty()
        copies = node.lo + 1 if node.hi is None else node.hi
        if copies > self.max_states:  # fail before building even one copy of a huge count
            raise self.too_many(node.pos)
        before = len(self.nfa)
        first = [self.emit(node.item)]
        size = len(self.nfa) - before
        if size * copies + len(self.nfa) - self.base > self.max_states:
            raise self.too_many(node.pos)

        def make() -> Frag:
            return first.pop() if first else self.emit(node.item)

        return self.nfa.repeat(make, node.lo, node.hi)


def compile_regex(nfa: NFA, pattern: str, *, mode: str = "json", search: bool = False,
                  max_states: int = MAX_STATES) -> Frag:
    """Compile an ECMA-262 ``pattern`` into a fragment of ``nfa``.

    ``search=False`` anchors the pattern at both ends (the whole input must
    match).  ``search=True`` gives JSON Schema ``pattern`` semantics: the match
    may be anywhere unless every top-level alternative carries ``^`` / ``$``.
    ``mode`` is ``"json"`` (JSON string content, escapes allowed) or ``"raw"``
    (raw UTF-8).  Raises :class:`RegexError` for malformed or unsupported
    patterns and for ones that would build more than ``max_states`` states.
    """
    emitter = _Emitter(nfa, pattern, mode, max_states)
    variants = _split_anchors(parse_regex(pattern), pattern)
    if not search:
        nodes = [v.node for v in variants]
        return emitter.emit(nodes[0] if len(nodes) == 1 else Alt(tuple(nodes)))
    # group alternatives by anchoring so each group shares one prefix/suffix loop
    groups: dict[tuple[bool, bool], list[Node]] = {}
    for v in variants:
        groups.setdefault((v.start is not None, v.end is not None), []).append(v.node)
    frags = []
    for (anchored_start, anchored_end), nodes in groups.items():
        parts = [] if anchored_start else [_any_star(emitter)]
        parts.append(emitter.emit(nodes[0] if len(nodes) == 1 else Alt(tuple(nodes))))
        if not anchored_end:
            parts.append(_any_star(emitter))
        frags.append(nfa.seq(parts))
    return frags[0] if len(frags) == 1 else nfa.alt(frags)


def _any_star(emitter: _Emitter) -> Frag:
    """``[\\s\\S]*`` in the emitter's mode: the implicit context of a search."""
    return emitter.nfa.star(emitter.char(emitter.nfa, ANY_CP))


#: patterns whose automaton :func:`pattern_accepts` keeps (each at most MAX_STATES NFA states)
PATTERN_CACHE_SIZE = 256


@functools.lru_cache(maxsize=PATTERN_CACHE_SIZE)
def _search_matcher(pattern: str) -> FragmentMatcher:
    nfa = NFA()
    return FragmentMatcher(nfa, compile_regex(nfa, pattern, mode="raw", search=True))


def pattern_accepts(pattern: str, value: str) -> bool:
    """Whether the string ``value`` matches ``pattern`` as a JSON Schema ``pattern`` (ECMA-262,
    found anywhere unless anchored): the verdict the compiled constraint gives a generated string,
    where Python's ``re`` (which jsonschema uses) differs (``$`` before a final newline, Unicode
    ``\\d``/``\\w``, no ``\\p{..}``).  A string with a lone surrogate matches nothing (no UTF-8
    output can spell it).  Raises :class:`RegexError` for malformed or unsupported patterns.
    """
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return _search_matcher(pattern).matches(data)
