"""Objects and arrays: the container part of the schema compiler.

Objects are emitted in schema order with *lanes*: the number of properties
written so far decides whether a comma comes next and which counts
``minProperties``/``maxProperties`` still allow.  Without those keywords two
lanes suffice ("none yet" / "some") and every property value is inlined once.

Arrays use a counted loop for the repeated element, so ``maxItems`` costs
nothing in NFA size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from exl2_enforcer.compile.charset import ANY_CP, CodePointSet, cp_minus, json_char_fragment
from exl2_enforcer.compile.nfa import Frag
from exl2_enforcer.compile.schema.keywords import apply_pattern_properties, apply_property_names, compile_contains
from exl2_enforcer.compile.schema.terms import in_place_below
from exl2_enforcer.errors import SchemaError

if TYPE_CHECKING:
    from exl2_enforcer.compile.schema.compiler import Ctx, SchemaCompiler


def _entries(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx", extra: Any,
             explicit_extra: bool = True) -> list[tuple[str, Any, "Ctx", bool]]:
    """Declared properties in schema order, then required names that are not declared."""
    props = schema.get("properties", {})
    required = list(dict.fromkeys(schema.get("required", [])))
    out = [(name, sub, ctx.child("properties", name), name in required) for name, sub in props.items()]
    for name in required:
        if name not in props:
            if extra is False and explicit_extra:
                raise SchemaError(f"required property {name!r} is not allowed (additionalProperties is false"
                                  " or objects are closed): the object admits no value", ctx.child("required").pointer)
            # a required name is a declared name: closing the object by default must not exclude it
            out.append((name, extra if explicit_extra else True, ctx.child("additionalProperties"), True))
    return out


def compile_object(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Frag:
    """``{ ... }`` with properties in schema order (or any order), bounded by min/maxProperties."""
    entries, extra, min_p, max_p, member_of = _object_plan(c, schema, ctx)
    if c.options.property_order == "any":
        return _any_order_object(c, ctx, entries, extra, min_p, max_p, member_of)
    return _schema_order_object(c, ctx, entries, extra, min_p, max_p, member_of)


def object_after_first(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Frag:
    """A schema-order object from just after its first member (value and whitespace) to its ``}``.

    For a union that reads the first member once for all its branches
    (:mod:`.discriminated`).  The first member must be required (it is then the first one
    written in every instance); ValueError otherwise.
    """
    entries, extra, min_p, max_p, member_of = _object_plan(c, schema, ctx)
    return _schema_order_object(c, ctx, entries, extra, min_p, max_p, member_of, after_first=True)


def _object_plan(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> tuple[
        list[tuple[str, Any, "Ctx", bool]], Any, int, int | None, Callable[[], Frag]]:
    """What both member orders need: entries, extra members' schema, min/max count, extra member maker."""
    # strict_objects closes objects that name their properties; a free-form object
    # ({"type": "object"} alone) stays open, which is what its author means

    # patternProperties names keys too: under strict_objects it closes the object to them
    closed = c.options.strict_objects and ("properties" in schema or "patternProperties" in schema)
    extra = schema.get("additionalProperties", False if closed else True)
    explicit_extra = "additionalProperties" in schema
    entries_extra = extra
    schema, extras = apply_pattern_properties(c, schema, ctx, extra)
    schema, extra, extras = apply_property_names(c, schema, ctx, extra, extras)
    entries = _entries(c, schema, ctx, entries_extra if extra is not False else False, explicit_extra)
    names = [e[0] for e in entries]
    if extras is not None:
        regions = extras.regions
        extra = True if regions else False  # undeclared members: only through the regions
    else:
        regions = [(lambda: other_key(c, names), extra, ctx.child("additionalProperties"))]

    def member_of() -> Frag:
        return c.nfa.alt([_kv(c, key(), value, vctx) for key, value, vctx in regions])

    min_p = int(schema.get("minProperties", 0))
    max_p = schema.get("maxProperties")
    max_p = None if max_p is None else int(max_p)
    _check_distinct_count(extra, min_p, ctx)
    return entries, extra, min_p, max_p, member_of


def _check_distinct_count(extra: Any, min_p: int, ctx: "Ctx") -> None:
    """Refuse a count of distinct keys that free-form keys could fake.

    ``{"x": 1, "x": 2}`` parses to one member, so with undeclared keys allowed the n-th extra
    key would have to differ from all earlier ones: no finite automaton can check that.
    Declared names are written at most once and never as extras, so they are safe.
    """
    if extra is not False and min_p >= 2:
        raise SchemaError(f"minProperties {min_p} with additional properties cannot be enforced exactly: a key "
                          "written twice would count twice although the object has one member; declare the "
                          "properties (or set additionalProperties to false)", ctx.child("minProperties").pointer,
                          keyword="minProperties")


def _writable(entries: list[tuple[str, Any, "Ctx", bool]], ctx: "Ctx") -> list[tuple[str, Any, "Ctx", bool]]:
    """The entries a member can be written for: a ``false`` property is left out (or, if
    required, the object admits no value)."""
    out = []
    for name, sub, pctx, required in entries:
        if sub is False:
            if required:
                # said at the object's `required`: an anyOf/oneOf branch that admits no value is left out
                raise SchemaError(f"the object admits no value: its required property {name!r} has the schema"
                                  " false", ctx.child("required").pointer, keyword="required")
            continue
        out.append((name, sub, pctx, required))
    return out


class _Members:
    """Counting lanes of schema-order objects: ``k`` members written, capped at ``cap``."""

    def __init__(self, c: "SchemaCompiler", min_p: int, max_p: int | None, close: Frag) -> None:
        self.c, self.nfa, self.min_p, self.max_p, self.close = c, c.nfa, min_p, max_p, close
        self.cap = max_p if max_p is not None else max(min_p, 1)

    def can_add(self, k: int) -> bool:
        """Whether a member may still be written after ``k``."""
        return self.max_p is None or k < self.max_p

    def join(self, a0: int | None, after_comma: dict[int, int]) -> dict[int, int]:
        """Join states, by count after the next member, from ``a0`` and the after-comma states."""
        targets: dict[int, int]
        nfa, targets = self.nfa, {}
        if a0 is not None and self.can_add(0):
            nfa.epsilon(a0, targets.setdefault(min(1, self.cap), nfa.state()))
        for k, q in after_comma.items():
            nfa.epsilon(q, targets.setdefault(min(k + 1, self.cap), nfa.state()))
        return targets

    def after_member(self, states: dict[int, int], after_comma: dict[int, int], *,
                     may_close: bool, may_add: bool) -> bool:
        """Give each after-member state its close and its one ", ws"; True if some state closes."""
        nfa, closable = self.nfa, False
        for k, q in states.items():
            if may_close and k >= self.min_p:
                nfa.epsilon(q, self.close.start)
                closable = True
            if may_add and self.can_add(k):
                comma = nfa.seq([nfa.literal(b","), self.c.ws()])
                nfa.epsilon(q, comma.start)
                nfa.epsilon(comma.end, after_comma.setdefault(k, nfa.state()))
        return closable


def _schema_order_object(c: "SchemaCompiler", ctx: "Ctx", entries: list[tuple[str, Any, "Ctx", bool]], extra: Any,
                         min_p: int, max_p: int | None, member_of: Callable[[], Frag], *,
                         after_first: bool = False) -> Frag:
    """Members in schema order (``after_first``: from just after the first one, see :func:`object_after_first`).

    States per position and count ``k`` of members written: ``a0`` (nothing
    written yet), ``A[k]`` (after a member and its whitespace: a comma or the
    close may follow) and ``B[k]`` (after ", ws": a member must follow; optional
    members are skipped here).  Each ``A`` state has exactly one comma, so a
    DFA state never holds two whitespace runs at once.
    """
    nfa = c.nfa
    props = _writable(entries, ctx)
    n = len(props)
    optional_from = [all(not p[3] for p in props[i:]) for i in range(n + 1)]
    lanes = _Members(c, min_p, max_p, nfa.literal(b"}"))
    closable = False
    a0: int | None
    A: dict[int, int] = {}
    B: dict[int, int] = {}
    if after_first:
        if not props or not props[0][3]:
            raise ValueError("object_after_first needs a required first member")
        entry = nfa.state()
        a0, A, first = None, {min(1, lanes.cap): entry}, 1
    else:
        open_ = nfa.seq([nfa.literal(b"{"), c.ws()])
        entry, a0, first = open_.start, open_.end, 0
    for i in range(first, n):
        name, sub, pctx, required = props[i]
        closable |= lanes.after_member(A, B, may_close=optional_from[i], may_add=True)
        new_a: dict[int, int] = {}
        _wire_kv(c, lanes.join(a0, B), new_a, lambda n_=name, s=sub, p=pctx, r=required: _member(c, ctx, n_, s, p, r))
        new_b: dict[int, int] = {}
        new_a0 = None
        if not required:
            if a0 is not None:
                new_a0 = nfa.state()
                nfa.epsilon(a0, new_a0)
            for k, q in B.items():
                nfa.epsilon(q, new_b.setdefault(k, nfa.state()))
        if not new_a and new_a0 is None and not new_b:
            raise SchemaError(f"maxProperties {max_p} is below the number of required properties:"
                              " the object admits no value", ctx.pointer)
        a0, A, B = new_a0, new_a, new_b
    closable |= lanes.after_member(A, B, may_close=True, may_add=extra is not False)
    if a0 is not None and min_p == 0:
        nfa.epsilon(a0, lanes.close.start)
        closable = True
    if extra is not False:
        closable |= _extras(c, member_of, a0, B, lanes)
    if not closable:
        raise SchemaError(f"minProperties {min_p} cannot be reached with the allowed properties:"
                          " the object admits no value", ctx.pointer)
    return Frag(entry, lanes.close.end)


def _extras(c: "SchemaCompiler", member_of: Callable[[], Frag], a0: int | None,
            B: dict[int, int], lanes: _Members) -> bool:
    """Further members whose keys are not declared names, any number (within maxProperties)."""
    nfa = c.nfa
    after_comma = {k: B.get(k) or nfa.state() for k in range(1, lanes.cap + 1) if lanes.can_add(k)}
    members: dict[int, int] = {}
    _wire_kv(c, lanes.join(a0, after_comma), members, member_of)
    return lanes.after_member(members, after_comma, may_close=True, may_add=True)


def _any_order_object(c: "SchemaCompiler", ctx: "Ctx", entries: list[tuple[str, Any, "Ctx", bool]], extra: Any,
                      min_p: int, max_p: int | None, member_of: Callable[[], Frag]) -> Frag:
    """``{ ... }`` whose members may come in any order (each declared one at most once)."""
    nfa = c.nfa
    items = [(_member(c, ctx, name, sub, pctx, required), required)
             for name, sub, pctx, required in _writable(entries, ctx)]
    member = None
    if extra is not False:
        member = member_of()
    if max_p is not None and sum(1 for _f, r in items if r) > max_p:
        raise SchemaError(f"maxProperties {max_p} is below the number of required properties:"
                          " the object admits no value", ctx.pointer)
    if min_p > len(items) and member is None:
        raise SchemaError(f"minProperties {min_p} cannot be reached with the allowed properties:"
                          " the object admits no value", ctx.pointer)
    comma = nfa.seq([nfa.literal(b","), c.ws()])
    body = nfa.any_order(items, member, comma, min_p, max_p)
    return nfa.seq([nfa.literal(b"{"), c.ws(), body, nfa.literal(b"}")])


def _wire_kv(c: "SchemaCompiler", targets: dict[int, int], dest: dict[int, int], make: Callable[..., Frag]) -> None:
    """Connect each join state through a key/value pair to the lane of its count.

    One join: the pair is inlined.  Several (counted lanes): a shared callee
    avoids one copy of the value per lane.
    """
    nfa = c.nfa
    machine: Frag | None = None
    if len(targets) > 1:
        body = make()
        machine = Frag(nfa.state(), nfa.state())
        nfa.epsilon(machine.start, body.start)
        nfa.epsilon(body.end, machine.end)
    for k2, j in targets.items():
        frag = make() if machine is None else nfa.call(machine, weight=0)
        nfa.epsilon(j, frag.start)
        nfa.epsilon(frag.end, dest.setdefault(k2, nfa.state()))


def _member(c: "SchemaCompiler", ctx: "Ctx", name: str, sub: Any, pctx: "Ctx", required: bool) -> Frag:
    """A declared member's ``"name": value``.  When a required member's own schema admits no
    value, the object admits none: said at its ``required``, so that an ``anyOf``/``oneOf`` branch
    (a tool whose name a sibling ``enum`` excludes) is left out instead of refusing the union."""
    try:
        return _kv(c, c.string_literal(name), sub, pctx)
    except SchemaError as e:
        if not required or "admits no value" not in e.message or not in_place_below(e.pointer, pctx.pointer):
            raise  # an optional member, or a place deeper inside the value: stays as it is
        raise SchemaError(f"the object admits no value: its required property {name!r} admits none ({e.message})",
                          ctx.child("required").pointer, keyword="required") from None


def _kv(c: "SchemaCompiler", key: Frag, sub: Any, pctx: "Ctx") -> Frag:
    """``"key": value`` and the whitespace after it (one run, so "," and "}" share it)."""
    return c.nfa.seq([key, c.punct(b":"), c.compile(sub, pctx), c.ws()])


def other_key(c: "SchemaCompiler", names: list[str]) -> Frag:
    """A JSON string key whose decoded value is none of ``names``.

    Walks a trie of the names by code point; leaving the trie leads to free
    text.  With canonical escapes a name spelled with escapes is refused
    entirely, which is sound.
    """
    nfa = c.nfa
    if not names:
        return nfa.seq([nfa.literal(b'"'), c.plain_string_body(0, None), nfa.literal(b'"')])
    trie: dict[str, Any] = {}
    for n in names:
        node = trie
        for ch in n:
            node = node.setdefault(ch, {})
        node[""] = {}
    end = nfa.state()
    free = nfa.seq([c.plain_string_body(0, None), nfa.literal(b'"')])
    nfa.epsilon(free.end, end)

    start = nfa.literal(b'"')
    todo = [(trie, start.end)]  # a stack, not recursion: a name may be thousands of characters long
    while todo:
        node, state = todo.pop()
        chars = [ch for ch in node if ch]
        if "" not in node:
            close = nfa.literal(b'"')
            nfa.epsilon(state, close.start)
            nfa.epsilon(close.end, end)
        others = cp_minus(ANY_CP, tuple(sorted((ord(ch), ord(ch)) for ch in chars)))
        step = json_char_fragment(nfa, _canon(others))
        nfa.epsilon(state, step.start)
        nfa.epsilon(step.end, free.start)
        for ch in chars:
            inner = c.char_literal(ch)
            nxt = nfa.state()
            nfa.epsilon(state, inner.start)
            nfa.epsilon(inner.end, nxt)
            todo.append((node[ch], nxt))
    return Frag(start.start, end)


def _canon(cps: CodePointSet) -> CodePointSet:
    merged: list[tuple[int, int]] = []
    for lo, hi in cps:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def compile_array(c: "SchemaCompiler", schema: dict[str, Any], ctx: "Ctx") -> Frag:
    """``[ ... ]`` with prefixItems, items (or draft 7 items/additionalItems), min/maxItems."""

    if "contains" in schema:
        return compile_contains(c, schema, ctx)
    nfa = c.nfa
    if ctx.draft7 and isinstance(schema.get("items"), list):
        prefix, rest, rest_key = schema["items"], schema.get("additionalItems", True), "additionalItems"
        pkey = "items"
    else:
        prefix, rest, rest_key = schema.get("prefixItems", []), schema.get("items", True), "items"
        pkey = "prefixItems"
    min_i = int(schema.get("minItems", 0))
    max_i = schema.get("maxItems")
    max_i = None if max_i is None else int(max_i)
    if rest is False:
        max_i = len(prefix) if max_i is None else min(max_i, len(prefix))
    if max_i is not None and max_i < min_i:
        raise SchemaError(f"the array admits no value (at most {max_i} items but minItems {min_i})", ctx.pointer)
    # every item is followed by one whitespace run, then ", ws" or "]"
    open_ = nfa.seq([nfa.literal(b"["), c.ws()])
    close = nfa.literal(b"]")

    def close_from(q: int, _k: int) -> None:
        nfa.epsilon(q, close.start)

    q = open_.end
    n_prefix = len(prefix) if max_i is None else min(len(prefix), max_i)
    for k in range(n_prefix):
        if k >= min_i:
            close_from(q, k)
        item = nfa.seq([c.compile(prefix[k], ctx.child(pkey, k)), c.ws()])
        parts = [item] if k == 0 else [nfa.literal(b","), c.ws(), item]
        f = nfa.seq(parts)
        nfa.epsilon(q, f.start)
        q = f.end
    k = n_prefix
    more_hi = None if max_i is None else max_i - k
    if more_hi == 0 or rest is False or k < len(prefix):
        if k < min_i:
            raise SchemaError("the array admits no value (minItems cannot be reached)", ctx.pointer)
        close_from(q, k)
        return Frag(open_.start, close.end)
    rctx = ctx.child(rest_key)
    more_lo = max(0, min_i - k)
    make_item = _shared_item(c, rest, rctx) if k == 0 and more_hi != 1 else None
    if k == 0:
        # the first element has no comma: inline it, loop over ", item" for the rest
        if more_lo == 0:
            close_from(q, 0)
        first = nfa.seq([make_item() if make_item else c.compile(rest, rctx), c.ws()])
        nfa.epsilon(q, first.start)
        q, more_lo = first.end, max(0, more_lo - 1)
        more_hi = None if more_hi is None else more_hi - 1
        k = 1
        if more_hi == 0:
            close_from(q, k)
            return Frag(open_.start, close.end)
    body = nfa.seq([nfa.literal(b","), c.ws(), make_item() if make_item else c.compile(rest, rctx), c.ws()])
    loop = nfa.loop(body, more_lo, more_hi)
    nfa.epsilon(q, loop.start)
    nfa.epsilon(loop.end, close.start)
    return Frag(open_.start, close.end)


def _shared_item(c: "SchemaCompiler", rest: Any, rctx: "Ctx") -> Callable[[], Frag]:
    """A maker of calls into one machine for the item schema: the first item and the loop body
    use it twice, and compiling it twice per level would double the NFA at every nesting level."""
    nfa = c.nfa
    body = c.compile(rest, rctx)
    machine = Frag(nfa.state(), nfa.state())
    nfa.epsilon(machine.start, body.start)
    nfa.epsilon(body.end, machine.end)
    return lambda: nfa.call(machine, weight=0)
