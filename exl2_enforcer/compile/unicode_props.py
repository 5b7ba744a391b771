"""Unicode general categories as code point sets, for ``\\p{...}``/``\\P{...}`` in patterns.

Built from :mod:`unicodedata` (the Unicode version of the running Python) on first use of each
category and cached.  Only general categories are known (``L``, ``Lu``, ``Letter``,
``General_Category=Nd``, ``gc=P``); scripts and binary properties raise :class:`KeyError`.
"""

from __future__ import annotations

import functools
import sys
import unicodedata

from exl2_enforcer.compile.charset import CodePointSet

#: long names of the general categories (ECMA-262 table "Value aliases")
_LONG = {
    "Letter": "L", "Cased_Letter": "LC", "Uppercase_Letter": "Lu", "Lowercase_Letter": "Ll",
    "Titlecase_Letter": "Lt", "Modifier_Letter": "Lm", "Other_Letter": "Lo", "Mark": "M",
    "Combining_Mark": "M", "Nonspacing_Mark": "Mn", "Spacing_Mark": "Mc", "Enclosing_Mark": "Me",
    "Number": "N", "Decimal_Number": "Nd", "digit": "Nd", "Letter_Number": "Nl", "Other_Number": "No",
    "Punctuation": "P", "punct": "P", "Connector_Punctuation": "Pc", "Dash_Punctuation": "Pd",
    "Open_Punctuation": "Ps", "Close_Punctuation": "Pe", "Initial_Punctuation": "Pi",
    "Final_Punctuation": "Pf", "Other_Punctuation": "Po", "Symbol": "S", "Math_Symbol": "Sm",
    "Currency_Symbol": "Sc", "Modifier_Symbol": "Sk", "Other_Symbol": "So", "Separator": "Z",
    "Space_Separator": "Zs", "Line_Separator": "Zl", "Paragraph_Separator": "Zp", "Other": "C",
    "Control": "Cc", "cntrl": "Cc", "Format": "Cf", "Surrogate": "Cs", "Private_Use": "Co",
    "Unassigned": "Cn",
}


@functools.cache
def _by_category() -> dict[str, list[tuple[int, int]]]:
    ranges: dict[str, list[tuple[int, int]]] = {}
    prev, start = None, 0
    for cp in range(sys.maxunicode + 2):
        cat = unicodedata.category(chr(cp)) if cp <= sys.maxunicode else None
        if cat != prev:
            if prev is not None:
                ranges.setdefault(prev, []).append((start, cp - 1))
            prev, start = cat, cp
    return ranges


@functools.lru_cache(maxsize=128)
def general_category(name: str) -> CodePointSet:
    """The code points of general category ``name`` (short or long alias, optionally prefixed
    ``General_Category=``/``gc=``), sorted disjoint ranges.  Raises :class:`KeyError` otherwise."""
    value = name.split("=", 1)[1] if name.startswith(("General_Category=", "gc=")) else name
    short = _LONG.get(value, value)
    table = _by_category()
    if short == "LC":
        cats = ["Lu", "Ll", "Lt"]
    elif len(short) == 1 and short in "LMNPSZC":
        cats = [c for c in table if c[0] == short]
    elif len(short) == 2 and (short in table or short == "Cn"):
        cats = [short]
    else:
        raise KeyError(name)
    return tuple(sorted(r for c in cats for r in table.get(c, [])))
