"""Discriminated unions: ``anyOf``/``oneOf`` of objects told apart by their first member's value.

A function-calling agent's tool list is an ``anyOf`` of n objects ``{"name": {"const": "tool_i"},
"arguments": {...}}``.  Compiled branch by branch, every DFA state until the name is read holds
one configuration per tool, and each configuration costs its share of every row built: with 200
tools the slowest mask took 19 ms where xgrammar and llguidance take 0.5 ms.

When every branch is a schema-order object whose first member is the same required property
``P``, listed (``const``/``enum``) with string, boolean or null values that no two branches share,
the union is compiled once as::

    { ws "P" ws : ws  <one byte trie of every branch's value spellings>  -> branch i's members after P

so that until the value is read the DFA state holds one configuration, and while it is read one
per trie node.  The language is the branch-by-branch union's: each value spelling leads to the
one branch that lists it, and that branch's members after ``P`` come from the object compiler
itself (:func:`~.containers.object_after_first`).  Branches written as a bare ``$ref`` are followed.
Anything else (another first member, a number value, ``any`` property order, other object
keywords) keeps the branch-by-branch union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.containers import object_after_first
from exl2_enforcer.compile.schema.drafts import normalize_keywords
from exl2_enforcer.compile.schema.terms import ANNOTATIONS, OPENAPI_ANNOTATIONS
from exl2_enforcer.compile.schema.values import json_equal
from exl2_enforcer.errors import SchemaError

if TYPE_CHECKING:
    from exl2_enforcer.compile.schema.compiler import Ctx, SchemaCompiler

#: the keywords a branch object may have for the union to be read through its first member
OBJECT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties"})
#: fewest branches for which the shared prefix is worth building
MIN_BRANCHES = 3
#: most ``$ref`` hops followed from a branch to its object
MAX_REF_HOPS = 8
_JSON_TYPE = {str: "string", bool: "boolean", type(None): "null"}
#: keywords that say nothing about the values (a pydantic union's ``discriminator`` included)
_SILENT = (ANNOTATIONS | OPENAPI_ANNOTATIONS) - {"$id"}


def discriminated_union(c: "SchemaCompiler", branches: list[tuple[Any, "Ctx"]]) -> Frag | None:
    """The union of ``branches`` ((schema, context) pairs) read through a shared first member,
    or None when they do not have that shape.  Branches are disjoint when it applies, so the
    result also enforces ``oneOf``.  Raises only what compiling the branches raises."""
    if c.options.property_order != "schema" or len(branches) < MIN_BRANCHES:
        return None
    objects = []
    for schema, bctx in branches:
        got = _object_branch(c, schema, bctx)
        if got is None:
            return None
        objects.append(got)
    firsts = {_first_member(schema) for schema, _ctx in objects}
    name = firsts.pop() if len(firsts) == 1 else None
    if name is None:
        return None
    words: dict[bytes, int] = {}
    kept: list[tuple[dict[str, Any], "Ctx"]] = []
    for schema, bctx in objects:
        spellings = _spellings(c, schema["properties"][name], bctx.child("properties", name))
        if spellings is None:
            return None
        if not spellings:
            continue  # its first member admits no value: neither does the branch
        for word in spellings:
            if words.setdefault(word, len(kept)) != len(kept):
                return None  # two branches list one value: not told apart by it
        kept.append((schema, bctx))
    if not kept:
        return None  # the branch-by-branch path says why nothing is admitted
    return _build(c, name, words, kept)


def _build(c: "SchemaCompiler", name: str, words: dict[bytes, int],
           objects: list[tuple[dict[str, Any], "Ctx"]]) -> Frag | None:
    nfa = c.nfa
    rests = []
    for schema, bctx in objects:
        # the checks compile() makes of every subschema it compiles (here, once the union applies)
        c.check_keywords(schema, bctx)
        c.check_keywords(normalize_keywords(schema["properties"][name], bctx.draft, drop_foreign=False),
                         bctx.child("properties", name))
        try:
            rests.append(object_after_first(c, schema, bctx))
        except SchemaError as e:
            if "admits no value" in e.message:
                return None  # the branch-by-branch union leaves such a branch out, with its own rules
            raise
    prefix = nfa.seq([nfa.literal(b"{"), c.ws(), c.string_literal(name), c.punct(b":")])
    exits = [nfa.state() for _ in objects]
    nfa.epsilon(prefix.end, _byte_trie(nfa, words, exits))
    end = nfa.state()
    for exit_, rest in zip(exits, rests):
        ws = c.ws()  # the whitespace after the value, as a member's own (containers._kv)
        nfa.epsilon(exit_, ws.start)
        nfa.epsilon(ws.end, rest.start)
        nfa.epsilon(rest.end, end)
    return c.nest(Frag(prefix.start, end))


def _byte_trie(nfa: NFA, words: dict[bytes, int], exits: list[int]) -> int:
    """Entry of a deterministic byte trie of ``words``; a word's last state moves to ``exits[its branch]``."""
    start = nfa.state()
    children: dict[int, dict[int, int]] = {}
    for word, branch in words.items():
        q = start
        for b in word:
            kids = children.setdefault(q, {})
            nxt = kids.get(b)
            if nxt is None:
                nxt = kids[b] = nfa.state()
                nfa.edge(q, b, b, nxt)
            q = nxt
        nfa.epsilon(q, exits[branch])
    return start


def _object_branch(c: "SchemaCompiler", schema: Any, ctx: "Ctx") -> tuple[dict[str, Any], "Ctx"] | None:
    """The branch's object schema (after bare ``$ref`` hops), if it has only plain object keywords."""
    for _hop in range(MAX_REF_HOPS):
        if not isinstance(schema, dict):
            return None
        schema = normalize_keywords(schema, ctx.draft, drop_foreign=False)
        if "$id" in schema:
            return None  # a new base URI for the references inside: left to the general path
        if set(schema) - _SILENT != {"$ref"}:
            break
        schema, ctx = c.resolve(schema["$ref"], ctx)
    else:
        return None
    if not isinstance(schema, dict) or schema.get("type") != "object" or set(schema) - _SILENT - OBJECT_KEYWORDS:
        return None
    if not isinstance(schema.get("properties"), dict) or not isinstance(schema.get("required", []), list):
        return None
    return schema, ctx


def _first_member(schema: dict[str, Any]) -> str | None:
    """The first declared property, if it is required (then every instance writes it first)."""
    props = schema["properties"]
    for name, sub in props.items():
        if sub is False:
            continue  # never written (a required false property makes the branch empty)
        return name if name in schema.get("required", []) else None
    return None


def _spellings(c: "SchemaCompiler", sub: Any, ctx: "Ctx") -> list[bytes] | None:
    """The only byte strings ``sub`` admits (its listed values' one spelling each), or None."""
    if not isinstance(sub, dict):
        return None
    sub = normalize_keywords(sub, ctx.draft, drop_foreign=False)
    keys = set(sub) - _SILENT
    if "$id" in sub or keys - {"const", "enum", "type"} or not keys & {"const", "enum"}:
        return None
    values = sub.get("enum", [])
    if not isinstance(values, list):
        return None
    if "const" in sub:  # with an enum too (a tool list restricted to some names): the const if listed
        values = [sub["const"]] if "enum" not in sub or any(json_equal(sub["const"], v) for v in values) else []
    types = sub.get("type")
    allowed = {types} if isinstance(types, str) else set(types) if isinstance(types, list) else None
    out = []
    for v in values:
        kind = _JSON_TYPE.get(type(v))
        if kind is None or (allowed is not None and kind not in allowed):
            return None  # numbers have many spellings; a value of another type is not admitted
        try:
            spelled = c.fixed_spelling(v)
        except UnicodeEncodeError:
            return None  # a lone surrogate: the branch-by-branch path refuses it, naming its place
        if spelled is None:
            return None
        out.append(spelled)
    return list(dict.fromkeys(out))
