"""``allOf`` by merging, ``$ref`` with siblings, and the ``oneOf`` disjointness proof.

An automaton cannot intersect two arbitrary sub-languages cheaply, so
``allOf`` is compiled by merging its schemas keyword by keyword into one
schema.  Keywords that cannot be merged exactly raise :class:`SchemaError`
naming the pointer; nothing is silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from exl2_enforcer.compile.schema.terms import ANNOTATIONS, JSON_VALUE_TYPES, OPENAPI_ANNOTATIONS
from exl2_enforcer.compile.schema.values import base_uri, json_equal, json_key
from exl2_enforcer.errors import RegexError, SchemaError, UnknownFormatError

if TYPE_CHECKING:
    from exl2_enforcer.compile.schema.compiler import Ctx, SchemaCompiler

_MAX_OF = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_MIN_OF = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
#: annotations: two branches that differ in one still describe the same values (the first is kept);
#: the compiler's list plus the OpenAPI spellings real-world schemas carry
_IGNORED = ANNOTATIONS | OPENAPI_ANNOTATIONS | frozenset({"id"})


def expand_ref(schema: Any, ctx: "Ctx", c: "SchemaCompiler") -> Any:
    """Replace a schema that is only a ``$ref`` (plus annotations) by its target."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in _IGNORED}
        target, tctx = c.resolve(schema["$ref"], ctx)
        if base_uri(tctx.resolver) != base_uri(ctx.resolver) and _has_relative_refs(target):
            raise SchemaError("merging a $ref target from another document is not supported",
                              ctx.child("$ref").pointer, keyword="$ref")
        schema = _merge_ref_siblings(schema, rest, target, ctx, c) if rest else target
        seen += 1
        if seen > 64:
            raise SchemaError("$ref chain does not end", ctx.pointer, keyword="$ref")
    return schema


def _merge_ref_siblings(schema: dict[str, Any], rest: dict[str, Any], target: Any, ctx: "Ctx",
                        c: "SchemaCompiler") -> Any:
    """``rest`` (the siblings of ``schema``'s ``$ref``) merged into ``target``; raises
    :class:`SchemaError` when that merge meets ``schema`` again (``{"$ref": "#", "type": ...}``
    at the root): it would unfold forever."""
    with c.entered(c.expanding, schema, ctx, "a $ref with sibling keywords reaches itself again while its siblings"
                   " are merged into its target, so the merge never ends", "$ref"):
        return merge_pair(rest, target, ctx, c, in_place=True)


def _has_relative_refs(schema: Any) -> bool:
    if isinstance(schema, dict):
        return any(k == "$ref" or _has_relative_refs(v) for k, v in schema.items())
    if isinstance(schema, list):
        return any(_has_relative_refs(v) for v in schema)
    return False


def merge_all_of(schema: dict[str, Any], ctx: "Ctx", c: "SchemaCompiler") -> Any:
    """Fold ``allOf`` into its parent schema.

    Raises :class:`SchemaError` at the first pointer of the cycle when an ``allOf``
    reaches itself again through ``$ref`` while merging: that recursion stays at
    one instance location, consumes no input, and would never end.
    """
    active = [ptr for key, ptr in c.merging if key == id(schema)]
    if active:
        raise SchemaError("allOf reaches itself through $ref without entering an object or array"
                          " (recursion that consumes no input)", active[0], keyword="allOf")
    if len(c.merging) >= MAX_MERGE_NESTING:
        # a cycle whose merged schemas are new objects each round, or a chain that ends but is this
        # long: told apart only by going on, which costs a Python frame per link
        raise SchemaError(f"allOf merges nest more than {MAX_MERGE_NESTING} deep through $ref without entering"
                          " an object or array: a cycle (recursion that consumes no input) or a chain of"
                          " allOf this long, which is not supported either", ctx.pointer, keyword="allOf")
    c.merging.append((id(schema), ctx.pointer))
    try:
        merged: Any = {k: v for k, v in schema.items() if k != "allOf"}
        branches = schema["allOf"]
        for i, branch in enumerate(branches):
            bctx = ctx.child("allOf", i)
            branch = expand_ref(branch, bctx, c)
            if _unevaluated(branch) and (len(branches) > 1 or _nontrivial(merged)):
                # a branch's unevaluated* sees only that branch's evaluations, never its siblings'
                raise SchemaError("unevaluatedProperties/unevaluatedItems inside an allOf branch with siblings is "
                                  "not supported", bctx.pointer, keyword="allOf")
            merged = merge_pair(merged, branch, bctx, c, in_place=True)
    finally:
        c.merging.pop()
    return merged


#: nested allOf merges (through $ref) before a schema is refused as a merge cycle
MAX_MERGE_NESTING = 200


def _unevaluated(x: Any) -> bool:
    return isinstance(x, dict) and ("unevaluatedProperties" in x or "unevaluatedItems" in x)


def _nontrivial(x: Any) -> bool:
    return x is False or (isinstance(x, dict) and any(k not in _IGNORED for k in x))


def merge_pair(a: Any, b: Any, ctx: "Ctx", c: "SchemaCompiler", in_place: bool = False) -> Any:
    """One schema whose instances are exactly those of both ``a`` and ``b``.

    ``in_place``: ``b`` is an in-place applicator of ``a`` (an ``allOf`` branch or ``$ref``
    target of it), so ``a``'s ``unevaluated*`` may see ``b``'s evaluations; elsewhere a side with
    ``unevaluated*`` merged with a non-trivial other side is refused.
    """
    if a is True or a == {}:
        return b  # unexpanded: a recursive $ref is followed when compiled, not unfolded here
    if b is True or b == {}:
        return a
    a, b = expand_ref(a, ctx, c), expand_ref(b, ctx, c)
    if a is True or a == {}:
        return b
    if b is True or b == {}:
        return a
    if a is False or b is False:
        return False
    if "allOf" in a:
        a = merge_all_of(a, ctx, c)
    if "allOf" in b:
        b = merge_all_of(b, ctx, c)
    if isinstance(a, bool) or isinstance(b, bool):
        return merge_pair(a, b, ctx, c)
    # if/then/else pair up within one schema only: resolve each side's before merging
    a, b = _own_conditional(a, ctx, c), _own_conditional(b, ctx, c)
    for key in ("unevaluatedProperties", "unevaluatedItems"):
        # b's unevaluated* sees only b's own evaluations; merged, it would see a's as well (and
        # a's sees b's only when b is applied in place)
        if (key in b and _nontrivial(a)) or (key in a and not in_place and _nontrivial(b)):
            raise SchemaError(f"{key} merged with a schema it does not see is not supported", ctx.pointer,
                              keyword=key)
    out = {k: v for k, v in a.items() if k not in _MEMBER_KEYS}
    for key, bv in b.items():
        if key in _MEMBER_KEYS:
            continue
        if key not in out or key in _IGNORED:
            out.setdefault(key, bv)
            continue
        out[key] = _merge_keyword(key, out[key], bv, a, b, ctx, c)
    _merge_members(out, a, b, ctx, c)
    _merge_positions(out, a, b, ctx, c)
    return out


def _own_conditional(x: dict[str, Any], ctx: "Ctx", c: "SchemaCompiler") -> dict[str, Any]:
    if "contains" not in x and ("minContains" in x or "maxContains" in x):
        x = {k: v for k, v in x.items() if k not in ("minContains", "maxContains")}  # no-ops alone
    if not any(k in x for k in ("if", "then", "else")):
        return x
    return cast(dict[str, Any], c.rewrite_conditional(x, ctx))


#: keywords whose meaning depends on each other within one schema (merged together)
_MEMBER_KEYS = frozenset({"properties", "additionalProperties", "prefixItems", "items", "additionalItems"})


def _merge_members(out: dict[str, Any], a: dict[str, Any], b: dict[str, Any], ctx: "Ctx", c: "SchemaCompiler") -> None:
    """Object members: each side constrains a name by its ``properties`` entry, else its
    ``additionalProperties``; the merge keeps both constraints for every name."""
    if not any(k in x for x in (a, b) for k in ("properties", "additionalProperties")):
        return
    pa, pb = a.get("properties", {}), b.get("properties", {})
    xa, xb = a.get("additionalProperties", True), b.get("additionalProperties", True)
    qa, qb = _patterns(a), _patterns(b)
    for q, q_other, x_other in ((qa, qb, xb), (qb, qa, xa)):
        # the merged patternProperties (kept by the caller) would exempt their names from the other
        # side's additionalProperties, which does constrain them there
        if q and q != q_other and not (x_other is True or x_other == {}):
            raise SchemaError("additionalProperties merged with patternProperties it does not see is not supported "
                              "exactly", ctx.child("patternProperties").pointer, keyword="patternProperties")
    names = list(pa) + [n for n in pb if n not in pa]
    if names:
        # a side's additionalProperties applies to a name it neither declares nor matches by a
        # pattern; a matched name is constrained by the patterns, which stay in the merged schema
        fa, fb = _undeclared(qa, xa, ctx), _undeclared(qb, xb, ctx)
        out["properties"] = {n: _merge_member(pa[n] if n in pa else fa(n), pb[n] if n in pb else fb(n),
                                              ctx.child("properties", n), c) for n in names}
    if "additionalProperties" in a or "additionalProperties" in b:
        out["additionalProperties"] = _merge_member(xa, xb, ctx.child("additionalProperties"), c)


def _merge_member(a: Any, b: Any, ctx: "Ctx", c: "SchemaCompiler") -> Any:
    """The merge of two schemas; ``false`` where they share no value.  For one member the object then
    cannot hold that member (it still admits values unless the member is required, which the object's
    compile says at its ``required``), so an if-branch or anyOf branch is not dropped whole."""
    try:
        return merge_pair(a, b, ctx, c)
    except SchemaError as e:
        if "admits no value" not in e.message:
            raise
        return False


def _patterns(x: dict[str, Any]) -> dict[str, Any]:
    q = x.get("patternProperties")
    return q if isinstance(q, dict) else {}


def _undeclared(patterns: dict[str, Any], extra: Any, ctx: "Ctx") -> Callable[[str], Any]:
    """What a side with ``patterns`` and additionalProperties ``extra`` asks of a name it does not declare."""
    if not patterns or extra is True or extra == {}:
        return lambda name: extra
    from exl2_enforcer.compile.schema.keywords import _pattern_matcher  # keywords imports this module

    where = ctx.child("patternProperties")
    matchers = [_pattern_matcher(p, where.child(p)) for p in patterns]
    return lambda name: True if any(m(name) for m in matchers) else extra


def _positions(x: dict[str, Any], draft7: bool) -> tuple[list[Any], Any]:
    """(per-position schemas, schema of every later item) in either draft's spelling."""
    if draft7 and isinstance(x.get("items"), list):
        return list(x["items"]), x.get("additionalItems", True)
    if draft7:
        return [], x.get("items", True)
    return list(x.get("prefixItems", [])), x.get("items", True)


def _merge_positions(out: dict[str, Any], a: dict[str, Any], b: dict[str, Any], ctx: "Ctx",
                     c: "SchemaCompiler") -> None:
    """Array items: position by position, each side's prefix schema or its rest schema."""
    if not any(k in x for x in (a, b) for k in ("prefixItems", "items", "additionalItems")):
        return
    (pa, ra), (pb, rb) = _positions(a, ctx.draft7), _positions(b, ctx.draft7)
    n = max(len(pa), len(pb))
    prefix = [merge_pair(pa[i] if i < len(pa) else ra, pb[i] if i < len(pb) else rb, ctx.child("items", i), c)
              for i in range(n)]
    rest = merge_pair(ra, rb, ctx.child("items"), c)
    # the rest schema is written only where a side wrote one: an absent items keyword and an
    # explicit "items": true differ for unevaluatedItems
    rest_key = "additionalItems" if ctx.draft7 and prefix else "items"
    has_rest = any(rest_key in x for x in (a, b)) if not (ctx.draft7 and prefix) else \
        any("additionalItems" in x or ("items" in x and not isinstance(x["items"], list)) for x in (a, b))
    if ctx.draft7 and prefix:
        out["items"] = prefix
    elif prefix:
        out["prefixItems"] = prefix
    if has_rest or rest is not True:
        out[rest_key] = rest


def _merge_keyword(key: str, av: Any, bv: Any, a: dict[str, Any], b: dict[str, Any], ctx: "Ctx",
                   c: "SchemaCompiler") -> Any:
    if key in _MAX_OF:
        return max(av, bv)
    if key in _MIN_OF:
        return min(av, bv)
    if key == "type":
        return _merge_types(av, bv, ctx)
    if key in ("required", "$exl2:notStrings"):  # both: every name is required / excluded
        return list(dict.fromkeys(list(av) + list(bv)))
    if key == "enum":
        keys = {json_key(w) for w in bv}
        return [v for v in av if json_key(v) in keys]
    if key == "const":
        if not json_equal(av, bv):
            raise SchemaError("allOf has two different const values: the schema admits no value", ctx.pointer)
        return av
    if key == "multipleOf" and isinstance(av, int) and isinstance(bv, int):
        return av * bv // math.gcd(av, bv)
    if av == bv:
        return av
    if key in ("anyOf", "oneOf") and isinstance(av, list) and isinstance(bv, list):
        # (a1 | a2) & (b1 | b2) is a1 & (b1 | b2) | a2 & (b1 | b2); for oneOf too: exactly one
        # ai & oneOf(b) holds iff oneOf(b) holds and exactly one ai does.  One branch per ai, so
        # a's branch indexes stay where the user's schema has them
        return [_merge_branch(branch, {key: bv}, ctx.child(key, i), c) for i, branch in enumerate(av)]
    raise SchemaError(f"allOf with two different {key!r} values cannot be merged exactly", ctx.child(key).pointer,
                      keyword=key)


def _merge_branch(branch: Any, other: Any, ctx: "Ctx", c: "SchemaCompiler") -> Any:
    """``branch`` merged with ``other``; ``false`` (a branch that never matches, keeping the
    others' indexes) when the two share no value.  Within the compile budget: lists meeting
    lists multiply their branches."""
    c.tick()
    return _merge_member(branch, other, ctx, c)


def _merge_types(av: Any, bv: Any, ctx: "Ctx") -> Any:
    ta = {av} if isinstance(av, str) else set(av)
    tb = {bv} if isinstance(bv, str) else set(bv)
    if "number" in ta:
        ta.add("integer")
    if "number" in tb:
        tb.add("integer")
    both = ta & tb
    if "number" in both:
        both.discard("integer")
    if not both:
        raise SchemaError("allOf branches have no type in common: the schema admits no value", ctx.pointer)
    return sorted(both)


def _possible_types(schema: Any) -> set[str]:
    all_types = set(JSON_VALUE_TYPES)
    if not isinstance(schema, dict):
        return all_types if schema else set()
    if "const" in schema or "enum" in schema:
        vals = [schema["const"]] if "const" in schema else schema["enum"]
        return {_type_of(v) for v in vals}
    t = schema.get("type")
    if t is None:
        return all_types
    ts = {t} if isinstance(t, str) else set(t)
    return {"number" if x == "integer" else x for x in ts}


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    names: dict[type[Any], str] = {str: "string", dict: "object", list: "array"}
    return names[type(v)]


def _disjoint(a: Any, b: Any, valid: Callable[[Any, Any], bool], closed: bool = False) -> bool:
    """True when no value can satisfy both schemas as written (a sufficient test), or, with ``closed``
    (``strict_objects``: an object schema that names ``properties`` and says nothing of more
    members writes only those), when no value the engine writes for one satisfies the other.

    Validity is always the spec's (objects open unless ``additionalProperties`` is false): the
    output must be valid for the schema as written.  Rules on members decide objects only, so they
    apply when the two schemas share no other type (``required`` holds vacuously for a string).
    """
    common = _possible_types(a) & _possible_types(b)
    if not common:
        return True
    for x, y in ((a, b), (b, a)):
        if isinstance(x, dict) and ("const" in x or "enum" in x):
            vals = [x["const"]] if "const" in x else x["enum"]
            if not any(valid(y, v) for v in vals):
                return True
    if common != {"object"} or not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    pa, pb = a.get("properties", {}), b.get("properties", {})
    if not (isinstance(pa, dict) and isinstance(pb, dict)):
        return False
    ra, rb = set(a.get("required", [])), set(b.get("required", []))
    for name in (ra & rb) & (pa.keys() & pb.keys()):
        if _disjoint(pa[name], pb[name], valid):
            return True
    for x, px, ry in ((a, pa, rb), (b, pb, ra)):
        # (a name patternProperties match is allowed despite additionalProperties: no proof then)
        if x.get("additionalProperties", True) is False and not _patterns(x) and _lacks(px, ry):
            return True
    if closed:
        # pydantic's tagged union with a defaulted tag: each branch requires a member the other
        # does not list, and writes only the members it lists
        return all("properties" in x and x.get("additionalProperties", False) is False and not _patterns(x)
                   and _lacks(px, ry)
                   for x, px, ry in ((a, pa, rb), (b, pb, ra)))
    return False


def _lacks(listed: dict[str, Any], required: set[str]) -> bool:
    """Whether a member of ``required`` is not among the ``listed`` ones (or listed as false)."""
    return any(n not in listed or listed[n] is False for n in required)


def check_disjoint(branches: list[Any], ctxs: list["Ctx"], c: "SchemaCompiler") -> None:
    """Raise unless every pair of ``oneOf`` branches is provably disjoint."""
    expanded = [expand_ref(b, x, c) for b, x in zip(branches, ctxs)]
    where = ctxs[0].pointer.rsplit("/", 1)[0]

    def valid(schema: Any, value: Any) -> bool:
        try:
            return bool(c.validator(schema, ctxs[0], strict_formats=not c.options.lenient).is_valid(value))
        except RegexError:  # a pattern the engine cannot compile: not provably disjoint (and an error later)
            return True
        except UnknownFormatError as e:  # as on a generated string (lenient: an annotation)
            raise SchemaError(f"format {e.name!r} is not supported (supported: {', '.join(e.supported)}); it applies"
                              " to a value another branch lists", where, keyword="format") from None

    for i in range(len(expanded)):
        c.tick()
        for j in range(i + 1, len(expanded)):
            if not _disjoint(expanded[i], expanded[j], valid, c.options.strict_objects):
                optional = _optional_discriminator(expanded[i], expanded[j], valid)
                fix = "make them disjoint (e.g. a const discriminator) or use anyOf" if optional is None else (
                    f"both list {optional!r} with values that tell them apart, but {optional!r} is not required"
                    " in both, and an object without it may match both (pydantic: a Literal field with a"
                    f" default); add {optional!r} to each branch's required, or use anyOf")
                raise SchemaError(f"oneOf branches {i} and {j} may overlap, so 'exactly one' cannot be enforced; {fix}",
                                  ctxs[i].pointer.rsplit("/", 1)[0], keyword="oneOf")


def _optional_discriminator(a: Any, b: Any, valid: Callable[[Any, Any], bool]) -> str | None:
    """A property both branches list with disjoint schemas but do not both require: the
    discriminator a oneOf would be proven by if it were required (for the error's fix)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    pa, pb = a.get("properties", {}), b.get("properties", {})
    if not (isinstance(pa, dict) and isinstance(pb, dict)):
        return None
    both_required = set(a.get("required", [])) & set(b.get("required", []))
    for name in [n for n in pa if n in pb]:  # schema order: the same name on every run
        if name not in both_required and _disjoint(pa[name], pb[name], valid):
            return str(name)
    return None
