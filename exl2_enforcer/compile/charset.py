"""Code point sets and their exact byte-level encodings.

A *code point set* is a sorted tuple of disjoint, non-adjacent inclusive
ranges ``((lo, hi), ...)`` over ``0..0x10FFFF``.  Sets are plain tuples so they
hash, compare and cache cheaply.

Two encoders turn a set into an NFA fragment matching exactly one character:

* :func:`utf8_fragment` -- the raw UTF-8 bytes of the character;
* :func:`json_char_fragment` -- the character as it may be written inside a
  JSON string literal: literally, or as one of the escapes of RFC 8259.

Surrogates (U+D800..U+DFFF) are never encoded.  They are not Unicode scalar
values: UTF-8 forbids encoding them (``ED A0 80`` is ill-formed), and a lone
``\\uD800`` escape in JSON decodes to a string that cannot be re-encoded as
UTF-8 and that most parsers reject or replace.  An astral character in JSON is
written with *two* ``\\uXXXX`` escapes (a surrogate pair), but that pair is one
character of the decoded string, so :func:`json_char_fragment` accepts it as one
character, exactly like a plain escape such as ``\\n`` or ``\\u00e9``.

Both encoders first compute a list of *byte-set sequences* (each element is a
set of byte ranges consumed by one edge), merge them into a trie, and then
share identical sub-tries so the emitted fragment is small: every UTF-8
character (``ANY_CP``) costs about ten states.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from exl2_enforcer.compile.nfa import NFA, Frag

#: Sorted, disjoint, non-adjacent inclusive code point ranges.
CodePointSet = tuple[tuple[int, int], ...]
#: Inclusive byte ranges consumed by one edge.
ByteSet = tuple[tuple[int, int], ...]
#: One byte set per byte of an encoding.
ByteSeq = tuple[ByteSet, ...]

MAX_CP = 0x10FFFF


# -- set algebra ----------------------------------------------------------------
def _normalize(ranges: Iterable[tuple[int, int]]) -> CodePointSet:
    """Sort, clip and merge overlapping or adjacent ranges into canonical form."""
    out: list[list[int]] = []
    for lo, hi in sorted((max(0, lo), min(MAX_CP, hi)) for lo, hi in ranges):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def cp_union(*sets: CodePointSet) -> CodePointSet:
    """The union of any number of code point sets."""
    return _normalize(r for s in sets for r in s)


def cp_negate(a: CodePointSet) -> CodePointSet:
    """The complement of ``a`` within ``0..0x10FFFF``."""
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in a:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_CP:
        out.append((nxt, MAX_CP))
    return tuple(out)


def cp_intersect(a: CodePointSet, b: CodePointSet) -> CodePointSet:
    """The intersection of two code point sets."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        # advance whichever range ends first; the other may still overlap more
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return _normalize(out)


def cp_minus(a: CodePointSet, b: CodePointSet) -> CodePointSet:
    """The code points of ``a`` that are not in ``b``."""
    return cp_intersect(a, cp_negate(b))


def cp_from_chars(chars: str) -> CodePointSet:
    """The set of the code points of the characters in ``chars``."""
    return _normalize((ord(c), ord(c)) for c in chars)


def cp_contains(a: CodePointSet, cp: int) -> bool:
    """Whether code point ``cp`` is in ``a``."""
    return any(lo <= cp <= hi for lo, hi in a)


ANY_CP: CodePointSet = ((0, MAX_CP),)
SURROGATES: CodePointSet = ((0xD800, 0xDFFF),)
DIGIT: CodePointSet = cp_from_chars("0123456789")
WORD: CodePointSet = _normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
#: ECMA-262 WhiteSpace plus LineTerminator (what ``\s`` matches).
SPACE: CodePointSet = _normalize(
    [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
     (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)]
)
#: ECMA-262 LineTerminator: what ``.`` does not match.
LINE_TERMINATORS: CodePointSet = cp_from_chars("\n\r\u2028\u2029")


# -- splitting numeric ranges into per-digit ranges -----------------------------
def _digit_range_seqs(lo: int, hi: int, ndigits: int, bits: int) -> list[list[tuple[int, int]]]:
    """Split ``lo..hi`` into sequences of per-digit ranges, most significant first.

    Digits are ``bits`` wide and there are ``ndigits`` of them.  Each result
    ``[(a1, b1), ..., (an, bn)]`` stands for the numbers whose digit i lies in
    ``ai..bi``; together they cover ``lo..hi`` exactly and disjointly.  This is
    the classic split used for UTF-8 continuation bytes (6-bit digits) and for
    hex escapes (4-bit digits).
    """
    if ndigits == 1:
        return [[(lo, hi)]]
    low_bits = bits * (ndigits - 1)
    mask = (1 << low_bits) - 1
    if lo >> low_bits == hi >> low_bits:
        head = lo >> low_bits
        return [[(head, head)] + rest for rest in _digit_range_seqs(lo & mask, hi & mask, ndigits - 1, bits)]
    out: list[list[tuple[int, int]]] = []
    if lo & mask:
        # a partial block at the bottom: its lower digits do not span everything
        out += _digit_range_seqs(lo, lo | mask, ndigits, bits)
        lo = (lo | mask) + 1
    tail: list[list[tuple[int, int]]] = []
    if (hi & mask) != mask:
        tail = _digit_range_seqs(hi & ~mask, hi, ndigits, bits)
        hi = (hi & ~mask) - 1
    if lo <= hi:
        full = [(0, (1 << bits) - 1)] * (ndigits - 1)
        out.append([(lo >> low_bits, hi >> low_bits)] + full)
    return out + tail


# UTF-8 encodes code points of each length class with a fixed lead-byte prefix.
_UTF8_CLASSES = ((0x0, 0x7F, 1), (0x80, 0x7FF, 2), (0x800, 0xFFFF, 3), (0x10000, MAX_CP, 4))
_LEAD_PREFIX = {1: 0x00, 2: 0xC0, 3: 0xE0, 4: 0xF0}


def _utf8_seqs(cps: CodePointSet) -> list[ByteSeq]:
    """Byte-set sequences whose union is exactly the UTF-8 encodings of ``cps``."""
    out: list[ByteSeq] = []
    for lo, hi in cp_minus(cps, SURROGATES):
        for clo, chi, n in _UTF8_CLASSES:
            a, b = max(lo, clo), min(hi, chi)
            if a > b:
                continue
            for digits in _digit_range_seqs(a, b, n, 6):
                lead_lo, lead_hi = digits[0]
                seq: list[ByteSet] = [((_LEAD_PREFIX[n] | lead_lo, _LEAD_PREFIX[n] | lead_hi),)]
                seq += [((0x80 | x, 0x80 | y),) for x, y in digits[1:]]
                out.append(tuple(seq))
    return out


# -- JSON string escapes -----------------------------------------------------------
_SHORT_ESCAPES = {0x22: ord('"'), 0x5C: ord("\\"), 0x2F: ord("/"), 0x08: ord("b"),
                  0x0C: ord("f"), 0x0A: ord("n"), 0x0D: ord("r"), 0x09: ord("t")}
_BACKSLASH: ByteSet = ((0x5C, 0x5C),)
_U: ByteSet = ((ord("u"), ord("u")),)


def _hex_digit_bytes(lo: int, hi: int) -> ByteSet:
    """The bytes spelling a hex digit of value ``lo..hi``, either letter case."""
    ranges: list[tuple[int, int]] = []
    if lo <= 9:
        ranges.append((0x30 + lo, 0x30 + min(hi, 9)))
    if hi >= 10:
        a, b = max(lo, 10) - 10, hi - 10
        ranges += [(0x41 + a, 0x41 + b), (0x61 + a, 0x61 + b)]
    return tuple(ranges)


def _hex4_seqs(lo: int, hi: int) -> list[ByteSeq]:
    """Sequences spelling the 4 hex digits of every 16-bit value in ``lo..hi``."""
    return [tuple(_hex_digit_bytes(a, b) for a, b in digits) for digits in _digit_range_seqs(lo, hi, 4, 4)]


def _u_escape_seqs(lo: int, hi: int) -> list[ByteSeq]:
    """``\\uXXXX`` for every code unit in ``lo..hi``."""
    return [(_BACKSLASH, _U) + h for h in _hex4_seqs(lo, hi)]


def _surrogate_pair_seqs(lo: int, hi: int) -> list[ByteSeq]:
    """``\\uHHHH\\uLLLL`` surrogate pairs for the astral code points ``lo..hi``."""
    out: list[ByteSeq] = []
    # a surrogate pair is a two-digit number in base 1024: (high, low) offsets
    for (h_lo, h_hi), (l_lo, l_hi) in _digit_range_seqs(lo - 0x10000, hi - 0x10000, 2, 10):
        for hs in _u_escape_seqs(0xD800 + h_lo, 0xD800 + h_hi):
            for ls in _u_escape_seqs(0xDC00 + l_lo, 0xDC00 + l_hi):
                out.append(hs + ls)
    return out


def _json_seqs(cps: CodePointSet) -> list[ByteSeq]:
    """Byte-set sequences for one character of ``cps`` inside a JSON string."""
    cps = cp_minus(cps, SURROGATES)
    plain = cp_minus(cp_intersect(cps, ((0x20, MAX_CP),)), cp_from_chars('"\\'))
    out = _utf8_seqs(plain)
    for cp, letter in _SHORT_ESCAPES.items():
        if cp_contains(cps, cp):
            out.append((_BACKSLASH, ((letter, letter),)))
    for lo, hi in cps:
        if lo <= 0xFFFF:
            out += _u_escape_seqs(lo, min(hi, 0xFFFF))
        if hi >= 0x10000:
            out += _surrogate_pair_seqs(max(lo, 0x10000), hi)
    return out


# -- trie with shared sub-tries ------------------------------------------------------
# A canonical node is (final, ((byteset, child), ...)); equal nodes are equal tuples,
# so one NFA state can serve every place the same sub-trie occurs.
Node = tuple[bool, tuple[tuple[ByteSet, "Node"], ...]]


def _merge_bytesets(sets: Iterable[ByteSet]) -> ByteSet:
    """Union of byte sets in canonical form (reuses the code point normaliser)."""
    return _normalize(r for s in sets for r in s)


def _canonical(trie: dict[ByteSet | None, Any]) -> Node:
    """Canonical form of a dict trie, with edges to equal children merged."""
    by_child: dict[Node, list[ByteSet]] = {}
    for key, sub in trie.items():
        if key is not None:
            by_child.setdefault(_canonical(sub), []).append(key)
    edges = tuple(sorted((_merge_bytesets(keys), child) for child, keys in by_child.items()))
    return (None in trie, edges)


@lru_cache(maxsize=1024)
def _utf8_dag(cps: CodePointSet) -> Node:
    return _dag(_utf8_seqs(cps))


@lru_cache(maxsize=1024)
def _json_dag(cps: CodePointSet) -> Node:
    return _dag(_json_seqs(cps))


def _dag(seqs: list[ByteSeq]) -> Node:
    """Merge byte-set sequences into a canonical shared trie."""
    root: dict[ByteSet | None, Any] = {}
    for seq in seqs:
        node = root
        for bs in seq:
            node = node.setdefault(bs, {})
        node[None] = True
    return _canonical(root)


def _emit(nfa: NFA, dag: Node) -> Frag:
    """Emit a canonical trie as a fragment, one state per distinct sub-trie."""
    end = nfa.state()
    states: dict[Node, int] = {}

    def state_for(node: Node) -> int:
        q = states.get(node)
        if q is not None:
            return q
        final, edges = node
        q = end if final and not edges else nfa.state()
        states[node] = q
        if final and edges:
            nfa.epsilon(q, end)
        for bs, child in edges:
            dst = state_for(child)
            for lo, hi in bs:
                nfa.edge(q, lo, hi, dst)
        return q

    # the root is never the target of an edge (the trie is acyclic), so it can be the entry
    return Frag(state_for(dag), end)


def utf8_fragment(nfa: NFA, cps: CodePointSet) -> Frag:
    """One code point of ``cps`` as raw UTF-8 bytes (never a surrogate, never overlong).

    An empty set yields a fragment that matches nothing.
    """
    return _emit(nfa, _utf8_dag(cps))


def json_char_fragment(nfa: NFA, cps: CodePointSet) -> Frag:
    """One character of ``cps`` as written inside a JSON string literal (RFC 8259).

    Accepts the literal UTF-8 spelling (code points >= 0x20 other than ``"`` and
    ``\\``), the short escapes ``\\" \\\\ \\/ \\b \\f \\n \\r \\t``, ``\\uXXXX``
    (either hex case) for BMP code points and a surrogate-pair escape for astral
    ones -- each only for code points in ``cps``.  An escape is one character.
    """
    return _emit(nfa, _json_dag(cps))

