"""Exact byte automata for JSON numbers restricted by JSON Schema bounds.

``integer_fragment`` and ``number_fragment`` emit a fragment into an
:class:`~exl2_enforcer.compile.nfa.NFA` that matches the text of one JSON number
(RFC 8259) whose *value* satisfies ``minimum`` / ``maximum`` /
``exclusiveMinimum`` / ``exclusiveMaximum`` / ``multipleOf`` (draft 2020-12).

How: every constraint is a small deterministic machine over the magnitude
digits (syntax, "value compared with a bound", "remainder modulo multipleOf");
their product is explored from the start state only, trimmed of dead ends,
minimised and emitted.  Comparison machines compare digit strings (longer
integer part wins, then lexicographic, fractions padded with zeros), so the
size is O(digits of the bounds) and never O(size of the range).

Documented choices:

* Negative zero (``-0``, ``-0.0``, which ``json.dumps(-0.0)`` writes) is the value 0: accepted
  wherever 0 is.
* When any constraint is present, exponent forms (``1e3``) are refused: sound,
  and a model can always write the plain decimal form instead.
* ``multipleOf`` m is supported exactly whenever m = p * 10**-k with an integer
  p <= 10_000 (0.01, 0.5, 2.5, 7, 300 ...).  Matching is by value, so for a
  number ``2.50`` is a multiple of 0.5 and ``10.0`` a multiple of 5.
* A text is accepted only when both readings accept it: the spec's (the decimal
  value of the text against the decimal the schema's number was written as, a
  float bound read as its shortest ``repr``) and Python's (``json.loads``, which
  the ``jsonschema`` oracle sees: a text without ``.`` is an exact ``int``, one
  with ``.`` is rounded to the nearest double; bounds compare by their exact
  value).  So texts are split by spelling (:class:`Spelling`): integer texts
  get bounds that also hold for the bound's exact binary value (``maximum: 1e23``
  is 99999999999999991611392 to Python), fraction texts get bounds that hold
  after rounding (:func:`rounded_upper`: ``exclusiveMaximum: 0.1`` refuses
  ``0.09999999999999999999``, which rounds to 0.1), and with ``multipleOf``
  fraction texts stay within +-2**53, where rounding cannot change a remainder.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Hashable
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple, cast

import numpy as np

from exl2_enforcer.compile.nfa import NFA, Frag, coreachable
from exl2_enforcer.errors import SchemaError

ALPHABET = b"0123456789.eE+-"
MAGNITUDE = b"0123456789."  # the unsigned part of a number without exponent
DIGITS = b"0123456789"
DOT, MINUS = ord("."), ord("-")
MAX_MULTIPLE_NUMERATOR = 10_000
MAX_BOUND_DIGITS = 1000
MAX_STATES = 100_000  # product states explored before giving up on a multipleOf

Number = int | float | Decimal


class Machine(NamedTuple):
    """A lazily explored DFA: ``step`` returns None for "no transition"."""

    start: Hashable
    step: Callable[[Hashable, int], Hashable | None]
    accepting: Callable[[Hashable], bool]


#: a machine's ``step`` and ``accepting`` as :class:`Machine` types them (for its concrete state types)
_Step = Callable[[Hashable, int], Hashable | None]
_Accepting = Callable[[Hashable], bool]


# -- syntax machines (unsigned part; the sign is added by _signed) -------------

Table = dict[str, dict[bytes, str]]
_NZ = b"123456789"
_INT: Table = {"S": {b"0": "Z", _NZ: "D"}, "D": {DIGITS: "D"}}
_POINT: Table = {"S": _INT["S"], "Z": {b".": "P"}, "D": {DIGITS: "D", b".": "P"}}
_INT_FRAC0: Table = {**_POINT, "P": {b"0": "F"}, "F": {b"0": "F"}}
_DEC: Table = {**_POINT, "P": {DIGITS: "F"}, "F": {DIGITS: "F"}}
_FULL: Table = {
    "S": {b"0": "Z", _NZ: "D"}, "Z": {b".": "P", b"eE": "E"},
    "D": {DIGITS: "D", b".": "P", b"eE": "E"}, "P": {DIGITS: "F"},
    "F": {DIGITS: "F", b"eE": "E"}, "E": {b"+-": "T", DIGITS: "X"},
    "T": {DIGITS: "X"}, "X": {DIGITS: "X"},
}
_FINALS = frozenset("ZDFX")
#: the finals of texts written with a fraction ("1.0", "2.5"): Python reads them as floats
_FRACTION_FINALS = frozenset("F")
#: the finals of texts written as integers ("12", "-0"): Python reads them as exact ints
_INTEGER_FINALS = frozenset("ZD")


def _table_machine(table: Table, finals: frozenset[str] = _FINALS) -> Machine:
    """A machine from a small transition table (start "S"; ``finals`` among Z/D/F/X)."""
    flat: dict[Hashable, dict[int, str]] = {q: {b: t for bs, t in row.items() for b in bs} for q, row in table.items()}
    return Machine("S", lambda q, b: flat.get(q, {}).get(b), lambda q: q in finals)


# -- value machines -------------------------------------------------------------

def _digits(c: Decimal) -> tuple[str, str]:
    """Integer digits (no leading zeros, "0" for zero) and fraction digits (no trailing zeros)."""
    ip, _, fp = format(c.copy_abs(), "f").partition(".")
    return ip.lstrip("0") or "0", fp.rstrip("0")


def _sign(x: int) -> int:
    """-1, 0 or 1."""
    return (x > 0) - (x < 0)


def compare_machine(c: Decimal, wanted: frozenset[int]) -> Machine:
    """Unsigned decimals ``[0-9]+(\\.[0-9]+)?`` whose value v has ``cmp(v, c)`` in ``wanted``.

    Assumes no leading zeros (the syntax machine it is multiplied with
    guarantees that), so a shorter integer part means a smaller value.
    States: ("I", i, rel) integer prefix of length i <= len(c) vs c's prefix;
    ("G",) integer part longer than c's; ("F", j) integer part equal and
    fraction equal so far over j digits; ("X", o) outcome already decided.
    """
    ci, cf = _digits(c)
    n_int, n_frac = len(ci), len(cf)

    def int_outcome(q: tuple[Any, ...]) -> int:
        if q[0] == "G":
            return 1
        _, i, rel = q
        return -1 if i < n_int else rel

    def step(q: tuple[Any, ...], b: int) -> tuple[Any, ...] | None:
        kind = q[0]
        if b == DOT:
            if kind not in ("I", "G"):
                return None
            o = int_outcome(q)
            return ("X", o) if o else ("F", 0)
        if not 48 <= b <= 57:
            return None
        d = b - 48
        if kind == "I":
            _, i, rel = q
            return ("G",) if i == n_int else ("I", i + 1, rel or _sign(d - int(ci[i])))
        if kind == "F":
            j = q[1]
            # past c's last fraction digit c is padded with zeros
            o = _sign(d - (int(cf[j]) if j < n_frac else 0))
            return ("X", o) if o else ("F", min(j + 1, n_frac))
        return q  # "G" and "X" ignore further digits

    def outcome(q: tuple[Any, ...]) -> int:
        if q[0] in ("I", "G"):
            o = int_outcome(q)
            # equal integer parts: c is bigger iff it has a fraction (never all zeros)
            return o if o else (-1 if n_frac else 0)
        if q[0] == "F":
            return -1 if q[1] < n_frac else 0
        return cast(int, q[1])

    return Machine(("I", 0, 0), cast(_Step, step), cast(_Accepting, lambda q: outcome(q) in wanted))


def multiple_machine(p: int, k: int) -> Machine:
    """Unsigned decimals whose value is a multiple of ``p * 10**-k`` (p >= 1, k >= 0).

    v is such a multiple iff v * 10**k is an integer divisible by p: the state
    is (v's digits so far mod p, fraction digits read or -1 in the integer
    part); fraction digits past the k-th must be zero.
    """

    def step(q: tuple[int, int], b: int) -> tuple[int, int] | None:
        r, j = q
        if b == DOT:
            return (r, 0) if j < 0 else None
        if not 48 <= b <= 57:
            return None
        if j < 0:
            return ((10 * r + b - 48) % p, -1)
        if j < k:
            return ((10 * r + b - 48) % p, j + 1)
        return q if b == 48 else None

    def accepting(q: tuple[int, int]) -> bool:
        r, j = q
        return r * pow(10, k - max(j, 0), p) % p == 0

    return Machine((0, -1), cast(_Step, step), cast(_Accepting, accepting))


# -- explicit DFAs: start is state 0; explore, intersect, trim, minimise, emit ----

class DFA(NamedTuple):
    """An explicit partial DFA whose start state is 0."""

    rows: list[dict[int, int]]  # state -> {byte: next state}
    accept: list[bool]


def _explore(m: Machine, alphabet: bytes) -> DFA:
    """Materialise the states of ``m`` reachable from its start."""
    ids: dict[Hashable, int] = {m.start: 0}
    order: list[Hashable] = [m.start]
    rows: list[dict[int, int]] = []
    for q in order:  # grows while iterating: breadth-first
        row: dict[int, int] = {}
        for b in alphabet:
            t = m.step(q, b)
            if t is not None:
                if t not in ids:
                    ids[t] = len(order)
                    order.append(t)
                row[b] = ids[t]
        rows.append(row)
    return DFA(rows, [m.accepting(q) for q in order])


def _intersect(a: DFA, b: DFA, limit: int) -> DFA:
    """Product automaton; raises OverflowError past ``limit`` states."""
    nb = len(b.rows)
    ids = {0: 0}
    order = [0]  # pair (x, y) encoded as x * nb + y
    rows: list[dict[int, int]] = []
    for key in order:
        x, y = divmod(key, nb)
        row_b = b.rows[y]
        row: dict[int, int] = {}
        for byte, tx in a.rows[x].items():
            ty = row_b.get(byte)
            if ty is not None:
                t = tx * nb + ty
                i = ids.get(t)
                if i is None:
                    i = ids[t] = len(order)
                    order.append(t)
                    if i >= limit:
                        raise OverflowError(limit)
                row[byte] = i
        rows.append(row)
    return DFA(rows, [a.accept[k // nb] and b.accept[k % nb] for k in order])


def _signed(pos: DFA | None, neg: DFA | None) -> DFA:
    """``pos | "-" neg``; a side that is None admits nothing.  Neither side accepts ""."""
    rows: list[dict[int, int]] = [{}]
    accept = [False]
    for side, via_minus in ((pos, False), (neg, True)):
        if side is None:
            continue
        off = len(rows)
        rows += [{b: t + off for b, t in row.items()} for row in side.rows]
        accept += side.accept
        if via_minus:
            rows[0][MINUS] = off
        else:
            rows[0].update(rows[off])  # start edges of pos; its start is not accepting
    return DFA(rows, accept)


def _trim(d: DFA) -> DFA | None:
    """Keep the states that reach an accepting one; None if the language is empty."""
    live = coreachable([row.values() for row in d.rows], (q for q, a in enumerate(d.accept) if a))
    if 0 not in live:
        return None
    seen, todo = {0}, [0]  # a start-row copy (see _signed) can leave states unreachable
    while todo:
        for t in d.rows[todo.pop()].values():
            if t in live and t not in seen:
                seen.add(t)
                todo.append(t)
    keep = sorted(seen)  # state 0 stays first, so it stays the start
    new = {q: i for i, q in enumerate(keep)}
    return DFA([{b: new[t] for b, t in d.rows[q].items() if t in new} for q in keep],
               [d.accept[q] for q in keep])


def _minimise(d: DFA) -> DFA:
    """Moore partition refinement, vectorised (product DFAs reach 10^5 states); start stays 0."""
    rows, accept = d
    n = len(rows)
    alphabet = sorted({b for row in rows for b in row})
    table = np.full((n, len(alphabet)), n, dtype=np.int64)  # column n: an implicit sink
    for q, row in enumerate(rows):
        for c, b in enumerate(alphabet):
            table[q, c] = row.get(b, n)
    block = np.asarray(accept, dtype=np.int64)
    count = len(np.unique(block))
    while True:
        with_sink = np.append(block, -1)  # the sink is a block of its own
        # a state's signature: its block and its successors' blocks; one lexicographic sort per
        # round (a long bound is a chain of digit states, refined one state per round)
        signature = np.column_stack([block, with_sink[table]])
        order = np.lexsort(signature.T[::-1])
        ordered = signature[order]
        starts = np.concatenate([[0], np.cumsum(np.any(ordered[1:] != ordered[:-1], axis=1))])
        block = np.empty(n, dtype=np.int64)
        block[order] = starts
        if block.max() + 1 == count:
            break
        count = int(block.max()) + 1
    block = block.tolist()
    remap = {x: i for i, x in enumerate(dict.fromkeys(block))}  # first seen: the start's block is 0
    out_rows: list[dict[int, int]] = [{} for _ in range(count)]
    out_acc = [False] * count
    for q, row in enumerate(rows):
        i = remap[block[q]]
        out_rows[i] = {b: remap[block[t]] for b, t in row.items()}
        out_acc[i] = accept[q]
    return DFA(out_rows, out_acc)


def _shrink(d: DFA) -> DFA | None:
    """Trimmed and minimised ``d``, or None if its language is empty."""
    t = _trim(d)
    return None if t is None else _minimise(t)


def _emit(nfa: NFA, d: DFA) -> Frag:
    """Copy the DFA into ``nfa``: runs of bytes with one target become one range edge."""
    rows, accept = d
    ids = [nfa.state() for _ in rows]
    end = nfa.state()
    for q, row in enumerate(rows):
        by_target: dict[int, list[list[int]]] = {}  # target -> runs [lo, hi]
        for b in sorted(row):
            runs = by_target.setdefault(row[b], [])
            if runs and runs[-1][1] == b - 1:
                runs[-1][1] = b  # extend the run of consecutive bytes
            else:
                runs.append([b, b])
        for t, runs in by_target.items():
            for lo, hi in runs:
                nfa.edge(ids[q], lo, hi, ids[t])
        if accept[q]:
            nfa.epsilon(ids[q], end)
    return Frag(ids[0], end)


# -- schema keywords → machines ---------------------------------------------------

def _to_decimal(x: Number | None, keyword: str, pointer: str) -> Decimal | None:
    """A schema number as an exact Decimal (floats via repr, so 0.1 stays 0.1)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float, Decimal)):
        raise SchemaError(f"{keyword} must be a number, got {x!r}", pointer, keyword)
    d = Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    if not d.is_finite():
        raise SchemaError(f"{keyword} must be finite, got {x!r}", pointer, keyword)
    # digits of the plain spelling, without building it (1e-999999 would be huge)
    if max(d.adjusted(), 0) + max(-int(d.as_tuple().exponent), 0) > MAX_BOUND_DIGITS:
        raise SchemaError(f"{keyword} {x!r} has too many digits (max {MAX_BOUND_DIGITS})", pointer, keyword)
    return d


Bound = tuple[Decimal, bool]  # (value, inclusive)


def _side_constraints(lo: Bound | None, hi: Bound | None, negative: bool) -> list[Machine] | None:
    """Comparison machines on the magnitude for one sign; None if that sign is impossible."""
    ge, gt, le, lt = frozenset({0, 1}), frozenset({1}), frozenset({-1, 0}), frozenset({-1})
    out: list[Machine] = []
    if not negative:
        if hi is not None and (hi[0] < 0 or (hi[0] == 0 and not hi[1])):
            return None
        if lo is not None and lo[0] >= 0:
            out.append(compare_machine(lo[0], ge if lo[1] else gt))
        if hi is not None:
            out.append(compare_machine(hi[0], le if hi[1] else lt))
        return out
    if lo is not None and (lo[0] > 0 or (lo[0] == 0 and not lo[1])):
        return None
    if not _admits_zero(lo, hi):
        out.append(compare_machine(Decimal(0), gt))  # -0 is the value 0, which the bounds exclude
    if lo is not None:  # v >= lo  <=>  |v| <= -lo
        out.append(compare_machine(-lo[0], le if lo[1] else lt))
    if hi is not None and hi[0] < 0:  # v <= hi  <=>  |v| >= -hi
        out.append(compare_machine(-hi[0], ge if hi[1] else gt))
    return out


def _admits_zero(lo: Bound | None, hi: Bound | None) -> bool:
    """Whether the value 0 (spelled ``0`` or ``-0``) lies within both bounds."""
    lo_ok = lo is None or lo[0] < 0 or (lo[0] == 0 and lo[1])
    hi_ok = hi is None or hi[0] > 0 or (hi[0] == 0 and hi[1])
    return lo_ok and hi_ok


def _multiple(m: Decimal, pointer: str) -> tuple[int, int]:
    """Write ``m`` as p * 10**-k with integer p; refuse what needs too many states."""
    if m <= 0:
        raise SchemaError(f"multipleOf must be > 0, got {m}", pointer, "multipleOf")
    exp = m.normalize().as_tuple().exponent
    k = max(0, -int(exp))
    p = int(m.scaleb(k))
    if p > MAX_MULTIPLE_NUMERATOR or p * (k + 1) > MAX_STATES:
        raise SchemaError(f"multipleOf {m} is not supported: it is {p} * 10**-{k} and needs "
                          f"more than {MAX_MULTIPLE_NUMERATOR} remainder states", pointer, "multipleOf")
    return p, k


_KEYWORDS = {"minimum": "minimum", "maximum": "maximum", "exclusive_minimum": "exclusiveMinimum",
             "exclusive_maximum": "exclusiveMaximum", "multiple_of": "multipleOf"}
_LOWER = (("minimum", True), ("exclusive_minimum", False))
_UPPER = (("maximum", True), ("exclusive_maximum", False))


# -- what Python reads: json.loads makes a text with "." a float, the nearest double -------------

#: 2**1024, where doubles end: a text at or past the midpoint below it reads as infinity
_FLOAT_END = Fraction(2) ** 1024
_MAX_DOUBLE = Fraction(sys.float_info.max)
#: up to this magnitude every integer is a double, so rounding cannot change a remainder
EXACT_INTEGER_LIMIT = 2 ** 53


def _largest_double(bound: Fraction, inclusive: bool) -> Fraction:
    """The largest double d <= ``bound`` (d < ``bound`` unless ``inclusive``); -2**1024, standing
    for -infinity, when no finite double is."""
    if bound > _MAX_DOUBLE:
        return _MAX_DOUBLE
    if bound < -_MAX_DOUBLE or (bound == -_MAX_DOUBLE and not inclusive):
        return -_FLOAT_END
    f = float(bound)  # the nearest double: at most a step or two above the answer
    while Fraction(f) > bound or (Fraction(f) == bound and not inclusive):
        f = math.nextafter(f, -math.inf)
    return Fraction(f)


def _next_double(d: Fraction) -> Fraction:
    """The double after ``d`` (2**1024 after the largest, -largest after -2**1024)."""
    if d == -_FLOAT_END:
        return -_MAX_DOUBLE
    if d == _MAX_DOUBLE:
        return _FLOAT_END
    return Fraction(math.nextafter(float(d), math.inf))


def _even(d: Fraction) -> bool:
    """Whether round-half-to-even rounds a tie to ``d``: its significand's last bit is 0."""
    if abs(d) == _FLOAT_END:
        return True
    bits: int = struct.unpack("<q", struct.pack("<d", float(d)))[0]
    return bits & 1 == 0


def _binary_decimal(x: Fraction) -> Decimal:
    """``x`` (a denominator that is a power of 2) as an exact Decimal."""
    k = x.denominator.bit_length() - 1
    return Decimal(f"{x.numerator * 5 ** k}E-{k}")


def rounded_upper(bound: Fraction, inclusive: bool) -> tuple[Decimal, bool]:
    """The decimals x whose nearest double r has r <= ``bound`` (r < ``bound`` unless
    ``inclusive``), as an upper bound on x: ``(value, inclusive)``.

    r <= d, the largest such double, iff x is below the midpoint between d and the next
    double, or on it when the tie rounds to d.
    """
    d = _largest_double(bound, inclusive)
    return _binary_decimal((d + _next_double(d)) / 2), _even(d)


def rounded_lower(bound: Fraction, inclusive: bool) -> tuple[Decimal, bool]:
    """:func:`rounded_upper` for a lower bound (rounding is symmetric about 0)."""
    value, closed = rounded_upper(-bound, inclusive)
    return -value, closed


class Spelling(NamedTuple):
    """One way of writing a number and how Python's ``json.loads`` reads it."""

    syntax: Table
    finals: frozenset[str]
    #: read as a float (rounded to the nearest double); else by its exact value.  Bounds compare by
    #: their exact value too (``Decimal(0.1)``: a float's binary value, not its repr)
    rounded: bool
    #: the value must stay a finite float (an integer type: ``inf`` is no integer)
    finite: bool = False


def _spelled_bounds(spelling: Spelling, kw: dict[str, Number | None], d: dict[str, Decimal | None],
                    lower: bool) -> Bound | None:
    """The tightest bound on one side for texts of ``spelling``: the schema's decimals (``d``) and
    what Python compares after reading the text (``kw``'s exact values)."""
    cands: list[Bound] = []
    for key, inclusive in _LOWER if lower else _UPPER:
        value, written = kw[key], d[key]
        if value is None or written is None:
            continue
        cands.append((written, inclusive))
        if not spelling.rounded:
            cands.append((Decimal(value), inclusive))
        else:
            rounded = rounded_lower if lower else rounded_upper
            cands.append(rounded(Fraction(value), inclusive))
    if spelling.rounded and spelling.finite:
        cands.append(rounded_lower(-_MAX_DOUBLE, True) if lower else rounded_upper(_MAX_DOUBLE, True))
    if spelling.rounded and kw["multiple_of"] is not None:
        cands.append((Decimal(-EXACT_INTEGER_LIMIT if lower else EXACT_INTEGER_LIMIT), True))
    return _tightest(cands, lower)


def _tightest(cands: list[Bound], lower: bool) -> Bound | None:
    """The tightest of one side's bounds; exclusive wins a tie."""
    if not cands:
        return None
    # tighter = larger lower bound / smaller upper bound; on a tie exclusive sorts first
    return max(cands, key=lambda c: (c[0] if lower else -c[0], not c[1]))


_SYNTAX_DFAS: dict[tuple[Hashable, ...], DFA | None] = {}


def _syntax_dfa(spelling: Spelling) -> DFA | None:
    """The minimised DFA of ``spelling``'s unsigned texts (shared: the result is never changed).

    The same few spellings serve every number of every schema; an ``enum`` of 10,000 numbers
    built this machine 20,000 times (a third of its compile)."""
    key = (tuple(sorted((state, tuple(sorted(row.items()))) for state, row in spelling.syntax.items())),
           spelling.finals)
    if key not in _SYNTAX_DFAS:
        _SYNTAX_DFAS[key] = _shrink(_explore(_table_machine(spelling.syntax, spelling.finals), MAGNITUDE))
    return _SYNTAX_DFAS[key]


def _spelled_dfa(spelling: Spelling, kw: dict[str, Number | None], d: dict[str, Decimal | None],
                 mult: DFA | None, pointer: str) -> DFA | None:
    """The texts of ``spelling`` whose value meets the bounds and ``multipleOf``; None if none."""
    lo = _spelled_bounds(spelling, kw, d, lower=True)
    hi = _spelled_bounds(spelling, kw, d, lower=False)
    sides: list[DFA | None] = []
    for negative in (False, True):
        cons = _side_constraints(lo, hi, negative)
        side = None if cons is None else _syntax_dfa(spelling)
        # intersect the small comparison machines first (trimmed: minimising a long bound's chain
        # of digit states costs a round per digit, so it is done once, at the end); the remainder
        # machine last, on a minimised side
        for m in cons or ():
            side = side and _trim(_intersect(side, _explore(m, MAGNITUDE), MAX_STATES))
        if side and mult:
            try:
                side = _shrink(_intersect(_minimise(side), mult, MAX_STATES))
            except OverflowError:
                raise SchemaError(f"multipleOf {d['multiple_of']} is not supported with these bounds: "
                                  f"it needs more than {MAX_STATES} automaton states",
                                  pointer, "multipleOf") from None
        sides.append(side)
    return None if sides == [None, None] else _trim(_signed(*sides))


def _union(a: DFA, b: DFA) -> DFA:
    """The DFA accepting what ``a`` or ``b`` accepts (pairs of states; -1: that side is dead)."""
    ids = {(0, 0): 0}
    order = [(0, 0)]
    rows: list[dict[int, int]] = []
    for x, y in order:  # grows while iterating
        row_a, row_b = a.rows[x] if x >= 0 else {}, b.rows[y] if y >= 0 else {}
        row: dict[int, int] = {}
        for byte in sorted(row_a.keys() | row_b.keys()):
            t = (row_a.get(byte, -1), row_b.get(byte, -1))
            if t not in ids:
                ids[t] = len(order)
                order.append(t)
            row[byte] = ids[t]
        rows.append(row)
    return DFA(rows, [(x >= 0 and a.accept[x]) or (y >= 0 and b.accept[y]) for x, y in order])


#: integers up to this magnitude are exactly a float, so their float spellings read back as them
EXACT_FLOAT_INT = 2**53


def point_texts(value: Any) -> tuple[tuple[bytes, ...], bool] | None:
    """How a listed number (an ``enum``/``const`` value) is written, but for trailing zeros:
    ``(texts, integral)``, or None where only the general construction applies (big integers,
    non-finite values, anything but an int or float).

    A text must equal the value both by its exact decimal value and after ``json.loads`` reads it.
    An integral value of magnitude at most 2**53 is its digits, optionally followed by ``.`` and
    one or more zeros (``integral`` True; every such text reads as the exact value); a float that
    is not integral is its shortest decimal (which reads back as the value) followed by any number
    of zeros.  ``0`` is also written ``-0``.  Texts carry their ``-``."""
    if type(value) is int:
        finite = True
    elif type(value) is float:
        finite = math.isfinite(value)
    else:
        return None
    integral = finite and value == int(value)
    if integral and abs(value) <= EXACT_FLOAT_INT:
        body = str(abs(int(value))).encode()
    elif finite and not integral:
        body = format(abs(Decimal(repr(value))), "f").encode()
    else:
        return None
    texts = (body,) if value > 0 else (b"-" + body,) if value < 0 else (body, b"-" + body)
    return texts, integral


def _point(spellings: list[Spelling], kw: dict[str, Number | None]) -> DFA | None:
    """The texts of ``spellings`` equal to one value (:func:`point_texts`), built directly; None
    where the bounds are not ``minimum == maximum`` alone (an int or float, one type) or the
    value needs the general construction.  The same language as the general construction
    (tests/test_numbers.py compares them), without its bound machines: 0.6 ms a value there, so
    an ``enum`` of 10,000 numbers took 7 s."""
    v = kw["minimum"]
    if (v is None or kw["maximum"] != v or type(v) is not type(kw["maximum"])
            or any(kw[k] is not None for k in ("exclusive_minimum", "exclusive_maximum", "multiple_of"))):
        return None
    got = point_texts(v)
    if got is None:
        return None
    texts, integral = got
    if spellings == [_INTEGERS, _FRACTIONS] or (spellings == [_INTEGERS, _INTEGRAL_FRACTIONS] and integral):
        zeros = True
    elif spellings == [_INTEGERS] and integral:
        zeros = False
    else:
        return None
    body = texts[0].lstrip(b"-")
    rows: list[dict[int, int]] = [{b: i + 1} for i, b in enumerate(body)]
    end = len(rows)
    rows.append({})
    accept = [False] * end + [True]
    if not integral:  # trailing zeros after the value's last (non-zero) fraction digit
        rows[end][ord("0")] = end
    elif zeros:  # D "." "0"+
        rows[end][DOT] = end + 1
        rows += [{ord("0"): end + 2}, {ord("0"): end + 2}]
        accept += [False, True]
    side = DFA(rows, accept)
    x = cast(float, v)
    return _signed(side if x >= 0 else None, side if x <= 0 else None)


def _build(nfa: NFA, spellings: list[Spelling], kw: dict[str, Number | None], pointer: str) -> Frag:
    """:func:`number_dfa`, emitted into ``nfa``."""
    return _emit(nfa, number_dfa(spellings, kw, pointer))


def number_dfa(spellings: list[Spelling], kw: dict[str, Number | None], pointer: str, *,
               direct: bool = True) -> DFA:
    """The texts of ``spellings`` that meet the bounds and ``multipleOf`` of ``kw``: per spelling,
    syntax, bounds and multipleOf intersected per sign, then joined and minimised (a single value:
    built directly, unless ``direct`` is False).  Raises :class:`SchemaError` at ``pointer`` when
    no text does or a keyword's number is unusable."""
    d = {k: _to_decimal(kw[k], name, pointer) for k, name in _KEYWORDS.items()}
    point = _point(spellings, kw) if direct else None
    if point is not None:
        return point
    mult = None
    if d["multiple_of"] is not None:
        mult = _shrink(_explore(multiple_machine(*_multiple(d["multiple_of"], pointer)), MAGNITUDE))
    if any(isinstance(v, Decimal) for v in kw.values()):
        # a schema read with parse_float=Decimal: its instances are read so too, without rounding
        spellings = [s._replace(rounded=False) for s in spellings]
    dfas = [x for x in (_spelled_dfa(s, kw, d, mult, pointer) for s in spellings) if x is not None]
    if not dfas:
        raise SchemaError("the numeric range admits no value", pointer)
    joined = dfas[0]
    for other in dfas[1:]:
        joined = _union(joined, other)
    return cast(DFA, _shrink(joined))  # not empty: each part admits a value


_INTEGERS = Spelling(_INT, _INTEGER_FINALS, rounded=False)
_FRACTIONS = Spelling(_DEC, _FRACTION_FINALS, rounded=True)
_INTEGRAL_FRACTIONS = Spelling(_INT_FRAC0, _FRACTION_FINALS, rounded=True, finite=True)


def _unbounded_number(nfa: NFA) -> Frag:
    """The full RFC 8259 number grammar (``-0`` included: it is the value 0)."""
    full = _shrink(_explore(_table_machine(_FULL), ALPHABET))
    return _emit(nfa, cast(DFA, _shrink(_signed(full, full))))  # the number grammar is not empty


def integer_fragment(nfa: NFA, *, minimum: Number | None = None, maximum: Number | None = None,
                     exclusive_minimum: Number | None = None, exclusive_maximum: Number | None = None,
                     multiple_of: Number | None = None, allow_integral_fraction: bool = False,
                     pointer: str = "") -> Frag:
    """Emit a fragment matching exactly the JSON integers ``-?(0|[1-9][0-9]*)`` within the bounds.

    Non-integer bounds work by value (minimum 1.5 admits 2, 3, ...).
    ``allow_integral_fraction`` also admits ``.0``, ``.00``... after the digits
    ("3.0" is a JSON-Schema integer).  Raises :class:`SchemaError` when no
    integer fits or ``multipleOf`` is unsupported (see module docstring).
    """
    kw = {"minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
          "exclusive_maximum": exclusive_maximum, "multiple_of": multiple_of}
    spellings = [_INTEGERS] + ([_INTEGRAL_FRACTIONS] if allow_integral_fraction else [])
    return _build(nfa, spellings, kw, pointer)


def number_fragment(nfa: NFA, *, minimum: Number | None = None, maximum: Number | None = None,
                    exclusive_minimum: Number | None = None, exclusive_maximum: Number | None = None,
                    multiple_of: Number | None = None, pointer: str = "") -> Frag:
    """Emit a fragment matching JSON numbers within the bounds.

    Without constraints: the full RFC 8259 grammar (exponents included).  With
    any constraint: exactly the plain decimals ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``
    whose value satisfies them; exponent forms are refused.  ``-0`` is accepted
    wherever 0 is.  Raises :class:`SchemaError` like :func:`integer_fragment`.
    """
    kw = {"minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
          "exclusive_maximum": exclusive_maximum, "multiple_of": multiple_of}
    if all(v is None for v in kw.values()):
        return _unbounded_number(nfa)
    return _build(nfa, [_INTEGERS, _FRACTIONS], kw, pointer)
