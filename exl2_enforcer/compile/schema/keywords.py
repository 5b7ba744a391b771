"""Object keywords beyond properties: ``dependentRequired``/``dependentSchemas`` by case
analysis, ``patternProperties`` in its exact forms, and the did-you-mean check for keywords.

A dependency ties a member's presence to other keywords.  The object is split into cases by the
set of trigger names present; in each case the trigger names are required and the dependencies
apply (``required`` extended, or the dependent schema merged with ``allOf`` semantics), while the
absent triggers get the schema ``false``.  The cases are disjoint (they differ in which names
appear), so their union is exactly the object's language.  A dependent schema that cannot be
merged exactly is refused by the merge with its pointer; more than :data:`MAX_TRIGGERS` trigger
names (2**n cases) are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, Any

from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.regex import compile_regex
from exl2_enforcer.compile.schema import key_dfa
from exl2_enforcer.compile.schema.drafts import KEYWORDS
from exl2_enforcer.compile.schema.merge import expand_ref, merge_pair
from exl2_enforcer.compile.schema.templates import template_fragment
from exl2_enforcer.compile.schema.terms import ANNOTATIONS, in_place_below
from exl2_enforcer.errors import EnforcerError, RegexError, SchemaError

if TYPE_CHECKING:
    from exl2_enforcer.compile.schema.compiler import Ctx, SchemaCompiler

def merge_or_false(a: Any, b: Any, ctx: "Ctx", c: "SchemaCompiler") -> Any:
    """:func:`.schema_merge.merge_pair`, with ``false`` where the two schemas share no value
    (a branch of a rewrite that admits nothing is dropped, not an error)."""

    try:
        return merge_pair(a, b, ctx, c)
    except SchemaError as e:
        if "admits no value" in e.message:
            return False
        raise


#: at most this many distinct trigger names per object schema (the case split doubles per name)
MAX_TRIGGERS = 6
DEPENDENT = ("dependentRequired", "dependentSchemas")


def dependency_cases(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> list[tuple[dict[str, Any], "Ctx"]]:
    """The object schema split into dependency-free cases (itself when it has no dependencies).

    Raises :class:`SchemaError` for more than :data:`MAX_TRIGGERS` trigger names or a dependent
    schema that cannot be merged exactly.
    """

    required_deps = schema.get("dependentRequired") or {}
    schema_deps = schema.get("dependentSchemas") or {}
    triggers = list(dict.fromkeys([*required_deps, *schema_deps]))
    base = {k: v for k, v in schema.items() if k not in DEPENDENT}
    if not triggers:
        return [(base, ctx)]
    if len(triggers) > MAX_TRIGGERS:
        raise SchemaError(f"{len(triggers)} dependency trigger names; at most {MAX_TRIGGERS} are supported "
                          "(each doubles the object's cases)", ctx.child(DEPENDENT[0] if required_deps
                                                                         else DEPENDENT[1]).pointer)
    if "properties" not in base and "additionalProperties" not in base:
        # adding `properties` below must not close a free-form object under strict_objects
        base["additionalProperties"] = True
    cases = []
    for present in product((False, True), repeat=len(triggers)):
        case: Any = dict(base)
        props = dict(case.get("properties", {}))
        required = list(case.get("required", []))
        merged_ctx = ctx
        for name, here in zip(triggers, present):
            if not here:
                props[name] = False
                continue
            required += [name, *required_deps.get(name, [])]
        case["properties"], case["required"] = props, list(dict.fromkeys(required))
        if any(props.get(r) is False for r in case["required"]):
            continue  # a required name is absent in this case: the case admits no object
        for name, here in zip(triggers, present):
            if here and name in schema_deps and case is not False:
                case = merge_or_false(case, schema_deps[name], ctx.child("dependentSchemas", name), c)
        if case is False or _requires_forbidden(case):
            continue
        cases.append((case, merged_ctx))
    return cases


def _requires_forbidden(case: Any) -> bool:
    """Whether a merged case requires a name whose schema became ``false`` (no object fits)."""
    if not isinstance(case, dict):
        return False
    props = case.get("properties", {})
    closed = case.get("additionalProperties", True) is False
    return any(props.get(r) is False or (closed and r not in props) for r in case.get("required", []))


NON_OBJECT = ["null", "boolean", "array", "number", "string"]


def _compile_case(c: "SchemaCompiler", case: Any, ctx: "Ctx", parts: list[Frag]) -> None:
    """Append the fragment of one case; a case that admits no value adds nothing (the non-object
    values next to an ``anyOf`` of objects, the "trigger absent" case when every branch requires it)."""
    try:
        parts.append(c.compile(case, ctx))
    except SchemaError as e:
        if "admits no value" not in e.message or not in_place_below(e.pointer, ctx.pointer):
            raise


def compile_with_dependencies(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Any:
    """A fragment for a schema with dependencies: its non-object values, then one per object case."""

    base = {k: v for k, v in schema.items() if k not in DEPENDENT}
    parts: list[Frag] = []
    non_object = merge_pair(base, {"type": NON_OBJECT}, ctx, c) if _admits(base, NON_OBJECT) else False
    if non_object is not False:
        _compile_case(c, non_object, ctx, parts)
    if _admits(base, ["object"]):
        for case, cctx in dependency_cases(c, schema, ctx):
            if _admits(case, ["object"]):
                _compile_case(c, merge_pair(case, {"type": "object"}, cctx, c), cctx, parts)
    if not parts:
        raise SchemaError("the schema admits no value (its dependencies exclude every object)", ctx.pointer)
    return c.nfa.alt(parts)


def _admits(schema: Any, types: list[str]) -> bool:
    """Whether ``schema``'s ``type`` keyword leaves one of ``types`` possible."""
    if not isinstance(schema, dict):
        return bool(schema)
    declared = schema.get("type")
    if declared is None:
        return True
    have = {declared} if isinstance(declared, str) else set(declared)
    if "integer" in have:
        have.add("number")
    if "number" in have and "integer" in types:
        return True
    return bool(have & set(types))


def has_dependencies(schema: Any) -> bool:
    """Whether a schema uses ``dependentRequired``/``dependentSchemas`` (non-empty)."""
    return isinstance(schema, dict) and any(schema.get(k) for k in DEPENDENT)


# -- unknown keywords (typos) ------------------------------------------------------------

def _known_keywords() -> frozenset[str]:

    core = {"$ref", "$id", "id", "$recursiveAnchor", "$recursiveRef", "$dynamicRef", "nullable",
            "discriminator"}
    return frozenset().union(*KEYWORDS.values()) | ANNOTATIONS | core


def misspelled_keywords(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, likely keyword)`` for each key that is no JSON Schema keyword but close to one.

    The spec ignores unknown keywords, so ``"requried"`` or ``"maxLenght"`` silently constrain
    nothing; keys far from every keyword (vendor extensions such as ``x-order``) are not reported.
    """
    import difflib

    known = _known_keywords()
    out = []
    for key in schema:
        if key in known or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if not close:
            close = [k for k in known if k.lower() == key.lower()]
        if close:
            out.append((key, close[0]))
    return out


# -- patternProperties -------------------------------------------------------------------

@dataclass
class PatternExtras:
    """Undeclared members, by key region: each ``(key, value, ctx)`` builds a key fragment
    (quotes included) whose keys get the ``value`` schema.  The regions' key languages are
    disjoint and exclude every declared name, so no key is ever written twice by two paths."""

    regions: list[tuple[Callable[[], Frag], Any, "Ctx"]]


#: at most this many patterns in one patternProperties (the key regions double per pattern)
MAX_PATTERNS = 4


def apply_pattern_properties(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx",
                             extra: Any) -> tuple[dict[str, Any], PatternExtras | None]:
    """``(schema with matching declared members merged, extras)`` for ``patternProperties``.

    ``extra`` is the schema of undeclared keys (``additionalProperties`` or the strict_objects
    default).  A declared (or required) name that matches patterns gets their schemas merged into
    its own.  Undeclared keys are split into regions by the set of patterns they match (the
    region matching none gets ``extra``); each region's key language is built exactly from the
    patterns' DFAs and their complements (:mod:`.key_dfa`), minus the declared names.  Raises
    :class:`SchemaError` at ``/patternProperties`` past :data:`MAX_PATTERNS` patterns or
    :data:`.key_dfa.MAX_KEY_DFA_STATES` states.
    """

    pats = schema.get("patternProperties") or {}
    if not pats:
        return schema, None
    where = ctx.child("patternProperties")
    matchers = {p: _pattern_matcher(p, where.child(p)) for p in pats}
    props = dict(schema.get("properties", {}))
    names = list(dict.fromkeys([*props, *schema.get("required", [])]))
    hit_any = False
    for name in names:
        hits = [p for p in pats if matchers[p](name)]
        if not hits:
            continue
        hit_any = True
        own = props.get(name, True)
        for p in hits:
            own = merge_or_false(own, pats[p], where.child(p), c)
        if own is False and name in schema.get("required", []):
            # said at the object's required, as for a declared member that admits no value
            # (containers._member): an anyOf branch -- a negated if whose member a pattern's
            # schema excludes -- is then left out instead of refusing the union
            raise SchemaError(f"the object admits no value: its required property {name!r} admits none once its "
                              "patternProperties schemas are merged in", ctx.child("required").pointer,
                              keyword="required")
        props[name] = own  # false for an optional member: it cannot be written
    out = {**schema, "properties": props} if hit_any else dict(schema)
    out.pop("patternProperties", None)
    values = list(pats.values())
    if all(v is True or v == {} for v in values) and extra is not False and _is_free(extra):
        return out, None
    if extra is False and not hit_any and all(v == values[0] for v in values[1:]):
        first = next(iter(pats))
        return out, PatternExtras([(lambda: _pattern_key(c, list(pats)), values[0], where.child(first))])
    return out, PatternExtras(_key_regions(c, pats, extra, names, ctx))


def _key_regions(c: "SchemaCompiler", pats: dict[str, Any], extra: Any, names: list[str],
                 ctx: "Ctx") -> list[tuple[Callable[[], Frag], Any, "Ctx"]]:
    """One region per set of patterns a key matches (exact, via explicit DFAs)."""

    where = ctx.child("patternProperties")
    if len(pats) > MAX_PATTERNS:
        raise SchemaError(f"{len(pats)} patterns in patternProperties; at most {MAX_PATTERNS} are supported next to "
                          "other keys (each doubles the key regions)", where.pointer, keyword="patternProperties")
    content = key_dfa.content_dfa()
    try:
        langs = {}
        for p in pats:
            scratch = NFA()
            langs[p] = key_dfa.product(content, key_dfa.determinise(
                scratch, compile_regex(scratch, p, mode="json", search=True)), "and")
        declared = key_dfa.names_dfa(names) if names else None
        regions = []
        for chosen in product((False, True), repeat=len(pats)):
            inside = [p for p, here in zip(pats, chosen) if here]
            value = extra if not inside else _merged_values(c, [pats[p] for p in inside], where)
            if value is False:
                continue
            d = content
            for p, here in zip(pats, chosen):
                d = key_dfa.product(d, langs[p], "and" if here else "and-not")
            if declared is not None:
                d = key_dfa.product(d, declared, "and-not")
            if key_dfa.is_empty(d):
                continue
            vctx = where.child(inside[0]) if inside else ctx.child("additionalProperties")
            regions.append((_dfa_key(c, d), value, vctx))
    except EnforcerError as e:
        if isinstance(e, SchemaError):
            raise
        raise SchemaError(str(e), where.pointer, keyword="patternProperties") from None
    return regions


def _merged_values(c: "SchemaCompiler", values: list[Any], where: "Ctx") -> Any:
    merged: Any = True
    for v in values:
        merged = merge_or_false(merged, v, where, c)
        if merged is False:
            return False
    return merged


def _dfa_key(c: "SchemaCompiler", d: Any) -> Callable[[], Frag]:

    def build() -> Frag:
        nfa = c.nfa
        return nfa.seq([nfa.literal(b'"'), key_dfa.emit(d, nfa), nfa.literal(b'"')])

    return build


def _is_free(extra: Any) -> bool:
    return extra is True or extra == {}


def _pattern_key(c: "SchemaCompiler", patterns: list[str]) -> Frag:
    """A JSON string key whose decoded value matches one of ``patterns`` (search semantics)."""

    nfa = c.nfa
    bodies = []
    for p in patterns:
        key, build = c.pattern_builder(p)
        bodies.append(template_fragment(nfa, key, build))
    return nfa.seq([nfa.literal(b'"'), nfa.alt(bodies), nfa.literal(b'"')])


def _pattern_matcher(pattern: str, where: "Ctx") -> Callable[[str], bool]:
    """Whether a name matches ``pattern`` with JSON Schema (search) semantics, by this engine's
    own regex compiler (ECMA-262 meaning), run on the name's canonical JSON spelling."""

    scratch = NFA()
    try:
        frag = compile_regex(scratch, pattern, mode="json", search=True)
    except EnforcerError as e:
        raise SchemaError(str(e), where.pointer, keyword="patternProperties") from None

    def matches(name: str) -> bool:
        data = json.dumps(name, ensure_ascii=False)[1:-1].encode()
        return frag.end in run_nfa(scratch, frag.start, data)

    return matches


def run_nfa(nfa: NFA, start: int, data: bytes) -> set[int]:
    """The states of call-free ``nfa`` reachable from ``start`` by reading ``data``."""
    current = nfa.epsilon_closure({start})
    for b in data:
        step = {t for q in current for lo, hi, t in nfa.edges[q] if lo <= b <= hi}
        current = nfa.epsilon_closure(step)
        if not current:
            break
    return current




# -- not ---------------------------------------------------------------------------------------

_ALL_TYPES = ("null", "boolean", "object", "array", "number", "string")
#: keyword -> (type it applies to, the negated keyword, how its value changes)
_NEGATED_BOUNDS: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "minimum": ("number", "exclusiveMaximum", lambda v: v),
    "maximum": ("number", "exclusiveMinimum", lambda v: v),
    "exclusiveMinimum": ("number", "maximum", lambda v: v),
    "exclusiveMaximum": ("number", "minimum", lambda v: v),
    "minLength": ("string", "maxLength", lambda v: v - 1),
    "maxLength": ("string", "minLength", lambda v: v + 1),
    "minItems": ("array", "maxItems", lambda v: v - 1),
    "maxItems": ("array", "minItems", lambda v: v + 1),
}


def negate(schema: Any, ctx: "Ctx", c: "SchemaCompiler") -> list[Any]:
    """Positive schemas whose union is exactly the complement of ``schema`` (``[]``: nothing).

    Exact forms: booleans, ``type``, one-sided numeric/length/count bounds, ``required``, a
    double ``not``, ``const``/``enum`` of scalars, ``properties`` whose member schemas are such
    forms, a ``$ref`` to such a schema, and conjunctions of these (De Morgan: one branch per
    keyword).  Anything else raises :class:`SchemaError` at ``ctx``.
    """

    schema = expand_ref(schema, ctx, c)
    if schema is True:
        return []
    if schema is False:
        return [True]
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be an object or a boolean", ctx.pointer)
    keys = [k for k in schema if k not in ANNOTATIONS]
    if not keys:
        return []
    out: list[Any] = []
    for key in keys:
        out += _negate_keyword(key, schema[key], ctx, c)
    return out


def _negate_keyword(key: str, value: Any, ctx: "Ctx", c: "SchemaCompiler") -> list[Any]:
    if key == "type":
        named = {value} if isinstance(value, str) else set(value)
        if "integer" in named and "number" not in named:
            raise SchemaError("'not' of type integer (the non-integral numbers) is not supported exactly",
                              ctx.child("type").pointer, keyword="not")
        rest = [t for t in _ALL_TYPES if t not in named]
        return [{"type": rest}] if rest else []
    if key in _NEGATED_BOUNDS:
        kind, negated, change = _NEGATED_BOUNDS[key]
        bound = change(value)
        if kind != "number" and bound < 0:
            return []  # e.g. minLength 0 holds for every string
        return [{"type": kind, negated: bound}]
    if key == "required":
        return [{"type": "object", "properties": {name: False}} for name in dict.fromkeys(value)]
    if key == "not":
        return [value]
    if key in ("const", "enum"):
        return _negate_values([value] if key == "const" else list(value), ctx.child(key))
    if key == "properties" and isinstance(value, dict):
        # only an object with a listed member whose value fails that member's schema fails
        # "properties" (other values pass it vacuously): one alternative per member and per
        # form of its complement -- an if/then/else on a discriminator ({"kind": {"const": "a"}})
        out = []
        with c.entered(c.negating, value, ctx.child(key), "'not' of a recursive schema (its properties reach "
                       "themselves again through $ref) is not supported: its complement has no finite form", "not"):
            for name, sub in value.items():
                out += [{"type": "object", "required": [name], "properties": {name: n}}
                        for n in negate(sub, ctx.child(key, name), c)]
        return out
    raise SchemaError(f"'not' of a schema with {key!r} is not supported exactly (its complement is not "
                      "expressible here)", ctx.child(key).pointer, keyword="not")


#: internal keyword: the string values a negated ``const``/``enum`` excludes (never user-facing)
NOT_STRINGS = "$exl2:notStrings"


def _negate_values(values: list[Any], ctx: "Ctx") -> list[Any]:
    """Every JSON value but ``values`` (scalars only): per type, what the listed values leave."""
    if any(isinstance(v, (dict, list)) for v in values):
        raise SchemaError("'not' of an object or array const/enum is not supported exactly", ctx.pointer,
                          keyword="not")
    strings = sorted({v for v in values if isinstance(v, str)})
    bools = {v for v in values if isinstance(v, bool)}
    numbers = sorted({v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    out: list[Any] = [{"type": "object"}, {"type": "array"}]
    if None not in values:
        out.append({"type": "null"})
    out += [{"const": b} for b in (True, False) if b not in bools]
    out.append({"type": "string", NOT_STRINGS: strings} if strings else {"type": "string"})
    if not numbers:
        out.append({"type": "number"})
        return out
    out.append({"type": "number", "exclusiveMaximum": numbers[0]})
    out += [{"type": "number", "exclusiveMinimum": lo, "exclusiveMaximum": hi} for lo, hi in zip(numbers, numbers[1:])]
    out.append({"type": "number", "exclusiveMinimum": numbers[-1]})
    return out


def excluded_strings_body(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Frag:
    """String content that is none of ``schema[NOT_STRINGS]`` (any escape spelling) and matches
    ``pattern`` if given; a length bound or ``format`` next to it raises :class:`SchemaError`."""

    if any(k in schema for k in ("format", "minLength", "maxLength")):
        raise SchemaError("'not' of string values together with format/minLength/maxLength is not supported",
                          ctx.pointer, keyword="not")
    d = key_dfa.content_dfa()
    try:
        if "pattern" in schema:
            scratch = NFA()
            d = key_dfa.product(d, key_dfa.determinise(
                scratch, compile_regex(scratch, schema["pattern"], mode="json", search=True)), "and")
        d = key_dfa.product(d, key_dfa.names_dfa(list(schema[NOT_STRINGS])), "and-not")
    except EnforcerError as e:
        if isinstance(e, SchemaError):
            raise
        raise SchemaError(str(e), ctx.pointer, keyword="not") from None
    return key_dfa.emit(d, c.nfa)


def compile_not(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Any:
    """The schema with its ``not`` replaced by the equivalent positive alternatives."""

    rest = {k: v for k, v in schema.items() if k != "not"}
    branches = negate(schema["not"], ctx.child("not"), c)
    if not branches:
        raise SchemaError("the schema admits no value ('not' excludes everything)", ctx.child("not").pointer)
    if any(isinstance(b, dict) and NOT_STRINGS in b for b in branches) and any(
            k in rest for k in ("format", "minLength", "maxLength")):
        # caught here, where the pointer is still the user's (the rewritten branches have none)
        raise SchemaError("'not' of string values together with format/minLength/maxLength is not supported",
                          ctx.child("not").pointer, keyword="not")
    if len(branches) == 1:
        merged = merge_or_false(rest, branches[0], ctx, c)
        if merged is False:
            raise SchemaError("the schema admits no value (its 'not' excludes every value it allows)", ctx.pointer)
        return merged
    if "anyOf" in rest or "oneOf" in rest:
        return {**rest, "allOf": [*rest.get("allOf", []), {"anyOf": branches}]}
    return {**rest, "anyOf": branches}


# -- contains / minContains / maxContains --------------------------------------------------

#: the most (items written x matches written) lanes one contains-array may build
MAX_CONTAINS_LANES = 4096


def compile_contains(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Frag:
    """``[ ... ]`` whose items satisfy ``items`` and of which ``minContains``..``maxContains``
    (default 1..any) satisfy ``contains``; ``minItems``/``maxItems`` bound the total.

    Lanes count (items written, matching items written).  An item is written as "any item" or as
    a "matching item" (``items`` merged with ``contains``); with ``maxContains`` the non-matching
    items use the complement of ``contains`` (:func:`negate`), so the count is exact.  Tuple
    forms (``prefixItems``, array ``items``) are refused.
    """

    nfa = c.nfa
    if "prefixItems" in schema or isinstance(schema.get("items"), list):
        raise SchemaError("contains together with a tuple (prefixItems) is not supported", ctx.child("contains")
                          .pointer, keyword="contains")
    items = schema.get("items", True)
    min_c = int(schema.get("minContains", 1))
    max_c = schema.get("maxContains")
    max_c = None if max_c is None else int(max_c)
    min_i = int(schema.get("minItems", 0))
    max_i = schema.get("maxItems")
    max_i = None if max_i is None else int(max_i)
    if (max_c is not None and max_c < min_c) or (max_i is not None and (max_i < min_i or max_i < min_c)):
        raise SchemaError("the array admits no value (contains counts and item counts conflict)", ctx.pointer)
    ictx, cctx = ctx.child("items"), ctx.child("contains")
    match = merge_or_false(items, schema["contains"], cctx, c)
    if max_c is None:
        other = items  # any item; the lane count is a lower bound on the matches
    else:
        kept = [merge_or_false(items, n, cctx, c) for n in negate(schema["contains"], cctx, c)]
        kept = [k for k in kept if k is not False]
        other = {"anyOf": kept} if kept else False
    cap_n = max_i if max_i is not None else max(min_i, 1)
    cap_m = max_c if max_c is not None else min_c
    if (cap_n + 1) * (cap_m + 1) > MAX_CONTAINS_LANES:
        raise SchemaError(f"contains with these counts needs more than {MAX_CONTAINS_LANES} lanes", ctx.pointer,
                          keyword="contains")
    machines = {}
    for name, sub, sctx in (("match", match, cctx), ("other", other, ictx)):
        if sub is not False:
            body = c.compile(sub, sctx)
            machines[name] = Frag(nfa.state(), nfa.state())
            nfa.epsilon(machines[name].start, body.start)
            nfa.epsilon(body.end, machines[name].end)
    open_ = nfa.seq([nfa.literal(b"["), c.ws()])
    close = nfa.literal(b"]")
    lanes: dict[tuple[int, int], int] = {(0, 0): open_.end}
    todo = [(0, 0)]
    closable = False
    while todo:
        n, m = todo.pop()
        q = lanes[(n, m)]
        if n >= min_i and m >= min_c:
            nfa.epsilon(q, close.start)
            closable = True
        if max_i is not None and n >= max_i:
            continue
        for name, step in (("match", 1), ("other", 0)):
            if name not in machines:
                continue
            m2 = m + step if max_c is not None else min(m + step, cap_m)
            if max_c is not None and m2 > max_c:
                continue
            n2 = n + 1 if max_i is not None else min(n + 1, cap_n)
            head = [] if n == 0 else [nfa.literal(b","), c.ws()]
            item = nfa.seq([*head, nfa.call(machines[name], weight=0), c.ws()])
            nfa.epsilon(q, item.start)
            if (n2, m2) not in lanes:
                lanes[(n2, m2)] = nfa.state()
                todo.append((n2, m2))
            nfa.epsilon(item.end, lanes[(n2, m2)])
    if not closable:
        raise SchemaError("the array admits no value (contains cannot be satisfied)", ctx.pointer)
    return Frag(open_.start, close.end)


# -- propertyNames ---------------------------------------------------------------------------

def apply_property_names(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx", extra: Any,
                         extras: PatternExtras | None) -> tuple[dict[str, Any], Any, PatternExtras | None]:
    """``(schema, extra, extras)`` with ``propertyNames`` applied to declared and undeclared keys.

    Declared names that fail ``propertyNames`` are forbidden (a required one makes the object
    admit no value).  Undeclared keys are written as strings valid for ``propertyNames``; this
    is exact when no remaining declared name could also be written that way, else refused.
    """
    names_schema = schema.get("propertyNames", True)
    out = {k: v for k, v in schema.items() if k != "propertyNames"}
    if names_schema is True or names_schema == {}:
        return out, extra, extras
    where = ctx.child("propertyNames")
    check = c.value_check(names_schema, where)
    props = dict(out.get("properties", {}))
    kept = []
    for name in list(dict.fromkeys([*props, *out.get("required", [])])):
        try:
            ok = check(name)
        except RegexError as e:
            raise SchemaError(f"propertyNames: {e}", where.pointer, keyword="propertyNames") from None
        if ok:
            kept.append(name)
        else:
            props[name] = False
    if props:
        out["properties"] = props
    if extra is False:
        return out, extra, extras
    if extras is not None:
        raise SchemaError("propertyNames together with patternProperties is not supported exactly", where.pointer,
                          keyword="propertyNames")
    if kept:
        raise SchemaError("propertyNames next to declared names it admits, on an object that allows other "
                          "keys, is not supported exactly (a declared key could be written twice)", where.pointer,
                          keyword="propertyNames")

    key_schema = merge_pair(names_schema, {"type": "string"}, where, c)
    if key_schema is False:
        return out, False, None
    return out, extra, PatternExtras([(lambda: c.compile(key_schema, where), extra,
                                       ctx.child("additionalProperties"))])


# -- if / then / else --------------------------------------------------------------------------

def rewrite_conditional(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Any:
    """``if``/``then``/``else`` as ``anyOf: [if AND then, (not if) AND else]``.

    ``then``/``else`` without ``if`` and ``if`` without either are no-ops (the spec ignores
    them).  The complement of ``if`` comes from :func:`negate`, so only its exact forms are
    accepted; the rest raises :class:`SchemaError` at ``/if``.
    """

    rest = {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
    if "if" not in schema or ("then" not in schema and "else" not in schema):
        return rest
    cond, then, other = schema["if"], schema.get("then", True), schema.get("else", True)
    ictx = ctx.child("if")
    branches = [merge_or_false(cond, then, ctx.child("then"), c)]
    branches += [merge_or_false(n, other, ctx.child("else"), c) for n in negate(cond, ictx, c)]
    branches = [b for b in branches if b is not False]
    if not branches:
        raise SchemaError("the schema admits no value (neither branch of if/then/else admits one)", ctx.pointer)
    alternatives = {"anyOf": branches}
    if "anyOf" in rest or "oneOf" in rest:
        return {**rest, "allOf": [*rest.get("allOf", []), alternatives]}
    return {**rest, **alternatives}


# -- unevaluatedProperties / unevaluatedItems -----------------------------------------------

#: applicators whose evaluation depends on which branch validates: refused next to unevaluated*
_BRANCHING = ("anyOf", "oneOf", "dependentSchemas", "$dynamicRef", "$recursiveRef")
UNEVALUATED = ("unevaluatedProperties", "unevaluatedItems")


def rewrite_unevaluated(schema: dict[str, Any], ctx: "Ctx") -> dict[str, Any]:
    """``unevaluated*`` once ``allOf`` and ``$ref`` are merged in: what ``properties``,
    ``patternProperties`` and ``additionalProperties`` (``prefixItems``/``items``) evaluate is then
    all in this one schema, so ``unevaluatedProperties`` is ``additionalProperties`` (or a no-op
    next to one), and likewise for items.  Branching applicators and ``contains`` (which evaluates
    the items it matches) raise :class:`SchemaError`.
    """
    out = dict(schema)
    for key in UNEVALUATED:
        if key not in out:
            continue
        clash = [k for k in _BRANCHING if k in out] + (["contains"] if key == "unevaluatedItems" and "contains" in out
                                                       else [])
        if clash:
            raise SchemaError(f"{key} next to {clash[0]!r} is not supported (what is evaluated depends on the "
                              "branch that validates)", ctx.child(key).pointer, keyword=key)
    if "unevaluatedProperties" in out:
        value = out.pop("unevaluatedProperties")
        out.setdefault("additionalProperties", value)
    if "unevaluatedItems" in out:
        value = out.pop("unevaluatedItems")
        if ctx.draft7 and isinstance(out.get("items"), list):
            out.setdefault("additionalItems", value)
        else:
            out.setdefault("items", value)
    return out
