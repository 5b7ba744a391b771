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

import contextlib
import functools
import json
import numbers
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, cast

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema

from exl2_enforcer.compile.charset import ANY_CP, json_char_fragment
from exl2_enforcer.compile.formats import SPEC_FORMATS, SUPPORTED_FORMATS, format_accepts, format_fragment
from exl2_enforcer.compile.literal_set import LiteralSet
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.numbers import EXACT_FLOAT_INT, integer_fragment, number_fragment, point_texts
from exl2_enforcer.compile.regex import compile_regex, pattern_accepts
from exl2_enforcer.compile.schema.containers import compile_array, compile_object
from exl2_enforcer.compile.schema.discriminated import discriminated_union
from exl2_enforcer.compile.schema.drafts import (
    LEGACY_ITEMS,
    checked_draft,
    internal_validator_class,
    normalize_document,
    normalize_keywords,
    specification,
)
from exl2_enforcer.compile.schema.keywords import (
    NOT_STRINGS,
    compile_not,
    compile_with_dependencies,
    excluded_strings_body,
    has_dependencies,
    merge_or_false,
    misspelled_keywords,
    rewrite_conditional,
    rewrite_unevaluated,
)
from exl2_enforcer.compile.schema.merge import check_disjoint, expand_ref, merge_all_of
from exl2_enforcer.compile.schema.templates import bounded_fragment, template_fragment
from exl2_enforcer.compile.schema.terms import (
    ANNOTATIONS,
    ESCAPES,
    JSON_TYPES,
    PROPERTY_ORDERS,
    Escapes,
    PropertyOrder,
    child_pointer,
    existing_pointer,
    in_place_below,
    pointer_tokens,
)
from exl2_enforcer.compile.schema.values import base_uri, dedupe_json, json_key
from exl2_enforcer.errors import EnforcerError, RegexError, SchemaError, UnknownFormatError

if TYPE_CHECKING:
    from referencing._core import Resolver  # referencing exports no public name for its Resolver type

#: standard keywords this compiler does not implement: an error unless lenient
UNSUPPORTED = frozenset({
    "$dynamicRef",
})

TYPE_KEYWORDS = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "object": {"properties", "required", "additionalProperties", "minProperties", "maxProperties"},
    "array": {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"},
}
TYPE_KEYWORDS["integer"] = TYPE_KEYWORDS["number"]
#: numeric ``format`` names (OpenAPI) read as inclusive integer ranges when formats are asserted
INTEGER_FORMATS: dict[str | None, tuple[int, int]] = {
    "int8": (-2**7, 2**7 - 1), "int16": (-2**15, 2**15 - 1), "int32": (-2**31, 2**31 - 1),
    "int64": (-2**63, 2**63 - 1), "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1)}
#: what "any value" means per container type: open, whatever strict_objects says
FREE_FORM = {"object": {"additionalProperties": True}, "array": {"items": True}}


#: the largest ``max_depth`` a schema may ask for: far past any real nesting, and far below the
#: completion depth that means "can never finish" (2**30), so every bound stays exact
MAX_DEPTH_LIMIT = 1 << 20


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
      (``[[1]]`` nests 2 levels, at most :data:`MAX_DEPTH_LIMIT`); it bounds recursive
      ``$ref`` and free-form values, and a schema whose every value nests deeper is refused.
    * ``escapes`` -- "canonical" or "all" spellings for enum/const strings and keys.
    * ``lenient`` -- unsupported keywords become warnings instead of errors
      (the language then ignores them, so outputs may not validate).
    * ``integral_fractions`` -- integers may be written ``1.0`` (spec-valid from draft 6
      on, never offered in draft 4; off by default because a model should not be
      invited to write them).
    * ``format_assertion`` -- True: ``format`` constrains strings (an unknown
      format is an error); False: ``format`` is an annotation, as draft 2020-12
      says by default.
    * ``unknown_keywords`` -- "warn": a key that is no keyword but close to one
      (``"requried"``) adds a did-you-mean warning to ``CompiledGrammar.warnings``
      (the spec ignores unknown keywords, and so does the language); "error":
      raise :class:`SchemaError` at its pointer instead.
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
      compiled.  The automaton's set-up after it (whole-NFA passes, byte classes) is
      not timed: it is linear in the NFA's states, which ``max_nfa_states`` bounds
      (about 0.5 s for 220,000 states: an ``enum`` of 3,000 small objects).
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

    unknown_keywords: str = "warn"

    def __post_init__(self) -> None:
        for name in ("max_whitespace", "max_depth", "max_schema_depth", "max_nfa_states"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise EnforcerError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if isinstance(self.compile_timeout_s, bool) or not isinstance(self.compile_timeout_s, numbers.Real):
            raise EnforcerError(f"compile_timeout_s must be a number, got "
                                f"{type(self.compile_timeout_s).__name__} {self.compile_timeout_s!r}")
        if self.unknown_keywords not in ("warn", "error"):
            raise EnforcerError(f"unknown_keywords must be 'warn' or 'error', got {self.unknown_keywords!r}")
        if self.max_schema_depth < 1:
            raise EnforcerError(f"max_schema_depth must be >= 1, got {self.max_schema_depth}")
        if not self.compile_timeout_s > 0:
            raise EnforcerError(f"compile_timeout_s must be > 0 seconds, got {self.compile_timeout_s}")
        if self.max_nfa_states < 1:
            raise EnforcerError(f"max_nfa_states must be >= 1, got {self.max_nfa_states}")
        if self.max_whitespace < 0:
            raise EnforcerError(f"max_whitespace must be >= 0, got {self.max_whitespace}")
        if not 1 <= self.max_depth <= MAX_DEPTH_LIMIT:
            raise EnforcerError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT:,} levels, got {self.max_depth}")
        if self.property_order not in PROPERTY_ORDERS:
            raise EnforcerError(f"property_order must be 'schema' or 'any', got {self.property_order!r}")
        if self.escapes not in ESCAPES:
            raise EnforcerError(f"escapes must be 'canonical' or 'all', got {self.escapes!r}")


@dataclass
class Ctx:
    """Where a subschema sits: its JSON pointer and the resolver for its ``$ref``s."""

    pointer: str
    resolver: Resolver[Any]
    #: True in drafts that spell tuples as array-form ``items`` + ``additionalItems`` (4 to 2019-09)
    draft7: bool = False
    #: the draft the document is read in: "4", "6", "7", "2019-09" or "2020-12"
    draft: str = "2020-12"

    def child(self, *parts: Any) -> "Ctx":
        """The context of a subschema below this one."""
        return Ctx(child_pointer(self.pointer, *parts), self.resolver, self.draft7, self.draft)


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
    #: the root document and its context (where a 2019-09 $recursiveRef may lead)
    root: tuple[Any, "Ctx"] = (None, None)  # type: ignore[assignment]
    _containers: dict[tuple[Any, ...], Frag] = field(default_factory=dict)
    _sibling_refs: dict[tuple[Any, ...], Frag] = field(default_factory=dict)
    #: allOf schemas being merged, innermost last: (id of the schema, its pointer)
    merging: list[tuple[int, str]] = field(default_factory=list)
    #: $refs whose sibling keywords are being merged into their target, innermost last:
    #: (id of the schema holding the $ref, its pointer)
    expanding: list[tuple[int, str]] = field(default_factory=list)
    #: ``properties`` whose complement :func:`.keywords.negate` is being built (a recursive one has none)
    negating: list[tuple[int, str]] = field(default_factory=list)
    #: allOf schemas being compiled after their merge, innermost last
    compiling_all_of: list[tuple[int, str]] = field(default_factory=list)
    #: the schema document as the user gave it: warnings and errors name places in it
    source: Any = None
    #: id of each subschema object of the (normalized) document -> its JSON pointer there
    _places: dict[int, str] = field(default_factory=dict)
    #: a pointer built along a rewritten schema -> where the user's subschema compiled there sits
    #: (an ``else`` schema compiled as ``/anyOf/1`` of the rewritten ``if``): for naming places only
    homes: dict[str, str] = field(default_factory=dict)
    _started: float | None = None

    # -- compile budget --------------------------------------------------------------
    def tick(self, pointer: str | None = None, adding: int = 0) -> None:
        """Raise :class:`SchemaError` once the compile passes its time or NFA-state budget.

        Called at every subschema and inside long loops (enum values, oneOf
        pairs), so an explosive schema stops within one step of its limit.
        ``adding``: NFA states about to be created in one go, counted before they exist.
        """
        if pointer is not None:
            self.pointer = pointer
        now = self.clock()
        if self._started is None:
            self._started = now
        opts = self.options
        if len(self.nfa) + adding > opts.max_nfa_states:
            raise SchemaError(f"compile budget exceeded: more than max_nfa_states={opts.max_nfa_states} NFA states"
                              " (SchemaOptions.max_nfa_states) while compiling", self.pointer)
        if now - self._started > opts.compile_timeout_s:
            raise SchemaError(f"compile budget exceeded: more than compile_timeout_s={opts.compile_timeout_s:g} s"
                              " (SchemaOptions.compile_timeout_s) while compiling", self.pointer)

    def place(self, pointer: str) -> str:
        """``pointer`` as a place in the user's document.  Built along a rewritten schema (a ``not``
        rewritten as ``anyOf``, merged ``allOf`` branches, a ``$ref`` target merged with its
        siblings), it may name structure the user's schema lacks: below a user's subschema that was
        compiled there it is re-based on where that subschema sits (:attr:`homes`); what still
        does not exist becomes the nearest existing place above it (:func:`.terms.existing_pointer`)."""
        tokens = pointer_tokens(pointer)
        for n in range(len(tokens), 0, -1):  # the longest re-based prefix
            home = self.homes.get(child_pointer("", *tokens[:n]))
            if home is not None:
                pointer = child_pointer(home, *tokens[n:])
                break
        return pointer if self.source is None else existing_pointer(self.source, pointer)

    def note_home(self, schema: Any, ctx: Ctx) -> None:
        """Remember where ``schema`` sits in the document when it is compiled at a pointer the
        document lacks (a rewritten form's); a pointer that exists stays itself (a subschema
        object shared by two places of a Python-built schema is compiled at each)."""
        home = self._places.get(id(schema)) if isinstance(schema, dict) else None
        if home is not None and home != ctx.pointer and not _names_place(self.root[0], ctx.pointer):
            self.homes[ctx.pointer] = home

    def target_pointer(self, ref: str, target: Any, ctx: Ctx) -> str:
        """Where a ``$ref``'s target sits in the document being compiled; for a target in another
        document (a registry resource), the ``$ref`` that leads there."""
        uri, _, frag = ref.partition("#")
        if not uri and (frag.startswith("/") or not frag) and _names_place(self.root[0], frag, target):
            return frag  # also a boolean, or an object a Python-built schema shares between places
        found = self._places.get(id(target)) if isinstance(target, dict) else None
        return found if found is not None else ctx.child("$ref").pointer

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
            # a lone surrogate (json.loads makes one of "\\ud800") has no UTF-8: its \\uXXXX escape
            return nfa.literal(json.dumps(text, ensure_ascii=False).encode("utf-8", "backslashreplace"))
        return nfa.seq([nfa.literal(b'"'), *(self.char_literal(ch) for ch in text), nfa.literal(b'"')])

    def char_literal(self, ch: str) -> Frag:
        """One character inside a JSON string, spelled as ``escapes`` allows."""
        if self.options.escapes == "canonical":
            return self.nfa.literal(json.dumps(ch, ensure_ascii=False).encode("utf-8", "backslashreplace")[1:-1])
        return json_char_fragment(self.nfa, ((ord(ch), ord(ch)),))

    def validator(self, schema: Any, ctx: Ctx, *, strict_formats: bool = True) -> jsonschema.protocols.Validator:
        """A jsonschema validator for a subschema, resolving its ``$ref``s where it sits, with this
        engine's ``pattern`` (ECMA-262) and, when asserted, ``format`` (the format fragments); its
        ``is_valid`` raises :class:`RegexError` for a pattern the engine cannot compile and, with
        ``strict_formats``, :class:`UnknownFormatError` for a string checked by a format the
        specification defines but the engine lacks (see :meth:`value_check`)."""
        cls = value_validator_class(ctx.draft, self.options.format_assertion, strict_formats)
        return cls(schema, _resolver=ctx.resolver)

    # -- dispatch -------------------------------------------------------------------
    def compile(self, schema: Any, ctx: Ctx) -> Frag:
        """A fragment matching the JSON text of every instance of ``schema``."""
        self.tick(ctx.pointer)
        self.note_home(schema, ctx)
        if schema is True:
            return self.any_value(ctx)
        if schema is False:
            return self.nfa.nothing()
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be an object or a boolean", ctx.pointer)
        # documents are rewritten whole up front; this covers remote ones reached by $ref
        schema = normalize_keywords(schema, ctx.draft, drop_foreign=False)
        self.check_keywords(schema, ctx)
        if not (schema.keys() - ANNOTATIONS):
            return self.any_value(ctx)
        if "$recursiveRef" in schema:
            return self.compile_recursive_ref(schema, ctx)
        if "$ref" in schema:
            return self.compile_ref_schema(schema, ctx)
        if ("unevaluatedProperties" in schema or "unevaluatedItems" in schema) and \
                any(k in schema for k in ("not", "if", "then", "else")):
            raise SchemaError("unevaluated* next to not/if/then/else is not supported (their evaluations depend"
                              " on which subschema validates)", ctx.pointer, keyword="unevaluatedProperties")
        if "not" in schema:
            return self.compile(self.without_not(schema, ctx), ctx)
        if "if" in schema or "then" in schema or "else" in schema:
            return self.compile(self.without_conditional(schema, ctx), ctx)
        if "allOf" in schema:
            return self.compile_all_of(schema, ctx)
        if "unevaluatedProperties" in schema or "unevaluatedItems" in schema:
            return self.compile(rewrite_unevaluated(schema, ctx), ctx)
        if has_dependencies(schema):
            return cast(Frag, compile_with_dependencies(self, schema, ctx))
        if "anyOf" in schema or "oneOf" in schema:
            return self.compile_alternatives(schema, ctx)
        if "enum" in schema or "const" in schema:
            return self.compile_values(schema, ctx)
        types = self.types_of(schema, ctx)
        if not types:
            raise SchemaError("the schema admits no value (no type is possible)", ctx.pointer)
        return self.nfa.alt(self.possible_types(types, schema, ctx))

    def possible_types(self, types: list[str], schema: dict[str, Any], ctx: Ctx) -> list[Frag]:
        """One fragment per type that admits a value; a type whose keywords exclude every value
        (``{"contains": false}`` for arrays) is left out while another type remains."""
        frags, empty = [], None
        for t in types:
            try:
                frags.append(self.compile_type(t, schema, ctx))
            except SchemaError as e:
                # only this level's own verdict (its `required` included): a deeper one (an optional
                # member) stays loud
                if "admits no value" not in e.message or len(types) == 1 or \
                        e.pointer not in (ctx.pointer, ctx.child("required").pointer):
                    raise
                empty = empty or e
        if not frags and empty is not None:
            raise empty
        return frags

    def without_not(self, schema: dict[str, Any], ctx: Ctx) -> Any:
        """``schema`` with ``not`` rewritten positively; ``lenient`` drops an inexpressible one."""
        return self._rewritten(compile_not, schema, ctx, "not", ("not",))

    def rewrite_conditional(self, schema: dict[str, Any], ctx: Ctx) -> Any:
        """``schema`` with ``if``/``then``/``else`` as alternatives (see :func:`.keywords.rewrite_conditional`);
        for :mod:`.merge`, which cannot import :mod:`.keywords` (that imports it)."""
        return rewrite_conditional(self, schema, ctx)

    def without_conditional(self, schema: dict[str, Any], ctx: Ctx) -> Any:
        """``schema`` with ``if``/``then``/``else`` rewritten as alternatives; ``lenient`` drops an
        inexpressible condition with a warning."""
        return self._rewritten(rewrite_conditional, schema, ctx, "if", ("if", "then", "else"))

    def _rewritten(self, rewrite: Callable[[SchemaCompiler, dict[str, Any], Ctx], Any], schema: dict[str, Any],
                   ctx: Ctx, keyword: str, dropped: tuple[str, ...]) -> Any:
        """``rewrite(self, schema, ctx)``; with ``lenient``, a form it cannot express (a SchemaError
        on ``not``) drops the ``dropped`` keywords instead, with a warning naming ``keyword``."""
        try:
            return rewrite(self, schema, ctx)
        except SchemaError as e:
            if not self.options.lenient or e.keyword != "not":
                raise
        note = f"keyword '{keyword}' at {self.place(ctx.child(keyword).pointer)} is not supported in this form; ignored"
        self.warnings.append(note)
        warnings.warn(note, stacklevel=4)
        return {k: v for k, v in schema.items() if k not in dropped}

    def check_keywords(self, schema: dict[str, Any], ctx: Ctx) -> None:
        """Raise (or warn, when lenient) on standard keywords that are not implemented; warn (or
        raise) on likely misspelled keywords."""
        for key, likely in misspelled_keywords(schema):
            msg = f"unknown keyword {key!r} (did you mean {likely!r}?)"
            if self.options.unknown_keywords == "error":
                raise SchemaError(msg, ctx.child(key).pointer, keyword=key)
            note = f"{msg} at {self.place(ctx.child(key).pointer)}; ignored, as the spec says"
            if note not in self.warnings:
                self.warnings.append(note)
        for key, value in schema.items():
            if key in UNSUPPORTED or (key == "uniqueItems" and value is True and schema.get("maxItems", 2) > 1):
                msg = f"keyword {key!r} is not supported"
                if key == "uniqueItems":
                    msg += " with maxItems above 1 (an automaton cannot remember which items it wrote)"
                if not self.options.lenient:
                    if key == "uniqueItems":  # pydantic writes it for every set[...] field
                        msg += ("; drop it and de-duplicate after generation (in a pydantic model: a list instead"
                                " of a set), or lenient=True (CLI --lenient) ignores it")
                    raise SchemaError(msg, ctx.child(key).pointer, keyword=key)
                self.warnings.append(f"{msg} at {self.place(ctx.child(key).pointer) or '/'}; ignored")
                warnings.warn(self.warnings[-1], stacklevel=3)
            if key == "items" and isinstance(value, list) and not ctx.draft7:
                raise SchemaError("array-form 'items' is draft 7; use prefixItems in 2020-12",
                                  ctx.child(key).pointer, keyword=key)

    def types_of(self, schema: dict[str, Any], ctx: Ctx) -> list[str]:
        """The JSON types this (enum/combinator-free) schema may produce."""
        declared = schema.get("type")
        if declared is None:
            # keywords like pattern or minimum constrain their own type only: 5 is a valid
            # instance of {"pattern": "^a"}, so every type stays possible
            types = list(JSON_TYPES)
        else:
            types = [declared] if isinstance(declared, str) else list(declared)
        if "integer" in types and "number" in types:
            types.remove("integer")  # number already holds every integer
        return types

    def compile_type(self, t: str, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """The fragment for one JSON type under the keywords that apply to it."""
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
    def compile_number(self, t: str, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """Integers and numbers with exact (integers) or sound (numbers) bounds."""
        kw = {k: schema[k] for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
              if k in schema}
        span = INTEGER_FORMATS.get(schema.get("format")) if self.options.format_assertion else None
        if span is not None:
            # OpenAPI's int32/int64: validators ignore them, so the range is a sound narrowing
            kw["minimum"] = max(kw.get("minimum", span[0]), span[0])
            kw["maximum"] = min(kw.get("maximum", span[1]), span[1])
        named = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
                 "exclusiveMaximum": "exclusive_maximum", "multipleOf": "multiple_of"}
        args = {named[k]: v for k, v in kw.items()}
        fractions = self.options.integral_fractions and ctx.draft != "4"  # draft 4: 1.0 is no integer
        # bounds keyed by repr, so 1 and 1.0 (and True) never share an entry by accident
        key = (t, repr(fractions), repr(sorted((k, repr(v), type(v).__name__) for k, v in args.items())))
        try:
            if t == "integer":
                return template_fragment(self.nfa, key, lambda n: integer_fragment(n, allow_integral_fraction=fractions,
                                                                           **args))
            return template_fragment(self.nfa, key, lambda n: number_fragment(n, **args))
        except SchemaError as e:
            raise SchemaError(e.message, ctx.pointer, keyword=e.keyword) from None

    def compile_string(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """A JSON string under minLength/maxLength, pattern and format.

        A pattern or format with a length bound is intersected with a character counter
        (:mod:`.length_product`); pattern together with format is refused.
        """
        nfa = self.nfa
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        hi = None if hi is None else int(hi)
        if hi is not None and hi < lo:
            raise SchemaError(f"maxLength {hi} < minLength {lo}: the string admits no value", ctx.pointer)
        schema = self.assertable_format(schema, ctx)
        if NOT_STRINGS in schema:
            body = excluded_strings_body(self, schema, ctx)
            return nfa.seq([nfa.literal(b'"'), body, nfa.literal(b'"')])
        if "pattern" in schema and "format" in schema:
            raise SchemaError("combining pattern and format on one string is not supported yet", ctx.pointer,
                              keyword="pattern")
        if "pattern" in schema:
            key, build = self.pattern_builder(schema["pattern"])
            where, keyword = ctx.child("pattern").pointer, "pattern"
        elif "format" in schema:
            key, build = ("format", schema["format"]), self.format_builder(schema["format"])
            where, keyword = ctx.child("format").pointer, "format"
        else:
            return nfa.seq([nfa.literal(b'"'), self.plain_string_body(lo, hi), nfa.literal(b'"')])
        try:
            body = template_fragment(nfa, key, build) if lo == 0 and hi is None else \
                template_fragment(nfa, (*key, lo, hi), lambda t: bounded_fragment(build, lo, hi, t))
        except EnforcerError as e:
            if lo or hi is not None:
                where, keyword = ctx.pointer, "maxLength" if hi is not None else "minLength"
            msg = str(e) if "admits no value" not in str(e) else f"{e} (the string admits no value)"
            if "automaton states" in msg and hi is not None:
                # e.g. pydantic's HttpUrl/AnyUrl: format 'uri' with maxLength 2083
                what = f"format {schema['format']!r}" if "format" in schema else "the pattern"
                msg += (f": {what} is counted character by character up to maxLength {hi}; a smaller maxLength"
                        " (a few hundred) compiles, or drop maxLength and check the length after generation")
            raise SchemaError(msg, where, keyword=keyword) from None
        return nfa.seq([nfa.literal(b'"'), body, nfa.literal(b'"')])

    def pattern_builder(self, pattern: str) -> tuple[tuple[Any, ...], Callable[[NFA], Frag]]:
        """The template key and builder of a ``pattern`` (JSON string content, search semantics)."""
        return ("pattern", pattern), lambda t: compile_regex(t, pattern, mode="json", search=True)

    def format_builder(self, name: str) -> Callable[[NFA], Frag]:
        """The builder of a supported ``format``'s content fragment."""
        return lambda t: format_fragment(t, name)

    def assertable_format(self, schema: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
        """``schema`` without a ``format`` that is only an annotation here.

        ``format_assertion=False``: every format is an annotation.  A format the JSON Schema
        specification does not define (``int32`` on a string, ``url``, ``phone``) is an
        annotation with a warning, as validators treat it.  A specified format this engine has
        no fragment for raises :class:`SchemaError` (unless ``lenient``: then a warning).
        """
        name = schema.get("format")
        if name is None or (self.options.format_assertion and name in SUPPORTED_FORMATS):
            return schema
        rest = {k: v for k, v in schema.items() if k != "format"}
        if not self.options.format_assertion:
            return rest
        where = ctx.child("format").pointer
        if name in SPEC_FORMATS and not self.options.lenient:
            raise SchemaError(f"format {name!r} is not supported (supported: {', '.join(sorted(SUPPORTED_FORMATS))})",
                              where, keyword="format")
        why = "not supported" if name in SPEC_FORMATS else "not a JSON Schema format"
        self.warnings.append(f"format {name!r} at {self.place(where) or '/'} is {why}: treated as an annotation"
                             " (any string)")
        return rest

    def plain_string_body(self, lo: int, hi: int | None) -> Frag:
        """Between ``lo`` and ``hi`` characters of any JSON string content."""
        char = self.shared("char", lambda: json_char_fragment(self.nfa, ANY_CP))
        return self.nfa.loop(char, lo, hi, slice_kind="plain")

    # -- enum / const ----------------------------------------------------------------
    def compile_values(self, schema: dict[str, Any], ctx: Ctx,
                       places: Callable[[int], str] | None = None) -> Frag:
        """``enum``/``const``: the listed values that also satisfy the sibling keywords.

        Linear in the number of values: duplicates are found by :func:`json_key`,
        and every value with one fixed spelling (strings, ``true``, ``false``,
        ``null``) goes into one sealed, suffix-sharing automaton (:class:`.literal_set.LiteralSet`).
        ``places(i)``: the JSON pointer of ``enum`` value ``i`` when the values were gathered from
        elsewhere (``anyOf`` branches that only list values); by default ``/enum/i`` here.
        Raises :class:`SchemaError` naming the value's pointer for a value that is no JSON value
        or nests deeper than ``max_depth`` (it could never be written).
        """
        if "const" in schema:
            values, place_of = [schema["const"]], lambda i: ctx.child("const").pointer
        else:
            values, place_of = list(schema["enum"]), places or (lambda i: ctx.child("enum", i).pointer)
        self.check_listed(values, place_of, "const" if "const" in schema else "enum")
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        if "enum" in schema and "const" in schema:
            self.check_listed([schema["const"]], lambda i: ctx.child("const").pointer, "const")
            const = json_key(schema["const"])
            values = [v for v in schema["enum"] if json_key(v) == const]
        excluded = set(rest.pop(NOT_STRINGS, []))  # an internal keyword (strings) jsonschema cannot see
        rest = self.assertable_format(rest, ctx)  # an unsupported format: an error, or an annotation
        check = self.value_check(rest, ctx) if rest else None
        kept = []
        for i, v in enumerate(dedupe_json(values)):
            if i % 1024 == 1023:
                self.tick()
            if isinstance(v, str) and v in excluded:
                continue
            try:
                if check is None or check(v):
                    kept.append(v)
                elif (ctx.draft == "4" and type(v) is float and v.is_integer() and abs(v) <= EXACT_FLOAT_INT
                      and check(int(v))):
                    kept.append(int(v))  # draft 4 only: 2 is an integer equal to the listed 2.0
            except RegexError as e:
                where = _keyword_place(rest, "pattern", e.pattern, ctx)
                raise SchemaError(f"a pattern next to enum/const: {e}", where, keyword="pattern") from None
        if not kept:
            raise SchemaError("enum/const admits no value (none satisfies the other keywords)", ctx.pointer)
        canonical = self.options.escapes == "canonical"
        try:
            # what json.dumps(v, ensure_ascii=False) writes, without a call per string
            fixed = [encode_basestring(v).encode() if canonical and type(v) is str else self.fixed_spelling(v)
                     for v in kept]
        except UnicodeEncodeError:
            raise SchemaError("an enum/const string holds a lone surrogate (U+D800..U+DFFF), which no UTF-8"
                              " output can spell", ctx.pointer) from None
        # strings with several spellings (escapes="all") share one automaton over their characters
        strings = [v for v, b in zip(kept, fixed) if b is None and isinstance(v, str)]
        # numbers too, per kind of trailing zeros: an alternation of one machine per number made the
        # first mask of an enum of 10,000 numbers close 10,000 branches (33 ms)
        numbers: dict[bool, list[bytes]] = {True: [], False: []}
        whole: list[bytes] = []  # integral values that may not be written with a fraction here
        frags = []
        # where the budget names (values gathered from anyOf branches: the place that gathered them)
        here = ctx.pointer if places is not None else ctx.child("const" if "const" in schema else "enum").pointer
        for k, (v, b) in enumerate(zip(kept, fixed)):
            if b is not None or isinstance(v, str):
                continue
            if k % 256 == 255:  # objects and arrays cost a machine each: stop within the budget
                self.tick(here)
            texts = point_texts(v)
            if texts is None:
                frags.append(self.value_literal(v))
            elif texts[1] and not self.fraction_spellings(v, rest, check, ctx):
                whole += texts[0]
            else:
                numbers[texts[1]] += texts[0]
        frags += [self.listed_numbers(texts, integral) for integral, texts in numbers.items() if texts]
        if whole:
            frags.append(self.literal_set(whole))
        spelled = [b for b in fixed if b is not None]
        if spelled:
            frags.append(self.literal_set(spelled))
        if strings:
            frags.append(self.spelled_strings(strings))
        self.tick(here)
        return frags[0] if len(frags) == 1 else self.nfa.alt(frags)

    def check_listed(self, values: list[Any], place_of: Callable[[int], str], keyword: str) -> None:
        """Refuse a listed value that is no JSON value (NaN, an infinity) or nests deeper than
        ``max_depth`` (no output could ever hold it), naming its pointer ``place_of(i)``."""
        limit = self.options.max_depth
        for i, value in enumerate(values):
            if type(value) is str:
                continue
            if _has_non_finite(value):
                raise SchemaError(f"{value!r} is not a JSON value (NaN and infinities have no JSON spelling)",
                                  place_of(i), keyword=keyword)
            depth = _nesting(value)
            if depth > limit:
                raise SchemaError(f"{keyword} value {i} nests {depth} levels of objects/arrays, deeper than"
                                  f" max_depth={limit}, so no output could hold it; raise SchemaOptions.max_depth"
                                  " (CLI --max-depth)", place_of(i), keyword=keyword)

    def value_check(self, schema: dict[str, Any], ctx: Ctx) -> Callable[[Any], bool]:
        """Whether a listed value (an enum/const value, a declared property name) satisfies
        ``schema``, as the compiled constraint would check a generated one: a string reaching a
        ``format`` the specification defines but this engine lacks is a :class:`SchemaError` at
        that format (``lenient``: a warning, and the format is an annotation), as on a generated
        string.  The returned call raises :class:`RegexError` for a pattern the engine cannot compile."""
        strict = self.validator(schema, ctx)
        loose: list[Any] = []

        def check(value: Any) -> bool:
            if loose:
                return bool(loose[0].is_valid(value))
            try:
                return bool(strict.is_valid(value))
            except UnknownFormatError as e:
                where = _keyword_place(schema, "format", e.name, ctx)
                if not self.options.lenient:
                    raise SchemaError(f"format {e.name!r} is not supported (supported: {', '.join(e.supported)});"
                                      " it applies to a listed value here", where, keyword="format") from None
                self.warnings.append(f"format {e.name!r} at {self.place(where) or '/'} is not supported: treated as"
                                     " an annotation (any string)")
                loose.append(self.validator(schema, ctx, strict_formats=False))
                return bool(loose[0].is_valid(value))

        return check

    def literal_set(self, literals: list[bytes]) -> Frag:
        """Exactly one of ``literals`` (byte strings), as one sealed automaton, within the compile budget."""
        built = LiteralSet(literals, tick=self.tick)
        self.tick(adding=built.n_states)
        return built.emit(self.nfa)

    def fraction_spellings(self, value: int | float, rest: dict[str, Any], check: Callable[[Any], bool] | None,
                           ctx: Ctx) -> bool:
        """Whether the integral listed ``value`` may also be written ``1.0``: only where its float form
        satisfies the sibling keywords too (draft 4's ``integer`` type refuses ``1.0``; from draft 6 on
        the float form meets exactly what the value met, so it is not checked again) and, beside a
        ``type`` that admits integers but not numbers, ``integral_fractions`` asks for it."""
        types = rest.get("type")
        if isinstance(types, (str, list)) and "number" not in types and not self.options.integral_fractions:
            return False
        return check is None or ctx.draft != "4" or check(float(value))

    def listed_numbers(self, texts: list[bytes], integral: bool) -> Frag:
        """Numbers written as ``texts`` (:func:`.numbers.point_texts`) then ``.`` and one or more zeros
        or nothing (``integral``), else any number of zeros: one sealed automaton for the texts."""
        nfa = self.nfa
        head = self.literal_set(texts)
        if integral:
            zero = nfa.literal(b"0")
            tail = nfa.opt(nfa.seq([nfa.literal(b".0"), nfa.star(zero)]))
        else:
            tail = nfa.star(nfa.literal(b"0"))
        return nfa.seq([head, tail])

    def spelled_strings(self, strings: list[str]) -> Frag:
        """JSON strings whose values are ``strings``, each character in every spelling ``escapes`` allows:
        one sealed automaton over the characters, within the compile budget."""
        nfa = self.nfa
        built = LiteralSet(strings, tick=self.tick, spell=self.char_spelling)
        self.tick(adding=built.n_states)
        return nfa.seq([nfa.literal(b'"'), built.emit(nfa), nfa.literal(b'"')])

    def char_spelling(self, cp: int) -> tuple[NFA, Frag]:
        """The spellings of the character ``cp`` inside a JSON string, as a small NFA of its own."""
        scratch = NFA()
        return scratch, json_char_fragment(scratch, ((cp, cp),))

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
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            # a number equals its value in every decimal spelling (1 == 1.0 in JSON Schema)
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

    def compile_all_of(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """``allOf``, merged into one schema; refuses an ``allOf`` that merges back into itself."""
        with self.entered(self.compiling_all_of, schema, ctx, "allOf reaches itself through $ref without entering"
                          " an object or array (recursion that consumes no input)", "allOf"):
            return self.compile(merge_all_of(schema, ctx, self), ctx)

    @contextlib.contextmanager
    def entered(self, active: list[tuple[int, str]], schema: Any, ctx: Ctx, message: str,
                keyword: str) -> Iterator[None]:
        """Mark ``schema`` as being worked on in ``active`` for the ``with`` block; a SchemaError
        with ``message`` (at the pointer where it was entered first) if it already is."""
        again = [ptr for key, ptr in active if key == id(schema)]
        if again:
            raise SchemaError(message, again[0], keyword=keyword)
        active.append((id(schema), ctx.pointer))
        try:
            yield
        finally:
            active.pop()

    # -- nesting ---------------------------------------------------------------------
    def container(self, t: str, schema: dict[str, Any], ctx: Ctx, build: Callable[..., Frag]) -> Frag:
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
    def compile_alternatives(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """anyOf, and oneOf when its branches are provably disjoint."""
        # with both, oneOf splits first and each of its branches keeps the anyOf (merged later)
        key = "oneOf" if "oneOf" in schema else "anyOf"
        branches = schema[key]
        # annotations ($defs, title, ...) constrain nothing and must not travel into branches
        rest = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS}
        merged = []
        for i, b in enumerate(branches):
            bctx = ctx.child(key, i)
            m = merge_or_false(rest, b, bctx, self) if rest else b
            if m is not False or len(branches) == 1:
                merged.append((m, bctx))  # a branch the siblings exclude adds nothing
        if not merged:
            raise SchemaError(f"the schema admits no value (its siblings exclude every {key} branch)", ctx.pointer)
        # a branch merged with its siblings lists values where the user's branch may not (an
        # intersection): such values are named by their branch
        as_written = {id(b) for b in branches}
        places = [(c.pointer, id(m) in as_written) for m, c in merged]
        listed = _listed_values([m for m, _ in merged], places, exactly_one=key == "oneOf")
        if listed is not None:
            # branches that only list values (a documented enum: {"const": v, "title": ...}) are
            # one enum, compiled as one literal set instead of thousands of branches
            values, sources = listed
            if not values:
                raise SchemaError(f"the schema admits no value (every value its {key} branches list is listed"
                                  " twice, so none matches exactly one)", ctx.pointer, keyword=key)
            self.tick(ctx.pointer)
            return self.compile_values({"enum": values}, ctx, places=lambda i: _source_pointer(sources[i]))
        # objects told apart by their first member's value: that member is read once for all
        # (provably disjoint, so this also settles oneOf)
        union = discriminated_union(self, merged)
        if union is not None:
            return union
        if key == "oneOf":
            check_disjoint([m for m, _ in merged], [c for _, c in merged], self)
        frags, empty = [], None
        for m, c in merged:
            try:
                frags.append(self.compile(m, c))
            except SchemaError as e:
                # a branch that admits no value adds nothing to the alternatives (also when its own
                # anyOf/oneOf/allOf, at the same instance location, is what turned out empty)
                if "admits no value" not in e.message or not in_place_below(e.pointer, c.pointer) \
                        or len(merged) == 1:
                    raise
                empty = empty or e
        if not frags and empty is not None:
            raise empty
        return self.nfa.alt(frags)

    def compile_recursive_ref(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """2019-09 ``$recursiveRef`` where its target is known statically.

        It resolves like ``$ref`` unless the target has ``$recursiveAnchor: true``; then it goes
        to the outermost resource of the dynamic scope with one, which is the root document when
        the root has ``$recursiveAnchor: true`` (evaluation always starts there).  Any other case
        depends on the path taken and raises :class:`SchemaError`.
        """
        where = ctx.child("$recursiveRef")
        if "$ref" in schema:
            raise SchemaError("$recursiveRef next to $ref is not supported", where.pointer, keyword="$recursiveRef")
        ref = schema["$recursiveRef"]
        if _has_nested_id(self.root[0]):
            # the compiler reads a relative reference against the document, not an embedded resource
            raise SchemaError("$recursiveRef in a document with embedded $id resources is not supported", where.pointer,
                              keyword="$recursiveRef")
        target, _tctx = self.resolve(ref, ctx)
        rest = {k: v for k, v in schema.items() if k != "$recursiveRef"}
        if isinstance(target, dict) and target.get("$recursiveAnchor") is True:
            root, root_ctx = self.root
            if not (isinstance(root, dict) and root.get("$recursiveAnchor") is True):
                raise SchemaError("$recursiveRef to a $recursiveAnchor whose dynamic scope is not the root document is "
                                  "not supported", where.pointer, keyword="$recursiveRef")
            call = self.nfa.call(self.ref_machine(root, root_ctx), weight=1)
            if any(k not in ANNOTATIONS for k in rest):
                raise SchemaError("$recursiveRef with sibling keywords is not supported", where.pointer,
                                  keyword="$recursiveRef")
            return call
        return self.compile({**rest, "$ref": ref}, ctx)

    def compile_ref_schema(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """``$ref``: a call into the target's shared machine (siblings merged in)."""
        siblings = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "$ref"}
        if siblings:  # in drafts 4-7 the siblings were dropped up front ($ref overrides them)
            return self.nfa.call(self.sibling_ref_machine(schema, ctx), weight=0)
        target, tctx = self.resolve(schema["$ref"], ctx)
        return self.nfa.call(self.ref_machine(target, tctx), weight=0)

    def resolve(self, ref: str, ctx: Ctx) -> tuple[Any, Ctx]:
        """Look ``ref`` up relative to ``ctx``; returns the target and its context."""
        if not isinstance(ref, str):  # draft 4's meta-schema does not check $ref
            raise SchemaError(f"$ref must be a string, got {type(ref).__name__} {ref!r}",
                              ctx.child("$ref").pointer, keyword="$ref")
        try:
            resolved = ctx.resolver.lookup(ref)
        except referencing.exceptions.Unresolvable as e:
            raise SchemaError(f"cannot resolve $ref {ref!r} ({type(e).__name__})",
                              ctx.child("$ref").pointer, keyword="$ref") from None
        # named by where the target sits (never by the path that led here: that would grow
        # without end through recursion)
        return resolved.contents, Ctx(self.target_pointer(ref, resolved.contents, ctx), resolved.resolver,
                                      ctx.draft7, ctx.draft)

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

    def sibling_ref_machine(self, schema: dict[str, Any], ctx: Ctx) -> Frag:
        """The callee fragment for a ``$ref`` with sibling keywords (its target merged with them),
        compiled once per distinct schema text, so that a recursive target whose recursion goes
        through such a ``$ref`` (``"next": {"$ref": "#/$defs/node", "required": [...]}``) refers
        back to the machine being built instead of unfolding it without end."""
        key = (json.dumps(schema, sort_keys=True, default=repr), base_uri(ctx.resolver), ctx.draft7)
        frag = self._sibling_refs.get(key)
        if frag is None:
            frag = Frag(self.nfa.state(), self.nfa.state())
            self._sibling_refs[key] = frag
            self.nfa.machine_names[frag.start] = ctx.pointer
            try:
                body = self.compile(expand_ref(schema, ctx, self), ctx)
            except SchemaError:
                del self._sibling_refs[key]  # a later use raises the same error where it is
                raise
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


def _has_nested_id(document: Any, depth: int = 0) -> bool:
    """Whether a subschema below the root declares its own ``$id`` (an embedded resource)."""
    if isinstance(document, dict):
        if depth and isinstance(document.get("$id"), str):
            return True
        return any(_has_nested_id(v, depth + 1) for k, v in document.items() if k not in ("enum", "const"))
    if isinstance(document, list):
        return any(_has_nested_id(v, depth + 1) for v in document)
    return False


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


def check_schema_depth(schema: Any, limit: int, max_nodes: int | None = None) -> int:
    """How deep objects/arrays nest in ``schema`` (the root is depth 1; a scalar is 0).

    Iterative, so it is safe on any input.  Raises :class:`SchemaError` naming
    the JSON pointer of the first value past ``limit``, or of the first object/array
    past ``max_nodes`` of them: a Python schema that reuses one sub-object in many
    places is as large as its JSON text, which can be exponential in the objects
    built (meta-validation and the cache key's text then took minutes).
    """
    stack: list[tuple[Any, str, int]] = [(schema, "", 1)]
    deepest = nodes = 0
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
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            raise SchemaError(f"the schema holds more than max_nfa_states={max_nodes} objects/arrays as JSON text (a"
                              " sub-object used in several places counts in each; SchemaOptions.max_nfa_states)",
                              pointer)
        deepest = max(deepest, depth)
        nested = [(k, v) for k, v in children if isinstance(v, (dict, list))]  # an enum of 100,000 strings: none
        stack += [(v, pointer + "/" + str(k).replace("~", "~0").replace("/", "~1"), depth + 1) for k, v in nested]
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


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not pattern_accepts(pattern, instance):
        yield jsonschema.exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _fragment_format(validator: Any, name: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and name in SUPPORTED_FORMATS and not format_accepts(name, instance):
        yield jsonschema.exceptions.ValidationError(f"{instance!r} is not a {name!r}")


def _fragment_format_strict(validator: Any, name: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and name in SPEC_FORMATS and name not in SUPPORTED_FORMATS:
        raise UnknownFormatError(name, SUPPORTED_FORMATS)  # as on a generated string: no exact check exists
    yield from _fragment_format(validator, name, instance, schema)


@functools.cache
def value_validator_class(draft: str, assert_formats: bool, strict_formats: bool = False) -> Any:
    """The internal validator class of ``draft`` checking values as the compiled constraint does:
    ``pattern`` by the ECMA-262 regex compiler, ``format`` (when ``assert_formats``) by the format
    fragments; used where listed values are filtered (enum/const siblings, propertyNames, merges).
    ``strict_formats``: a string checked by a specified format without a fragment raises
    :class:`UnknownFormatError` instead of passing."""
    rules: dict[str, Any] = {"pattern": _ecma_pattern}
    if assert_formats:
        rules["format"] = _fragment_format_strict if strict_formats else _fragment_format
    return jsonschema.validators.extend(internal_validator_class(draft), rules)


def _keyword_place(schema: Any, keyword: str, value: Any, ctx: Ctx) -> str:
    """The pointer of the first ``keyword: value`` in ``schema`` (a subschema at ``ctx``; listed
    values skipped), or ``ctx``'s own when it lies behind a ``$ref``."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(schema, ())]
    while stack:
        node, path = stack.pop(0)
        if isinstance(node, dict):
            if node.get(keyword) == value:
                return child_pointer(ctx.pointer, *path, keyword)
            stack += [(v, (*path, k)) for k, v in node.items() if k not in ("enum", "const")]
        elif isinstance(node, list):
            stack += [(v, (*path, i)) for i, v in enumerate(node)]
    return ctx.pointer


def _nesting(value: Any) -> int:
    """How many levels of objects/arrays ``value`` nests (``[[1]]``: 2; a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(_nesting, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_nesting, value), default=0)
    return 0


#: where a listed value came from: (the branch's pointer, "const"/"enum" or None when the branch
#: was rewritten, index in it)
ValueSource = tuple[str, str | None, int]


def _listed_values(branches: list[Any], places: list[tuple[str, bool]], *,
                   exactly_one: bool) -> tuple[list[Any], list[ValueSource]] | None:
    """The values of ``anyOf``/``oneOf`` branches that only list values (``const``/``enum`` and
    annotations), in order, and where each sits (``places``: each branch's pointer and whether
    it is the user's branch as written); None when
    some branch says more.  With ``exactly_one`` (oneOf) a value two branches list (by JSON
    equality: 1 == 1.0) matches both, so it is left out."""
    values: list[Any] = []
    sources: list[ValueSource] = []
    seen: dict[Any, int] = {}
    for b, (place, written) in zip(branches, places):
        if not isinstance(b, dict) or not b or any(k not in ("const", "enum") and k not in ANNOTATIONS for k in b):
            return None
        if "const" in b and "enum" in b:
            return None  # their intersection: the general path handles it
        keyword = "const" if "const" in b else "enum"
        mine = [b["const"]] if "const" in b else b.get("enum")
        if not isinstance(mine, list):
            return None
        for k in dict.fromkeys(json_key(v) for v in mine):
            seen[k] = seen.get(k, 0) + 1
        values += mine
        sources += [(place, keyword if written else None, j) for j in range(len(mine))]
    if not exactly_one:
        return values, sources
    once = [i for i, v in enumerate(values) if seen[json_key(v)] == 1]
    return [values[i] for i in once], [sources[i] for i in once]


def _source_pointer(source: ValueSource) -> str:
    place, keyword, index = source
    if keyword is None:
        return place
    return child_pointer(place, keyword) if keyword == "const" else child_pointer(place, keyword, index)


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def compile_schema(schema: Any, options: SchemaOptions | None = None,
                   registry: referencing.Registry | None = None, *,
                   clock: Callable[[], float] | None = None) -> tuple[NFA, Frag, list[str]]:
    """Validate ``schema`` and compile it to an NFA fragment for its JSON text.

    The draft comes from ``$schema`` (drafts 4, 6, 7, 2019-09, 2020-12; see
    :func:`.drafts.choose_draft`).  ``registry`` may hold further documents for
    remote ``$ref``s; nothing is fetched from the network.  ``clock`` (seconds,
    default ``time.perf_counter``) measures ``options.compile_timeout_s``.  Returns
    ``(nfa, root fragment, warnings)``.  Raises :class:`SchemaError` naming a JSON
    pointer into ``schema`` as given for invalid, unsupported, too deep (``max_schema_depth``,
    or an enum/const value deeper than ``max_depth``) or too costly (``compile_timeout_s``,
    ``max_nfa_states``) schemas.
    """
    options = options or SchemaOptions()
    depth = check_schema_depth(schema, options.max_schema_depth, options.max_nfa_states)
    # The JSON nesting sizes the stack; a long chain of $refs nests the compile deeper than
    # the schema text does, so a first attempt that runs out of stack is retried once with
    # room for max_schema_depth levels.
    started: float | None = None
    for levels in dict.fromkeys((depth, max(depth, options.max_schema_depth))):
        compiler = SchemaCompiler(options, clock=clock or time.perf_counter)
        compiler.tick("")
        if started is None:
            started = compiler._started
        compiler._started = started  # the retry spends what is left of the same compile budget
        try:
            return cast(tuple[NFA, Frag, list[str]],
                        call_with_depth(functools.partial(_compile_checked, schema, options, registry, compiler),
                                        levels))
        except RecursionError:
            continue
    deep = depth * 2 >= options.max_schema_depth
    hint = (f"lower its nesting or SchemaOptions.max_schema_depth (now {options.max_schema_depth})" if deep else
            f"its JSON nests only {depth} levels, so a chain of $ref (each one a subschema level) is too long"
            " to follow; shorten the chain")
    raise SchemaError(f"the schema is too deep to compile within Python's recursion limit: {hint}",
                      compiler.place(compiler.pointer))


def _compile_checked(schema: Any, options: SchemaOptions, registry: referencing.Registry | None,
                     compiler: SchemaCompiler) -> tuple[NFA, Frag, list[str]]:
    source = schema
    draft, notes = checked_draft(schema)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    schema = normalize_document(schema, draft)
    resource = referencing.Resource.from_contents(schema, default_specification=specification(draft))
    registry = (registry or referencing.Registry()).with_resource("urn:exl2-enforcer:root", resource)
    resolver = registry.resolver(base_uri=resource.id() or "urn:exl2-enforcer:root")
    if resource.id():
        registry = registry.with_resource(cast(str, resource.id()), resource)
        resolver = registry.resolver(base_uri=cast(str, resource.id()))
    compiler.warnings.extend(notes)
    root_ctx = Ctx("", resolver, draft in LEGACY_ITEMS, draft)
    compiler.root = (schema, root_ctx)
    compiler.source = source
    compiler._places = _schema_places(schema)
    try:
        root = compiler.compile(schema, root_ctx)
    except SchemaError as e:
        raise located(e, source, compiler.place) from None
    return compiler.nfa, root, compiler.warnings


def located(error: SchemaError, document: Any, place_of: Callable[[str], str] | None = None) -> SchemaError:
    """``error``, or the same error at a place that exists in ``document`` (the user's schema) when
    its pointer was built along a rewritten form of the schema: ``place_of`` (a compiler's
    :meth:`SchemaCompiler.place`) or the nearest existing place above it."""
    place = place_of(error.pointer) if place_of is not None else existing_pointer(document, error.pointer)
    if place == error.pointer:
        return error
    return SchemaError(f"{error.message} (found once this subschema's keywords were combined)", place,
                       keyword=error.keyword)


_ABSENT = object()


def _names_place(document: Any, pointer: str, node: Any = _ABSENT) -> bool:
    """Whether ``pointer`` names a place in ``document`` (holding the object ``node``, if given)."""
    at = document
    for token in pointer_tokens(pointer):
        if isinstance(at, dict) and token in at:
            at = at[token]
        elif isinstance(at, list) and token.isdigit() and int(token) < len(at):
            at = at[int(token)]
        else:
            return False
    return node is _ABSENT or at is node


def _schema_places(document: Any) -> dict[int, str]:
    """``id`` of every object in ``document`` -> its JSON pointer (listed values skipped), iteratively."""
    places: dict[int, str] = {}
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, dict):
            places.setdefault(id(node), pointer)
            stack += [(v, child_pointer(pointer, k)) for k, v in node.items()
                      if isinstance(v, (dict, list)) and k not in ("enum", "const")]
        elif isinstance(node, list):
            stack += [(v, child_pointer(pointer, i)) for i, v in enumerate(node) if isinstance(v, (dict, list))]
    return places
