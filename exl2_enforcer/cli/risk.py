"""Schema risk analysis: the parts of a supported schema that make generation slow or unbounded.

:func:`analyse_schema` walks a schema (following ``$ref`` once per target) and returns
:class:`Risk` entries, each with the JSON pointer of the subschema, a kind, what was
found (measured on the given vocabulary where that means something) and a concrete fix:

``free_text``        string without maxLength, pattern, enforced format or enum
``unbounded_array``  array without maxItems
``recursion``        a ``$ref`` back into a schema that encloses it
``huge_enum``        more than :data:`HUGE_ENUM` values
``costly_pattern``   a pattern that adds more than :data:`PATTERN_STATES` NFA states
``costly_format``    email/hostname/uri: measured compile + first masks of the format alone
``deep_nesting``     objects/arrays nested more than :data:`DEEP_NESTING` levels
``any_value``        a subschema that allows any JSON value
``open_object``      an object that takes extra keys
``ignored_keyword``  an unsupported keyword that ``lenient`` ignores

The analysis is per subschema with shallow merging of ``allOf``/``anyOf`` siblings
(``then``/``else`` and ``dependentSchemas`` entries are alternatives next to their siblings);
a risk's pointer is where its subschema is written.  It assumes the schema compiles (run it
after :func:`~.grammar.compile_json_schema`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import referencing
import referencing.exceptions
import referencing.jsonschema

from exl2_enforcer import grammar

if TYPE_CHECKING:
    from referencing._core import Resolver  # referencing exports no public name for its Resolver type
from exl2_enforcer.compile.formats import SUPPORTED_FORMATS
from exl2_enforcer.compile.schema.compiler import TYPE_KEYWORDS, UNSUPPORTED, SchemaOptions
from exl2_enforcer.compile.schema.terms import ANNOTATIONS, JSON_VALUE_TYPES, child_pointer
from exl2_enforcer.engine.mask import TokenIndex
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

HUGE_ENUM = 100
PATTERN_STATES = 500
DEEP_NESTING = 6
COSTLY_FORMATS = ("email", "hostname", "uri")
#: a typical value per costly format, walked token by token to time its first masks
FORMAT_SAMPLES = {"email": "anna.martin@example.com", "hostname": "api.eu-west.example.com",
                  "uri": "https://example.com/docs/page?id=42"}
FORMAT_PROBE_MASKS = 8


@dataclass
class Risk:
    """One risky place in a schema: where, what kind, what was found, how to fix it."""

    pointer: str
    kind: str
    detail: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        """The risk as a JSON-ready dict (keys pointer, kind, detail, fix)."""
        return asdict(self)


def analyse_schema(schema: Any, vocab: TokenVocabulary, options: SchemaOptions | None = None) -> list[Risk]:
    """The risks of ``schema`` for ``vocab``, in document order, at most one per (pointer, kind)."""
    walker = _Walker(schema, vocab, options or SchemaOptions())
    height, deepest = walker.walk(schema, "", walker.root_resolver())
    if height > DEEP_NESTING:
        walker.add(deepest, "deep_nesting", f"objects/arrays nest {height} levels deep here (more than "
                   f"{DEEP_NESTING}): every level adds whitespace, keys and states the model must get right",
                   "flatten the schema: move inner objects up a level, or replace small sub-objects by enums "
                   "or bounded strings")
    seen: set[tuple[str, str]] = set()
    out = []
    for r in walker.risks:
        if (r.pointer, r.kind) not in seen:
            seen.add((r.pointer, r.kind))
            out.append(r)
    return out


def _pointer_map(doc: Any, pointer: str = "", out: dict[int, str] | None = None) -> dict[int, str]:
    """``id(subschema) -> pointer`` for every object in the document (to name ``$ref`` targets)."""
    out = {} if out is None else out
    if isinstance(doc, dict):
        out.setdefault(id(doc), pointer)
        for k, v in doc.items():
            _pointer_map(v, child_pointer(pointer, k), out)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            _pointer_map(v, child_pointer(pointer, i), out)
    return out


#: keywords whose subschemas are alternatives (walked one by one, never merged shallowly into a parent)
_BRANCHING = frozenset({"anyOf", "oneOf", "if", "then", "else", "dependentSchemas", "dependencies", "allOf"})


def _merge(base: dict, extra: dict) -> dict:
    """Shallow merge for analysis: ``extra`` wins, ``properties`` and ``required`` are joined."""
    out = dict(base)
    for k, v in extra.items():
        if k == "properties" and isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = {**out[k], **v}
        elif k == "required" and isinstance(out.get(k), list) and isinstance(v, list):
            out[k] = list(dict.fromkeys(out[k] + v))
        else:
            out[k] = v
    return out


class _Walker:
    """Walks one schema; ``walk`` returns (container nesting height, pointer of the deepest container)."""

    def __init__(self, schema: Any, vocab: TokenVocabulary, options: SchemaOptions) -> None:
        self.schema, self.vocab, self.options = schema, vocab, options
        self.draft7 = isinstance(schema, dict) and "draft-07" in str(schema.get("$schema", ""))
        self.pointers = _pointer_map(schema)
        self.risks: list[Risk] = []
        self.done: dict[int, tuple[int, str]] = {}  # ref target id -> walk result
        self.active: set[int] = set()  # ref targets being walked (a $ref to one is recursion)

    def root_resolver(self) -> Resolver[Any]:
        """A resolver for the document's ``$ref``s (the same registry layout as the compiler's)."""
        spec = referencing.jsonschema.DRAFT7 if self.draft7 else referencing.jsonschema.DRAFT202012
        resource = referencing.Resource.from_contents(self.schema, default_specification=spec)
        base = resource.id() or "urn:exl2-enforcer:root"
        return referencing.Registry().with_resource(base, resource).resolver(base_uri=base)

    def add(self, pointer: str, kind: str, detail: str, fix: str) -> None:
        """Record one risk."""
        self.risks.append(Risk(pointer, kind, detail, fix))

    # -- dispatch --------------------------------------------------------------------
    def walk(self, s: Any, ptr: str, res: "Resolver[Any]", in_branch: bool = False) -> tuple[int, str]:
        """Record the risks of subschema ``s`` at ``ptr`` and below."""
        if isinstance(s, dict) and self.options.lenient:
            self.ignored_keywords(s, ptr)
            s = {k: v for k, v in s.items() if k not in UNSUPPORTED}
        if isinstance(s, dict):
            # a subschema as written keeps its own place, also when reached through a merged parent
            # (a property of an object whose anyOf branches were merged with it is at /properties/x,
            # not /anyOf/0/properties/x)
            ptr = self.pointers.get(id(s), ptr)
        if not isinstance(s, dict) or not (s.keys() - ANNOTATIONS):
            # inside a combinator an annotation-only branch just means "the siblings' schema"
            if (s is True or isinstance(s, dict)) and not in_branch:
                self.any_value(ptr)
            return 0, ptr
        if "$ref" in s:
            return self.ref(s, ptr, res)
        if "allOf" in s:
            return self.all_of(s, ptr, res)
        if "if" in s and ("then" in s or "else" in s):
            # read as anyOf [if and then, not-if and else], as the compiler does: each side with its siblings
            rest = {k: v for k, v in s.items() if k not in ("if", "then", "else")}
            sides = [(key, _merge(rest, s[key]) if isinstance(s[key], dict) else rest)
                     for key in ("then", "else") if key in s]
            if "else" not in s:
                sides.append(("", rest))
            return max((self.walk(b, child_pointer(ptr, key) if key else ptr, res, True) for key, b in sides),
                       key=lambda r: r[0])
        deps = s.get("dependentSchemas") if not self.draft7 else s.get("dependencies")
        if isinstance(deps, dict) and any(isinstance(d, dict) for d in deps.values()):
            # each dependent schema applies next to its siblings when its trigger member is present
            key = "dependencies" if self.draft7 else "dependentSchemas"
            rest = {k: v for k, v in s.items() if k != key}
            sides = [(child_pointer(ptr, key, name), _merge(rest, d))
                     for name, d in deps.items() if isinstance(d, dict)]
            return max((self.walk(b, where, res, True) for where, b in [(ptr, rest), *sides]), key=lambda r: r[0])
        for key in ("anyOf", "oneOf"):
            if key in s:
                rest = {k: v for k, v in s.items() if k != key}
                branches = (_merge(rest, b) if isinstance(b, dict) else b for b in s[key])
                return max((self.walk(b, child_pointer(ptr, key, i), res, True) for i, b in enumerate(branches)),
                           key=lambda r: r[0], default=(0, ptr))
        if "enum" in s or "const" in s:
            self.enum(s, ptr)
            return 0, ptr
        types = self.types(s)
        if types is None:
            self.any_value(ptr)
            return 0, ptr
        best = (0, ptr)
        if "string" in types:
            self.string(s, ptr)
        if "object" in types:
            best = max(best, self.object(s, ptr, res), key=lambda r: r[0])
        if "array" in types:
            best = max(best, self.array(s, ptr, res), key=lambda r: r[0])
        return best

    def types(self, s: dict) -> set[str] | None:
        """The JSON types a combinator-free subschema allows (keywords imply them, as the compiler
        does); None when nothing constrains the type."""
        declared = s.get("type")
        if declared is not None:
            return {declared} if isinstance(declared, str) else set(declared)
        implied = {t for t, kws in TYPE_KEYWORDS.items() if kws & s.keys()}
        if not implied:
            return None
        return implied if self.options.strict_objects else set(JSON_VALUE_TYPES)

    def any_value(self, ptr: str) -> None:
        """Flag a subschema that allows any JSON value."""
        self.add(ptr, "any_value", "any JSON value (no type, keywords or enum): free-form objects, arrays and "
                 f"strings of any length, nested up to max_depth={self.options.max_depth}",
                 "give it a type with bounds: properties, an enum, or a string with maxLength")

    def ref(self, s: dict, ptr: str, res: "Resolver[Any]") -> tuple[int, str]:
        """Follow a ``$ref`` once per target; a target that encloses the reference is recursion."""
        try:
            resolved = res.lookup(s["$ref"])
        except referencing.exceptions.Unresolvable:
            return 0, ptr
        target = resolved.contents
        at_ref = child_pointer(ptr, "$ref")
        tptr = self.pointers.get(id(target), at_ref) if isinstance(target, dict) else at_ref
        siblings = {k: v for k, v in s.items() if k not in ANNOTATIONS and k != "$ref"}
        if id(target) in self.active:
            self.add(child_pointer(ptr, "$ref"), "recursion",
                     f"$ref {s['$ref']!r} points back to {tptr or '/'}, which encloses it: values nest up to "
                     f"max_depth={self.options.max_depth} levels and every level adds DFA states",
                     "write out the levels you need (a flatter schema), or lower the bound with --max-depth N")
            return 0, ptr
        if siblings and not self.draft7:
            return self.enter(_merge(target, siblings) if isinstance(target, dict) else target, target, tptr,
                              resolved.resolver, memo=False)
        return self.enter(target, target, tptr, resolved.resolver, memo=True)

    def enter(self, s: Any, target: Any, tptr: str, res: "Resolver[Any]", memo: bool) -> tuple[int, str]:
        """Walk a ``$ref`` target with the target marked active (memoised when unmerged)."""
        if memo and id(target) in self.done:
            return self.done[id(target)]
        self.active.add(id(target))
        try:
            got = self.walk(s, tptr, res)
        finally:
            self.active.discard(id(target))
        if memo:
            self.done[id(target)] = got
        return got

    def all_of(self, s: dict, ptr: str, res: "Resolver[Any]") -> tuple[int, str]:
        """Merge the plain branches into the parent; walk ``$ref`` branches on their own."""
        merged = {k: v for k, v in s.items() if k != "allOf"}
        best = (0, ptr)
        branching = []  # branches with their own combinators: a shallow merge would keep only the last one's
        for i, b in enumerate(s["allOf"]):
            if isinstance(b, dict) and "$ref" in b:
                best = max(best, self.walk(b, child_pointer(ptr, "allOf", i), res, True), key=lambda r: r[0])
            elif isinstance(b, dict) and b.keys() & _BRANCHING:
                branching.append((i, b))
            elif isinstance(b, dict):
                merged = _merge(merged, b)
        for i, b in branching:
            best = max(best, self.walk(_merge(merged, b), child_pointer(ptr, "allOf", i), res, True),
                       key=lambda r: r[0])
        if merged.keys() - ANNOTATIONS and not branching:
            best = max(best, self.walk(merged, ptr, res, True), key=lambda r: r[0])
        return best

    # -- per type --------------------------------------------------------------------
    def string(self, s: dict, ptr: str) -> None:
        """Free text, costly patterns and costly formats."""
        if "pattern" in s:
            states, base = pattern_states(s["pattern"], self.vocab)
            if states > PATTERN_STATES:
                self.add(child_pointer(ptr, "pattern"), "costly_pattern",
                         f"pattern {s['pattern']!r} adds {states:,} NFA states (a plain string needs {base})",
                         "avoid long counted repeats of wide classes such as .{0,100} (each repeat is a copy): "
                         "use a plain string with maxLength, or split the value into smaller fields")
        elif s.get("format") in SUPPORTED_FORMATS and getattr(self.options, "format_assertion", True):
            # an unknown format ('phone') is only an annotation (the compiler warns): free text below
            fmt = s["format"]
            if fmt in COSTLY_FORMATS:
                c_ms, m_ms, mx_ms, n = format_cost(fmt, self.vocab)
                self.add(child_pointer(ptr, "format"), "costly_format",
                         f"format {fmt!r}: a fresh grammar for this format alone took {c_ms:.1f} ms to compile "
                         f"and {m_ms:.1f} ms for its first {n} masks (slowest {mx_ms:.1f} ms); the first request "
                         "with a new schema pays this once per process",
                         f"keep it if the value must be a valid {fmt}; otherwise use a string with maxLength "
                         "and check the format after generation")
        elif "maxLength" not in s:
            idx = TokenIndex.for_vocabulary(self.vocab)
            plain, text = int(idx.slices["plain"].ids.size), int(idx.text_ids.size)
            self.add(ptr, "free_text",
                     f"free-text string (no maxLength, pattern, format or enum): inside it every one of the "
                     f"{plain:,} plain-content tokens of this vocabulary ({plain / max(text, 1):.0%} of its "
                     f"{text:,} text tokens) is allowed at each step, so only max_new_tokens stops the model",
                     "add maxLength (e.g. 200 for a sentence); use an enum when the values are known; for "
                     "reasoning keep one short thought field first (maxLength ~500) and bound the rest")

    def object(self, s: dict, ptr: str, res: "Resolver[Any]") -> tuple[int, str]:
        """Walk the properties; flag objects that take extra keys."""
        props = s.get("properties")
        extra = s.get("additionalProperties")
        best = (0, ptr)
        if isinstance(props, dict):
            for name, sub in props.items():
                best = max(best, self.walk(sub, child_pointer(ptr, "properties", name), res), key=lambda r: r[0])
        patterns = s.get("patternProperties")
        if isinstance(patterns, dict):
            for pat, sub in patterns.items():
                best = max(best, self.walk(sub, child_pointer(ptr, "patternProperties", pat), res),
                           key=lambda r: r[0])
        open_by_default = not isinstance(props, dict) or not self.options.strict_objects
        if extra is True or isinstance(extra, dict) or (extra is None and open_by_default):
            where = child_pointer(ptr, "additionalProperties") if extra is not None else ptr
            self.add(where, "open_object", "the object takes extra keys (free-text names) with "
                     + ("any values" if not isinstance(extra, dict) else "values of the given schema"),
                     "list the properties and leave additionalProperties out (objects with properties are "
                     "closed by default) or set it to false; use an array of {key, value} items with maxItems "
                     "for real maps")
            if isinstance(extra, dict) and extra.keys() - ANNOTATIONS:
                best = max(best, self.walk(extra, where, res), key=lambda r: r[0])
        return best[0] + 1, best[1] if best[0] else ptr

    def array(self, s: dict, ptr: str, res: "Resolver[Any]") -> tuple[int, str]:
        """Walk the item schemas; flag arrays without maxItems."""
        best = (0, ptr)
        items = s.get("items")
        prefix = s.get("prefixItems") if not self.draft7 else (items if isinstance(items, list) else None)
        tail = s.get("additionalItems") if self.draft7 and isinstance(items, list) else items
        for i, sub in enumerate(prefix or []):
            key = "prefixItems" if not self.draft7 else "items"
            best = max(best, self.walk(sub, child_pointer(ptr, key, i), res), key=lambda r: r[0])
        if tail is not False:
            tail_key = "additionalItems" if self.draft7 and isinstance(items, list) else "items"
            best = max(best, self.walk(True if tail is None else tail, child_pointer(ptr, tail_key), res),
                       key=lambda r: r[0])
            if "maxItems" not in s:
                self.add(ptr, "unbounded_array", "array without maxItems: the model decides how many items "
                         "there are, and a model stuck in a repetition loop never closes the array",
                         "add maxItems (the largest count you expect, e.g. 10)")
        return best[0] + 1, best[1] if best[0] else ptr

    def enum(self, s: dict, ptr: str) -> None:
        """Flag enums with more than HUGE_ENUM values."""
        values = s.get("enum")
        if isinstance(values, list) and len(values) > HUGE_ENUM:
            size = sum(len(json.dumps(v, ensure_ascii=False).encode()) for v in values)
            self.add(child_pointer(ptr, "enum"), "huge_enum",
                     f"enum of {len(values):,} values ({size:,} bytes of JSON): compile time and automaton "
                     "size grow with them",
                     "split by a discriminator (anyOf of smaller enums), or accept a string with maxLength "
                     "and look the value up after generation")

    def ignored_keywords(self, s: dict, ptr: str) -> None:
        """Under ``lenient``, unsupported keywords are dropped: outputs may not validate."""
        for key, value in s.items():
            if key in UNSUPPORTED or (key == "uniqueItems" and value is True and s.get("maxItems", 2) > 1):
                self.add(child_pointer(ptr, key), "ignored_keyword",
                         f"keyword {key!r} is not supported and --lenient ignores it: outputs may not validate",
                         "rewrite the schema without it, or validate the output after generation")


_PATTERNS: dict[tuple[str, str], tuple[int, int]] = {}
_FORMATS: dict[tuple[str, str], tuple[float, float, float, int]] = {}


def pattern_states(pattern: str, vocab: TokenVocabulary) -> tuple[int, int]:
    """NFA states of ``{"type": "string", "pattern": pattern}`` alone, and of a plain string."""
    key = (vocab.fingerprint, pattern)
    if key not in _PATTERNS:
        try:
            states = len(grammar.compile_json_schema({"type": "string", "pattern": pattern}, vocab).automaton.nfa)
        except ValueError:  # an unsupported pattern is the compiler's error to report, not a risk
            states = 0
        base = len(grammar.compile_json_schema({"type": "string"}, vocab).automaton.nfa)
        _PATTERNS[key] = (states, base)
    return _PATTERNS[key]


def format_cost(fmt: str, vocab: TokenVocabulary) -> tuple[float, float, float, int]:
    """Cold cost of a format alone: (compile ms, first masks ms, slowest mask ms, masks).

    A one-off ``$comment`` makes the grammar cache miss, so the compile and the masks are
    cold; the probe grammar is dropped from the cache afterwards.
    """
    key = (vocab.fingerprint, fmt)
    if key in _FORMATS:
        return _FORMATS[key]
    schema = {"$comment": f"exl2-enforcer risk probe {uuid.uuid4()}", "type": "string", "format": fmt}
    t0 = time.perf_counter()
    g = grammar.compile_json_schema(schema, vocab)
    compile_ms = (time.perf_counter() - t0) * 1000
    try:
        times = _probe_masks(g, json.dumps(FORMAT_SAMPLES[fmt]).encode(), vocab)
    finally:
        grammar.GRAMMAR_CACHE.discard(g)
    _FORMATS[key] = (compile_ms, sum(times), max(times), len(times))
    return _FORMATS[key]


def _probe_masks(g: grammar.CompiledGrammar, data: bytes, vocab: TokenVocabulary) -> list[float]:
    """Milliseconds of the first masks while writing ``data`` greedily with the longest allowed tokens."""
    table = _byte_table(vocab)
    width = g.index.n_bits
    out = np.zeros(g.index.n_words, np.int32)
    m = Matcher(g)
    pos, times = 0, []
    for _ in range(FORMAT_PROBE_MASKS):
        t0 = time.perf_counter()
        m.fill_bitmask(out, width)
        times.append((time.perf_counter() - t0) * 1000)
        tok = next((t for n in range(min(len(data) - pos, 32), 0, -1)
                    if (t := table.get(data[pos:pos + n])) is not None and m.next_state(t) >= 0), None)
        if tok is None:
            break
        m.accept_token(tok)
        pos += len(vocab.token_bytes[tok] or b"")
    return times


_TABLES: dict[str, dict[bytes, int]] = {}


def _byte_table(vocab: TokenVocabulary) -> dict[bytes, int]:
    """``bytes -> token id`` for the vocabulary's text tokens (first id wins)."""
    table = _TABLES.get(vocab.fingerprint)
    if table is None:
        table = {}
        for i, b in enumerate(vocab.token_bytes):
            if b:
                table.setdefault(b, i)
        _TABLES[vocab.fingerprint] = table
    return table
