"""JSON Schema (draft 2020-12, draft 7 spellings) to a byte NFA.

:func:`compile_schema` validates the schema against its meta-schema, resolves
``$ref`` with the ``referencing`` library, and emits one NFA fragment per
subschema.  Scalars live here; objects and arrays in :mod:`.schema_struct`;
``allOf`` merging and ``oneOf`` disjointness in :mod:`.schema_merge`.

Language choices (documented in docs/schema-support.md):

* objects are closed by default (``strict_objects``): extra keys only when the
  schema allows them explicitly; properties appear in schema order;
* whitespace between JSON tokens is bounded (``max_whitespace`` bytes per run,
  0 = compact); none before the value and none after it;
* enum/const strings and property names are written in their canonical JSON
  form (``escapes="canonical"``) unless ``escapes="all"`` asks for every
  escape spelling; free-text strings always accept every escape.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

from exl2_enforcer.compile.charset import ANY_CP, json_char_fragment, literal_trie_fragment
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.terms import (
    ANNOTATIONS,
    ESCAPES,
    JSON_TYPES,
    PROPERTY_ORDERS,
    Escapes,
    PropertyOrder,
    child_pointer,
)
from exl2_enforcer.errors import EnforcerError, SchemaError

#: standard keywords this compiler does not implement: an error unless lenient
UNSUPPORTED = frozenset({
    "not", "if", "then", "else", "contains", "minContains", "maxContains", "unevaluatedProperties",
    "unevaluatedItems", "dependentRequired", "dependentSchemas", "dependencies", "propertyNames",
    "$dynamicRef", "$recursiveRef", "$recursiveAnchor", "patternProperties",
})

TYPE_KEYWORDS = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties"},
    "array": {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"},
}
TYPE_KEYWORDS["integer"] = TYPE_KEYWORDS["number"]
#: what "any value" means per container type: open, whatever strict_objects says
FREE_FORM = {"object": {"additionalProperties": True}, "array": {"items": True}}


@dataclass(frozen=True)
class SchemaOptions:
    """How a schema becomes a language; every field is part of the grammar cache key.

    * ``strict_objects`` -- True: an object schema that names ``properties`` takes
      only those unless ``additionalProperties`` allows more (what function
      calling wants); a free-form object schema without ``properties`` stays
      open.  False: follow the spec default (extra keys allowed everywhere).
    * ``max_whitespace`` -- the longest run of JSON whitespace between tokens
      (0 = compact output).
    * ``max_depth`` -- the deepest nesting of objects and arrays a value may have
      (``[[1]]`` nests 2 levels); it bounds recursive ``$ref`` and free-form values,
      and a schema whose every value nests deeper is refused.
    * ``escapes`` -- "canonical" or "all" spellings for enum/const strings and keys.
    * ``lenient`` -- unsupported keywords become warnings instead of errors
      (the language then ignores them, so outputs may not validate).
    * ``integral_fractions`` -- integers may be written ``1.0`` (spec-valid; off by
      default because a model should not be invited to write them).
    * ``format_assertion`` -- True: ``format`` constrains strings (an unknown
      format is an error); False: ``format`` is an annotation, as draft 2020-12
      says by default.
    * ``property_order`` -- "schema": members in the order the schema lists them
      (fewest states, what a model should write); "any": any order, each
      declared member at most once (exact, via lazily built heads that track
      the set of names written).
    * ``max_schema_depth`` -- deepest nesting of JSON objects/arrays allowed in
      the schema document (the root is depth 1); a deeper schema raises
      :class:`SchemaError` naming the first pointer past the limit.  Deep schemas
      compile on a helper thread with a large stack (see :func:`call_with_depth`).
    * ``compile_timeout_s`` -- seconds (``time.perf_counter``) one schema may take
      to compile to its NFA; past it :class:`SchemaError` names the pointer being
      compiled.
    * ``max_nfa_states`` -- the same budget as a deterministic work count: NFA
      states the compile may create (each costs about 150 bytes).
    """

    strict_objects: bool = True
    max_whitespace: int = 20
    max_depth: int = 16
    escapes: Escapes = "canonical"
    lenient: bool = False
    integral_fractions: bool = False
    property_order: PropertyOrder = "schema"
    format_assertion: bool = True
    max_schema_depth: int = 256
    compile_timeout_s: float = 10.0
    max_nfa_states: int = 2_000_000

    def __post_init__(self) -> None:
        if self.max_schema_depth < 1:
            raise EnforcerError(f"max_schema_depth must be >= 1, got {self.max_schema_depth}")
        if not self.compile_timeout_s > 0:
            raise EnforcerError(f"compile_timeout_s must be > 0 seconds, got {self.compile_timeout_s}")
        if self.max_nfa_states < 1:
            raise EnforcerError(f"max_nfa_states must be >= 1, got {self.max_nfa_states}")
        if self.max_whitespace < 0:
            raise EnforcerError(f"max_whitespace must be >= 0, got {self.max_whitespace}")
        if self.max_depth < 1:
            raise EnforcerError(f"max_depth must be >= 1, got {self.max_depth}")
        if self.property_order not in PROPERTY_ORDERS:
            raise EnforcerError(f"property_order must be 'schema' or 'any', got {self.property_order!r}")
        if self.escapes not in ESCAPES:
            raise EnforcerError(f"escapes must be 'canonical' or 'all', got {self.escapes!r}")


@dataclass
class Ctx:
    """Where a subschema sits: its JSON pointer and the resolver for its ``$ref``s."""

    pointer: str
    resolver: referencing.Resolver
    draft7: bool = False

    def child(self, *parts: Any) -> "Ctx":
        """The context of a subschema below this one."""
        return Ctx(child_pointer(self.pointer, *parts), self.resolver, self.draft7)


@dataclass
class SchemaCompiler:
    """Emits NFA fragments for subschemas; one instance per compiled schema."""

    options: SchemaOptions
    nfa: NFA = field(default_factory=NFA)
    warnings: list[str] = field(default_factory=list)
    #: seconds, monotonic; injectable so the compile budget can be tested without waiting
    clock: Callable[[], float] = time.perf_counter
    #: the JSON pointer of the subschema being compiled (named when the budget runs out)
    pointer: str = ""
    _ref_machines: dict[tuple[int, str], Frag] = field(default_factory=dict)
    _shared: dict[str, Frag] = field(default_factory=dict)
    _containers: dict[tuple, Frag] = field(default_factory=dict)
    #: allOf schemas being merged, innermost last: (id of the schema, its pointer)
    merging: list[tuple[int, str]] = field(default_factory=list)
    #: allOf schemas being compiled after their merge, innermost last
    compiling_all_of: list[tuple[int, str]] = field(default_factory=list)
    _started: float | None = None

    # -- compile budget --------------------------------------------------------------
    def tick(self, pointer: str | None = None) -> None:
        """Raise :class:`SchemaError` once the compile passes its time or NFA-state budget.

        Called at every subschema and inside long loops (enum values, oneOf
        pairs), so an explosive schema stops within one step of its limit.
        """
        if pointer is not None:
            self.pointer = pointer
        now = self.clock()
        if self._started is None:
            self._started = now
        opts = self.options
        if len(self.nfa) > opts.max_nfa_states:
            raise SchemaError(f"compile budget exceeded: more than max_nfa_states={opts.max_nfa_states} NFA states"
                              " (SchemaOptions.max_nfa_states) while compiling", self.pointer)
        if now - self._started > opts.compile_timeout_s:
            raise SchemaError(f"compile budget exceeded: more than compile_timeout_s={opts.compile_timeout_s:g} s"
                              " (SchemaOptions.compile_timeout_s) while compiling", self.pointer)

    # -- shared pieces -------------------------------------------------------------
    def shared(self, key: str, build: Callable[[], Frag]) -> Frag:
        """A sub-machine built once and called from many places (weight 0)."""
        frag = self._shared.get(key)
        if frag is None:
            frag = build()
            self._shared[key] = frag
        return frag

    def ws(self) -> Frag:
        """Optional JSON whitespace, at most ``max_whitespace`` bytes."""
        if self.options.max_whitespace == 0:
            return self.nfa.empty()
        body = self.shared("ws", lambda: self.nfa.byte_ranges([(0x09, 0x0A), (0x0D, 0x0D), (0x20, 0x20)]))
        return self.nfa.loop(body, 0, self.options.max_whitespace, slice_kind="ws")

    def punct(self, ch: bytes) -> Frag:
        """A structural character surrounded by optional whitespace."""
        return self.nfa.seq([self.ws(), self.nfa.literal(ch), self.ws()])

    def string_literal(self, text: str) -> Frag:
        """A JSON string whose decoded value is exactly ``text`` (quotes included)."""
        nfa = self.nfa
        if self.options.escapes == "canonical":
            return nfa.literal(json.dumps(text, ensure_ascii=False).encode())
        return nfa.seq([nfa.literal(b'"'), *(self.char_literal(ch) for ch in text), nfa.literal(b'"')])

    def char_literal(self, ch: str) -> Frag:
        """One character inside a JSON string, spelled as ``escapes`` allows."""
        if self.options.escapes == "canonical":
            return self.nfa.literal(json.dumps(ch, ensure_ascii=False).encode()[1:-1])
        return json_char_fragment(self.nfa, ((ord(ch), ord(ch)),))

    def validator(self, schema: Any, ctx: Ctx) -> jsonschema.protocols.Validator:
        """A jsonschema validator for a subschema, resolving its ``$ref``s where it sits."""
        cls = jsonschema.Draft7Validator if ctx.draft7 else jsonschema.Draft202012Validator
        return cls(schema, _resolver=ctx.resolver)

    # -- dispatch -------------------------------------------------------------------
    def compile(self, schema: Any, ctx: Ctx) -> Frag:
        """A fragment matching the JSON text of every instance of ``schema``."""

        self.tick(ctx.pointer)
        if schema is True:
            return self.any_value(ctx)
        if schema is False:
            return self.nfa.nothing()
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be an object or a boolean", ctx.pointer)
        self.check_keywords(schema, ctx)
        if not (schema.keys() - ANNOTATIONS):
            return self.any_value(ctx)
        if "$ref" in schema:
            return self.compile_ref_schema(schema, ctx)
        if "allOf" in schema:
            return self.compile_all_of(schema, ctx)
        if "anyOf" in schema or "oneOf" in schema:
            return self.compile_alternatives(schema, ctx)
        if "enum" in schema or "const" in schema:
            return self.compile_values(schema, ctx)
        types = self.types_of(schema, ctx)
        if not types:
            raise SchemaError("the schema admits no value (no type is possible)", ctx.pointer)
        return self.nfa.alt([self.compile_type(t, schema, ctx) for t in types])

    def check_keywords(self, schema: dict, ctx: Ctx) -> None:
        """Raise (or warn, when lenient) on standard keywords that are not implemented."""
        for key, value in schema.items():
            if key in UNSUPPORTED or (key == "uniqueItems" and value is True and schema.get("maxItems", 2) > 1):
                msg = f"keyword {key!r} is not supported"
                if not self.options.lenient:
                    raise SchemaError(msg, ctx.child(key).pointer, keyword=key)
                self.warnings.append(f"{msg} at {ctx.child(key).pointer or '/'}; ignored")
                warnings.warn(self.warnings[-1], stacklevel=3)
            if key == "items" and isinstance(value, list) and not ctx.draft7:
                raise SchemaError("array-form 'items' is draft 7; use prefixItems in 2020-12",
                                  ctx.child(key).pointer, keyword=key)

    def types_of(self, schema: dict, ctx: Ctx) -> list[str]:
        """The JSON types this (enum/combinator-free) schema may produce."""
        declared = schema.get("type")
        if declared is None:
            types = list(JSON_TYPES)
            if self.options.strict_objects:
                implied = [t for t, kws in TYPE_KEYWORDS.items() if kws & schema.keys()]
                if implied:
                    types = implied
        else:
            types = [declared] if isinstance(declared, str) else list(declared)
        if "integer" in types and "number" in types:
            types.remove("integer")  # number already holds every integer
        return types

    def compile_type(self, t: str, schema: dict, ctx: Ctx) -> Frag:
        """The fragment for one JSON type under the keywords that apply to it."""
        from exl2_enforcer.compile.schema.containers import compile_array, compile_object

        nfa = self.nfa
        if t == "null":
            return nfa.literal(b"null")
        if t == "boolean":
            return nfa.alt([nfa.literal(b"true"), nfa.literal(b"false")])
        if t in ("integer", "number"):
            return self.compile_number(t, schema, ctx)
        if t == "string":
            return self.compile_string(schema, ctx)
        if t == "object":
            return self.container(t, schema, ctx, compile_object)
        if t == "array":
            return self.container(t, schema, ctx, compile_array)
        raise SchemaError(f"unknown type {t!r}", ctx.child("type").pointer, keyword="type")

    # -- scalars --------------------------------------------------------------------
    def compile_number(self, t: str, schema: dict, ctx: Ctx) -> Frag:
        """Integers and numbers with exact (integers) or sound (numbers) bounds."""
        from exl2_enforcer.compile.numbers import integer_fragment, number_fragment

        kw = {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
              if k in schema}
        named = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
                 "exclusiveMaximum": "exclusive_maximum", "multipleOf": "multiple_of"}
        args = {named[k]: v for k, v in kw.items()}
        fractions = self.options.integral_fractions
        # bounds keyed by repr, so 1 and 1.0 (and True) never share an entry by accident
        key = (t, repr(fractions), repr(sorted((k, repr(v), type(v).__name__) for k, v in args.items())))
        try:
            if t == "integer":
                return _template(self.nfa, key, lambda n: integer_fragment(n, allow_integral_fraction=fractions,
                                                                           **args))
            return _template(self.nfa, key, lambda n: number_fragment(n, **args))
        except SchemaError as e:
            raise SchemaError(e.message, ctx.pointer, keyword=e.keyword) from None

    def compile_string(self, schema: dict, ctx: Ctx) -> Frag:
        """A JSON string under minLength/maxLength, pattern and format."""
        from exl2_enforcer.compile.formats import format_fragment
        from exl2_enforcer.compile.regex import compile_regex

        nfa = self.nfa
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise SchemaError(f"maxLength {hi} < minLength {lo}: the string admits no value", ctx.pointer)
        if not self.options.format_assertion:
            schema = {k: v for k, v in schema.items() if k != "format"}
        constraints = [k for k in ("pattern", "format") if k in schema]
        if lo > 0 or hi is not None:
            constraints += ["minLength/maxLength"]
        if len(constraints) > 1:
            raise SchemaError(f"combining {' and '.join(constraints)} on one string is not supported yet",
                              ctx.pointer, keyword=constraints[0])
        if "pattern" in schema:
            try:
                body = _template(nfa, ("pattern", schema["pattern"]),
                                 lambda t: compile_regex(t, schema["pattern"], mode="json", search=True))
            except EnforcerError as e:
                raise SchemaError(str(e), ctx.child("pattern").pointer, keyword="pattern") from None
        elif "format" in schema:
            try:
                body = _template(nfa, ("format", schema["format"]), lambda t: format_fragment(t, schema["format"]))
            except (KeyError, ValueError) as e:
                if not self.options.lenient:
                    raise SchemaError(f"format {schema['format']!r} is not supported ({e})",
                                      ctx.child("format").pointer, keyword="format") from None
                self.warnings.append(f"format {schema['format']!r} at {ctx.pointer or '/'} ignored")
                body = self.plain_string_body(0, None)
        else:
            body = self.plain_string_body(lo, hi)
        return nfa.seq([nfa.literal(b'"'), body, nfa.literal(b'"')])

    def plain_string_body(self, lo: int, hi: int | None) -> Frag:
        """Between ``lo`` and ``hi`` characters of any JSON string content."""
        char = self.shared("char", lambda: json_char_fragment(self.nfa, ANY_CP))
        return self.nfa.loop(char, lo, hi, slice_kind="plain")

    # -- enum / const ----------------------------------------------------------------
    def compile_values(self, schema: dict, ctx: Ctx) -> Frag:
        """``enum``/``const``: the listed values that also satisfy the sibling keywords.

        Linear in the number of values: duplicates are found by :func:`json_key`,
        and every value with one fixed spelling (strings, ``true``, ``false``,
        ``null``) goes into one minimal acyclic automaton.
        """
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        if "enum" in schema and "const" in schema:
            const = json_key(schema["const"])
            values = [v for v in schema["enum"] if json_key(v) == const]
        check = self.validator(rest, ctx) if rest else None
        kept = []
        for i, v in enumerate(dedupe_json(values)):
            if i % 1024 == 1023:
                self.tick()
            if check is None or check.is_valid(v):
                kept.append(v)
        if not kept:
            raise SchemaError("enum/const admits no value (none satisfies the other keywords)", ctx.pointer)
        try:
            fixed = [self.fixed_spelling(v) for v in kept]
        except UnicodeEncodeError:
            raise SchemaError("an enum/const string holds a lone surrogate (U+D800..U+DFFF), which no UTF-8"
                              " output can spell", ctx.pointer) from None
        frags = [self.value_literal(v) for v, b in zip(kept, fixed) if b is None]
        spelled = [b for b in fixed if b is not None]
        if spelled:
            frags.append(literal_trie_fragment(self.nfa, spelled))
        self.tick()
        return frags[0] if len(frags) == 1 else self.nfa.alt(frags)

    def fixed_spelling(self, value: Any) -> bytes | None:
        """The only bytes that spell ``value``, or None when it has several spellings."""
        if value is None or isinstance(value, bool):
            return json.dumps(value).encode()
        if isinstance(value, str) and self.options.escapes == "canonical":
            return encode_basestring(value).encode()  # what json.dumps(value, ensure_ascii=False) writes
        return None

    def value_literal(self, value: Any) -> Frag:
        """A fragment for one JSON value written with bounded whitespace."""
        nfa = self.nfa
        if isinstance(value, str):
            return self.string_literal(value)
        if isinstance(value, dict):
            members = [nfa.seq([self.string_literal(k), self.punct(b":"), self.value_literal(v)])
                       for k, v in value.items()]
            if self.options.property_order == "any" and len(members) > 1:
                return self.nest(self._any_order_literal(members))
            return self.nest(self._container(b"{", members, b"}"))
        if isinstance(value, list):
            return self.nest(self._container(b"[", [self.value_literal(v) for v in value], b"]"))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # a number equals its value in every decimal spelling (1 == 1.0 in JSON Schema)
            from exl2_enforcer.compile.numbers import number_fragment

            return number_fragment(nfa, minimum=value, maximum=value)
        return nfa.literal(json.dumps(value).encode())

    def _any_order_literal(self, members: list[Frag]) -> Frag:
        """An object literal whose members may come in any order."""
        nfa = self.nfa
        items = [(nfa.seq([m, self.ws()]), True) for m in members]
        comma = nfa.seq([nfa.literal(b","), self.ws()])
        body = nfa.any_order(items, None, comma, len(members), len(members))
        return nfa.seq([nfa.literal(b"{"), self.ws(), body, nfa.literal(b"}")])

    def _container(self, open_: bytes, members: list[Frag], close: bytes) -> Frag:
        """``open ws m1 ws , ws m2 ws close``: one whitespace run between any two tokens."""
        nfa = self.nfa
        parts = [nfa.literal(open_), self.ws()]
        for i, m in enumerate(members):
            if i:
                parts += [nfa.literal(b","), self.ws()]
            parts += [m, self.ws()]
        return nfa.seq(parts + [nfa.literal(close)])

    def compile_all_of(self, schema: dict, ctx: Ctx) -> Frag:
        """``allOf``, merged into one schema; refuses an ``allOf`` that merges back into itself."""
        from exl2_enforcer.compile.schema.merge import merge_all_of

        active = [ptr for key, ptr in self.compiling_all_of if key == id(schema)]
        if active:
            raise SchemaError("allOf reaches itself through $ref without entering an object or array"
                              " (recursion that consumes no input)", active[0], keyword="allOf")
        self.compiling_all_of.append((id(schema), ctx.pointer))
        try:
            return self.compile(merge_all_of(schema, ctx, self), ctx)
        finally:
            self.compiling_all_of.pop()

    # -- nesting ---------------------------------------------------------------------
    def container(self, t: str, schema: dict, ctx: Ctx, build: Callable[..., Frag]) -> Frag:
        """An object or array of ``schema``: one nesting level, compiled once per distinct subschema.

        Identical subschemas (same text, same base URI) share one machine, so an
        ``anyOf`` whose branches repeat a subschema does not copy it per branch
        and the automaton's shared stacks can merge their ambiguity.
        """
        key = (t, json.dumps(schema, default=repr), base_uri(ctx.resolver), ctx.draft7)
        machine = self._containers.get(key)
        if machine is None:
            machine = self._containers[key] = build(self, schema, ctx)
        return self.nfa.call(machine, weight=1)

    def nest(self, frag: Frag) -> Frag:
        """Run ``frag`` (an object or array literal) as one nesting level for ``max_depth``."""
        return self.nfa.call(frag, weight=1)

    # -- combinators and references ---------------------------------------------------
    def compile_alternatives(self, schema: dict, ctx: Ctx) -> Frag:
        """anyOf, and oneOf when its branches are provably disjoint."""
        from exl2_enforcer.compile.schema.merge import check_disjoint, merge_pair

        key = "anyOf" if "anyOf" in schema else "oneOf"
        branches = schema[key]
        # annotations ($defs, title, ...) constrain nothing and must not travel into branches
        rest = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS}
        if key == "anyOf" and "oneOf" in rest:
            raise SchemaError("anyOf together with oneOf is not supported", ctx.pointer, keyword="oneOf")
        merged = []
        for i, b in enumerate(branches):
            bctx = ctx.child(key, i)
            merged.append((merge_pair(rest, b, bctx, self) if rest else b, bctx))
        if key == "oneOf":
            check_disjoint([m for m, _ in merged], [c for _, c in merged], self)
        return self.nfa.alt([self.compile(m, c) for m, c in merged])

    def compile_ref_schema(self, schema: dict, ctx: Ctx) -> Frag:
        """``$ref``: a call into the target's shared machine (siblings merged in)."""
        from exl2_enforcer.compile.schema.merge import expand_ref

        siblings = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "$ref"}
        if siblings and not ctx.draft7:
            return self.compile(expand_ref(schema, ctx, self), ctx)
        target, tctx = self.resolve(schema["$ref"], ctx)
        return self.nfa.call(self.ref_machine(target, tctx), weight=0)

    def resolve(self, ref: str, ctx: Ctx) -> tuple[Any, Ctx]:
        """Look ``ref`` up relative to ``ctx``; returns the target and its context."""
        try:
            resolved = ctx.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise SchemaError(f"cannot resolve $ref {ref!r} ({type(e).__name__})",
                              ctx.child("$ref").pointer, keyword="$ref") from None
        frag = ref.partition("#")[2]
        # a JSON pointer names the target; an anchor, "#" or a URI is named by the ref itself
        # (never by the path that led here: that would grow without end through recursion)
        return resolved.contents, Ctx(frag if frag.startswith("/") else f"/$ref:{ref}",
                                      resolved.resolver, ctx.draft7)

    def ref_machine(self, target: Any, tctx: Ctx) -> Frag:
        """The callee fragment for a ``$ref`` target, compiled once (recursion-safe)."""
        key = (id(target), base_uri(tctx.resolver))
        frag = self._ref_machines.get(key)
        if frag is None:
            frag = Frag(self.nfa.state(), self.nfa.state())
            self._ref_machines[key] = frag
            self.nfa.machine_names[frag.start] = tctx.pointer
            body = self.compile(target, tctx)
            self.nfa.epsilon(frag.start, body.start)
            self.nfa.epsilon(body.end, frag.end)
        return frag

    def any_value(self, ctx: Ctx) -> Frag:
        """Any JSON value (recursive through a shared machine, depth-bounded)."""
        def build() -> Frag:
            frag = Frag(self.nfa.state(), self.nfa.state())
            self._shared["any"] = frag
            body = self.nfa.alt([self.compile_type(t, FREE_FORM.get(t, {}), ctx) for t in JSON_TYPES if t != "integer"])
            self.nfa.epsilon(frag.start, body.start)
            self.nfa.epsilon(body.end, frag.end)
            return frag

        machine = self._shared.get("any") or build()
        return self.nfa.call(machine, weight=0)


_TEMPLATES: "OrderedDict[tuple[str, ...], tuple[NFA, Frag]]" = OrderedDict()
_TEMPLATES_LOCK = threading.Lock()


def _template(nfa: NFA, key: tuple[str, ...], build: Callable[[NFA], Frag]) -> Frag:
    """Build a call-free fragment once per key (LRU of 256) and splice copies into ``nfa``."""
    with _TEMPLATES_LOCK:
        got = _TEMPLATES.get(key)
        if got is not None:
            _TEMPLATES.move_to_end(key)
    if got is None:
        tmpl = NFA()
        got = (tmpl, build(tmpl))
        with _TEMPLATES_LOCK:
            _TEMPLATES[key] = got
            while len(_TEMPLATES) > 256:
                _TEMPLATES.popitem(last=False)
    return nfa.splice(*got)


def base_uri(resolver: referencing.Resolver) -> str:
    """The base URI a resolver resolves relative references against."""
    return str(getattr(resolver, "_base_uri", ""))


def json_key(value: Any) -> Hashable:
    """A hashable key that is equal for two JSON values exactly when JSON Schema calls them equal.

    Numbers compare by value (``1 == 1.0``, an integral float keys as its int),
    booleans are not numbers (``true != 1``), object key order is irrelevant,
    array order matters.  Raises :class:`SchemaError` for a value that is not
    JSON (a set, bytes, ...).
    """
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("num", value)
    if isinstance(value, float):
        return ("num", int(value) if value.is_integer() else value)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return ("arr", tuple(json_key(v) for v in value))
    if isinstance(value, dict):
        return ("obj", frozenset((k, json_key(v)) for k, v in value.items()))
    raise SchemaError(f"{type(value).__name__} is not a JSON value")


def json_equal(a: Any, b: Any) -> bool:
    """JSON Schema equality (1 == 1.0, true != 1, key order ignored), as ``const`` defines it."""
    return json_key(a) == json_key(b)


def dedupe_json(values: list[Any]) -> list[Any]:
    """``values`` without later duplicates under :func:`json_equal`, order kept; linear time."""
    seen: set[Hashable] = set()
    out: list[Any] = []
    for v in values:
        k = json_key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def check_schema_depth(schema: Any, limit: int) -> int:
    """How deep objects/arrays nest in ``schema`` (the root is depth 1; a scalar is 0).

    Iterative, so it is safe on any input.  Raises :class:`SchemaError` naming
    the JSON pointer of the first value past ``limit``.
    """
    stack: list[tuple[Any, str, int]] = [(schema, "", 1)]
    deepest = 0
    while stack:
        value, pointer, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > limit:
            raise SchemaError(f"the schema nests deeper than max_schema_depth={limit} objects/arrays"
                              " (SchemaOptions.max_schema_depth)", pointer)
        deepest = max(deepest, depth)
        for k, v in children:
            if isinstance(v, (dict, list)):
                stack.append((v, pointer + "/" + str(k).replace("~", "~0").replace("/", "~1"), depth + 1))
    return deepest


#: schemas nesting at most this deep run on the caller's stack; deeper ones get their own
SHALLOW_DEPTH = 24
#: Python frames allowed per nesting level (meta-validation and merging recurse ~20 deep per level)
_FRAMES_PER_LEVEL = 60
_DEEP_LOCK = threading.RLock()


def call_with_depth(fn: Callable[[], Any], depth: int) -> Any:
    """Run ``fn`` (a recursive pass over a schema ``depth`` deep) with stack to spare; returns its result.

    Shallow schemas run here.  Deeper ones run on a helper thread with a
    256 MiB stack while the interpreter's recursion limit is raised to fit
    (one deep compile at a time; the limit is restored afterwards), so every
    schema within ``max_schema_depth`` compiles instead of dying with a bare
    ``RecursionError``.  Exceptions of ``fn`` propagate unchanged.
    """
    frames = 1000 + _FRAMES_PER_LEVEL * depth
    if depth <= SHALLOW_DEPTH or frames <= sys.getrecursionlimit():
        return fn()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 -- handed back to the caller's thread
            outcome["error"] = e

    with _DEEP_LOCK:
        old_limit = sys.getrecursionlimit()
        old_stack = threading.stack_size()
        sys.setrecursionlimit(max(old_limit, frames))
        try:
            threading.stack_size(256 << 20)
            try:
                worker = threading.Thread(target=run, name="exl2-enforcer-deep-compile")
            finally:
                threading.stack_size(old_stack)
            worker.start()
            worker.join()
        finally:
            sys.setrecursionlimit(old_limit)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
DRAFT_7 = ("http://json-schema.org/draft-07/schema", "https://json-schema.org/draft-07/schema")


def compile_schema(schema: Any, options: SchemaOptions | None = None,
                   registry: referencing.Registry | None = None, *,
                   clock: Callable[[], float] | None = None) -> tuple[NFA, Frag, list[str]]:
    """Validate ``schema`` and compile it to an NFA fragment for its JSON text.

    ``registry`` may hold further documents for remote ``$ref``s; nothing is
    fetched from the network.  ``clock`` (seconds, default ``time.perf_counter``)
    measures ``options.compile_timeout_s``.  Returns ``(nfa, root fragment,
    warnings)``.  Raises :class:`SchemaError` naming a JSON pointer for invalid,
    unsupported, too deep (``max_schema_depth``) or too costly
    (``compile_timeout_s``, ``max_nfa_states``) schemas.
    """
    options = options or SchemaOptions()
    depth = check_schema_depth(schema, options.max_schema_depth)
    compiler = SchemaCompiler(options, clock=clock or time.perf_counter)
    compiler.tick("")
    try:
        return call_with_depth(lambda: _compile_checked(schema, options, registry, compiler), depth)
    except RecursionError:
        # max_schema_depth was raised past what the interpreter's stack allows
        raise SchemaError(f"the schema is too deep to compile within Python's recursion limit; lower its nesting"
                          f" or SchemaOptions.max_schema_depth (now {options.max_schema_depth})",
                          compiler.pointer) from None


@functools.cache
def meta_validator(cls: Any) -> Any:
    """One reusable validator of ``cls``'s meta-schema (building one per compile costs a third)."""
    return cls(cls.META_SCHEMA)


def _compile_checked(schema: Any, options: SchemaOptions, registry: referencing.Registry | None,
                     compiler: SchemaCompiler) -> tuple[NFA, Frag, list[str]]:
    meta = str(schema.get("$schema", DRAFT_2020_12)).rstrip("#") if isinstance(schema, dict) else DRAFT_2020_12
    if meta not in (DRAFT_2020_12, *DRAFT_7):
        raise SchemaError(f"unsupported $schema {meta!r}: use draft 2020-12 ({DRAFT_2020_12}) or draft-07",
                          "/$schema", keyword="$schema")
    draft7 = meta in DRAFT_7
    validator_cls = jsonschema.Draft7Validator if draft7 else jsonschema.Draft202012Validator
    try:
        if not meta_validator(validator_cls).is_valid(schema):
            validator_cls.check_schema(schema)  # slower, but picks the best error to report
    except jsonschema.exceptions.SchemaError as e:
        raise SchemaError(f"invalid schema: {e.message}", child_pointer("", *e.path)) from None
    spec = referencing.jsonschema.DRAFT7 if draft7 else referencing.jsonschema.DRAFT202012
    resource = referencing.Resource.from_contents(schema, default_specification=spec)
    registry = (registry or referencing.Registry()).with_resource("urn:exl2-enforcer:root", resource)
    resolver = registry.resolver(base_uri=resource.id() or "urn:exl2-enforcer:root")
    if resource.id():
        registry = registry.with_resource(resource.id(), resource)
        resolver = registry.resolver(base_uri=resource.id())
    root = compiler.compile(schema, Ctx("", resolver, draft7))
    return compiler.nfa, root, compiler.warnings
