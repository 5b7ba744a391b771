"""A compiled NFA is frozen: its per-state edge lists become tuples the garbage collector skips.

A grammar keeps its NFA for as long as it is cached, and two lists per NFA state were most of the
containers a full collection traversed for it.  Checked here: every automaton freezes the NFA it is
built on (and the cached format templates are frozen too), after a collection no per-state container
of a compiled NFA is tracked any more, freezing changes none of the NFA's edges, lazy heads made after
the freeze still work, and adding an edge to a frozen state is refused by name.
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest
from enforcer_oracle import encode, vocab_by_name

from exl2_enforcer.compile.nfa import NFA
from exl2_enforcer.compile.schema import templates
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.engine import native
from exl2_enforcer.grammar import GRAMMAR_CACHE, compile_json_schema
from exl2_enforcer.matcher import Matcher

#: shapes of several compilers: formats (templates), a pattern, recursion through anyOf, an enum,
#: objects in any order, counted arrays
SCHEMA: dict[str, Any] = {
    "$defs": {"node": {"anyOf": [{"type": "integer"},
                                 {"type": "object", "properties": {"kids": {"type": "array", "maxItems": 3,
                                                                            "items": {"$ref": "#/$defs/node"}}}}]}},
    "type": "object",
    "properties": {
        "to": {"type": "string", "format": "email"},
        "host": {"type": "string", "format": "hostname"},
        "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,5}$"},
        "kind": {"enum": ["alpha", "beta", 3, None]},
        "tree": {"$ref": "#/$defs/node"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 4},
    },
    "required": ["to", "kind"],
}


def _tracked_containers(nfa: NFA) -> int:
    return sum(gc.is_tracked(x) for x in nfa.edges) + sum(gc.is_tracked(x) for x in nfa.eps)


@pytest.mark.parametrize("order", ["schema", "any"])
def test_a_compiled_nfa_holds_no_tracked_edge_containers(order: str) -> None:
    nfa, root, _warn = compile_schema(SCHEMA, SchemaOptions(property_order=order))  # type: ignore[arg-type]
    assert not nfa.frozen
    gc.collect()
    before = _tracked_containers(nfa)
    assert before >= len(nfa)  # lists are always tracked: at least one per state
    GRAMMAR_CACHE.clear()
    grammar = compile_json_schema(SCHEMA, vocab_by_name("llama3"), SchemaOptions(property_order=order))  # type: ignore[arg-type]
    frozen = grammar.automaton.nfa
    assert frozen.frozen
    gc.collect()
    gc.collect()  # a tuple of untracked tuples is untracked on the pass after its items
    assert _tracked_containers(frozen) == 0
    # the format templates the compile spliced from are kept frozen for the process
    assert templates._TEMPLATES and all(t.frozen for t, _f in templates._TEMPLATES.values())


def test_freezing_changes_no_edge_and_lazy_heads_still_work() -> None:
    nfa, root, _warn = compile_schema(SCHEMA, SchemaOptions(property_order="any"))
    edges = [list(es) for es in nfa.edges]
    eps = [list(ps) for ps in nfa.eps]
    flat = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
    nfa.freeze()
    nfa.freeze()  # idempotent
    assert [list(es) for es in nfa.edges] == edges and [list(ps) for ps in nfa.eps] == eps
    if flat is not None:  # the extension reads the tuples as it read the lists
        again = native.flatten_nfa(nfa.edges, nfa.eps, len(nfa))
        assert again is not None and all(np.array_equal(a, b) for a, b in zip(flat, again))
    n = len(nfa)
    head = nfa.state()  # a lazy head, as the automaton makes them while masks are computed
    assert head == n and nfa.edges[head] == () and nfa.eps[head] == ()


def test_an_edge_on_a_frozen_state_is_refused_by_name() -> None:
    nfa = NFA()
    a, b = nfa.state(), nfa.state()
    nfa.edge(a, 97, 97, b)
    nfa.epsilon(b, a)
    nfa.freeze()
    with pytest.raises(RuntimeError, match="state 0 is frozen"):
        nfa.edge(a, 98, 98, b)
    with pytest.raises(RuntimeError, match="state 1 is frozen"):
        nfa.epsilon(b, b)
    c = nfa.state()
    with pytest.raises(RuntimeError, match="state 2 is frozen"):
        nfa.edge(c, 97, 97, a)
    assert nfa.edges[a] == ((97, 97, b),) and nfa.eps[b] == (a,)


def test_a_frozen_grammar_forces_its_instances() -> None:
    """The grammar over the frozen NFA takes a valid instance token by token (lazy heads included)."""
    GRAMMAR_CACHE.clear()
    grammar = compile_json_schema(SCHEMA, vocab_by_name("llama3"))
    text = ('{"to": "a.b+c@mail.example.org", "host": "eu-1.example.net", "code": "AB-1234", "kind": 3, '
            '"tree": {"kids": [1, {"kids": []}]}, "tags": ["x", "yy"]}')
    m = Matcher(grammar)
    for tid in encode("llama3", text):
        words = m.packed_mask()
        assert words[tid >> 5] >> (tid & 31) & 1, tid
        m.accept_token(tid)
    assert m.is_accepting()
