"""The automaton without blow-ups: shared stacks, nesting levels for max_depth, no-progress
recursion refused, and the per-grammar memory budget.

Structure, not timing: configuration counts per DFA state and the closure work counter
(``Automaton.closure_work``) stand in for cost; ``jsonschema`` is the validity oracle and
the llama3 tokenizer feeds real tokens.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from enforcer_oracle import bytes_to_id, encode, reference_allowed_ids, token_table, vocab_by_name

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import EnforcerError, SchemaError
from exl2_enforcer.grammar import compile_json_schema, compile_regex_constraint
from exl2_enforcer.matcher import STALE, Matcher

TOK = "llama3"


@pytest.fixture(scope="module")
def vocab():
    return vocab_by_name(TOK)


def tree_schema() -> dict:
    node = {"$ref": "#/$defs/Node"}
    children = {"type": "array", "items": node}
    return {"$defs": {
        "Dir": {"type": "object", "required": ["name", "children"],
                "properties": {"name": {"type": "string"}, "children": children}},
        "Zip": {"type": "object", "required": ["name", "children", "codec"],
                "properties": {"name": {"type": "string"}, "children": children, "codec": {"type": "string"}}},
        "Node": {"anyOf": [{"$ref": "#/$defs/Dir"}, {"$ref": "#/$defs/Zip"}]}},
        "$ref": "#/$defs/Node"}


def tree_text(levels: int, codec_at: int | None = None) -> str:
    """``levels`` nested Dir objects around a leaf; the one at ``codec_at`` is a Zip."""
    inner = '{"name":"leaf","children":[]}'
    for level in reversed(range(levels)):
        codec = ',"codec":"z"' if level == codec_at else ""
        inner = f'{{"name":"d{level}","children":[{inner}]{codec}}}'
    return inner


def chain_schema(k: int, *, defs: bool) -> dict:
    """``L0 = integer``, ``Lk = anyOf[{x: L(k-1), p: integer}, {x: L(k-1), q: string}]`` (closed)."""
    def level(inner: dict) -> dict:
        return {"anyOf": [
            {"type": "object", "properties": {"x": inner, "p": {"type": "integer"}},
             "required": ["x", "p"], "additionalProperties": False},
            {"type": "object", "properties": {"x": inner, "q": {"type": "string"}},
             "required": ["x", "q"], "additionalProperties": False}]}

    if defs:
        out = {"L0": {"type": "integer"}}
        for i in range(1, k + 1):
            out[f"L{i}"] = level({"$ref": f"#/$defs/L{i - 1}"})
        return {"$defs": out, "$ref": f"#/$defs/L{k}"}
    schema: dict = {"type": "integer"}
    for _ in range(k):
        schema = level(schema)
    return schema


def chain_text(k: int) -> str:
    text = "7"
    for i in range(k):
        text = f'{{"x":{text},"p":{i}}}' if i % 2 else f'{{"x":{text},"q":"s{i}"}}'
    return text


def force(g, text: str) -> Matcher:
    """Feed ``text``'s tokens, checking each is in the mask; returns the matcher."""
    m = Matcher(g)
    for tid in encode(TOK, text):
        mask = m.packed_mask()
        assert (int(mask[tid >> 5]) >> (tid & 31)) & 1, f"token {tid} of {text!r} not in the mask"
        m.accept_token(tid)
    return m


def widest_state(g) -> int:
    return max(len(s.configs) for s in g.automaton.states)


def verdict(g, text: str) -> bool:
    """Whether the grammar accepts ``text`` whole, token by token (and byte by byte, which must agree)."""
    m = Matcher(g)
    ok = all(m.try_accept(t) for t in encode(TOK, text)) and m.is_accepting()
    assert ok == g.automaton.matches(text.encode()), text
    return ok


# ----------------------------------------------------------------------------- shared stacks


def test_tree_ambiguity_is_shared_not_doubled(vocab):
    """Each open Dir/Zip level would double the stacks; shared nodes keep states narrow."""
    work = {}
    for levels in (6, 12):
        g = compile_json_schema(tree_schema(), vocab, SchemaOptions(max_depth=2 * levels + 2))
        m = force(g, tree_text(levels))
        assert m.is_accepting()
        # 2**levels stacks under doubling; a handful of configurations when shared
        assert widest_state(g) <= 8
        work[levels] = g.automaton.closure_work
    # twice the nesting: roughly twice the closure work (doubling would give 64x)
    assert work[12] < 4 * work[6]


@pytest.mark.parametrize("defs", [False, True], ids=["inline", "defs"])
def test_chain_ambiguity_is_shared(vocab, defs):
    k = 8 if not defs else 20
    schema = chain_schema(k, defs=defs)
    g = compile_json_schema(schema, vocab, SchemaOptions(max_depth=k))
    text = chain_text(k)
    assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
    assert force(g, text).is_accepting()
    assert widest_state(g) <= 8  # 2**k configurations under doubling


def test_tree_verdicts_match_jsonschema(vocab):
    schema = tree_schema()
    # spec semantics (open objects), so jsonschema is the exact oracle
    g = compile_json_schema(schema, vocab, SchemaOptions(max_depth=16, strict_objects=False))
    check = jsonschema.Draft202012Validator(schema)
    texts = [tree_text(5), tree_text(5, codec_at=2), tree_text(0, codec_at=0),
             '{"name":"a","children":[{"name":"b","children":[],"codec":"c"},{"name":"c","children":[]}]}',
             '{"name":"a"}', '{"name":"a","children":[{"name":"b"}]}',
             '{"name":"a","children":[],"codec":1}', '{"name":"a","children":[{"name":"b","children":[],"codec":2}]}',
             '{"name":"a","children":[],"zip":"c"}']
    for text in texts:
        assert verdict(g, text) == check.is_valid(json.loads(text)), text


def test_masks_exact_on_shared_stacks(vocab):
    """Every mask along a nested tree equals the brute-force reference walk."""
    g = compile_json_schema(tree_schema(), vocab, SchemaOptions(max_depth=12))
    table = token_table(vocab)
    m = Matcher(g)
    for tid in encode(TOK, tree_text(4, codec_at=1)):
        got = vocab_ids(g, m)
        np.testing.assert_array_equal(got, reference_allowed_ids(g, table, m.state))
        m.accept_token(tid)


def vocab_ids(g, m: Matcher) -> np.ndarray:
    return g.index.unpack(m.packed_mask())


# ----------------------------------------------------------------------------- max_depth = nesting levels


def nested_arrays(n: int) -> str:
    return "[" * n + "]" * n


def nested_objects(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n if n else "1"


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_max_depth_counts_free_form_nesting(vocab, depth):
    for schema, make in (({"type": "array", "items": True}, nested_arrays),
                         ({"type": "object", "additionalProperties": True}, nested_objects)):
        g = compile_json_schema(schema, vocab, SchemaOptions(max_depth=depth, max_whitespace=0))
        assert verdict(g, make(depth)), (schema, depth)
        assert not verdict(g, make(depth + 1)), (schema, depth)


def test_max_depth_counts_levels_through_ref_and_anyof(vocab):
    """Node -> anyOf -> Dir costs no level; each object and each array costs one."""
    for depth in (4, 8, 16):
        g = compile_json_schema(tree_schema(), vocab, SchemaOptions(max_depth=depth))
        levels = depth // 2 - 1  # tree_text(n) nests n+1 objects and n+1 arrays
        assert verdict(g, tree_text(levels))
        assert not verdict(g, tree_text(levels + 1))


def test_max_depth_counts_literal_schemas(vocab):
    """A nested (non-recursive) schema nests as its values do; deeper than max_depth is refused."""
    schema: dict = {"type": "integer"}
    for _ in range(5):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    g = compile_json_schema(schema, vocab, SchemaOptions(max_depth=5))
    assert verdict(g, nested_objects(5))
    with pytest.raises(SchemaError, match="max_depth=4"):
        compile_json_schema(schema, vocab, SchemaOptions(max_depth=4))


def test_default_max_depth_allows_sixteen_levels(vocab):
    g = compile_json_schema({"type": "array", "items": True}, vocab)
    assert verdict(g, nested_arrays(16))
    assert not verdict(g, nested_arrays(17))


# ----------------------------------------------------------------------------- no-progress recursion


@pytest.mark.parametrize("schema", [
    {"$defs": {"n": {"allOf": [{"$ref": "#/$defs/n"}]}}, "$ref": "#/$defs/n"},
    {"$defs": {"n": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/n"}]}}, "$ref": "#/$defs/n"},
    {"$defs": {"n": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/m"}]}, "m": {"$ref": "#/$defs/n"}},
     "type": "object", "properties": {"k": {"$ref": "#/$defs/n"}}},
], ids=["allOf-self", "anyOf-self", "through-another-def"])
def test_recursion_without_progress_is_refused_with_pointer(vocab, schema):
    with pytest.raises(SchemaError) as info:
        compile_json_schema(schema, vocab)
    assert info.value.pointer in ("/$defs/n", "/$defs/m")
    assert "consumes no input" in str(info.value)


def test_recursion_through_a_container_is_fine(vocab):
    schema = {"$defs": {"n": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
              "$ref": "#/$defs/n"}
    g = compile_json_schema(schema, vocab, SchemaOptions(max_depth=3))
    assert verdict(g, '[["a",[]],"b"]')
    assert not verdict(g, '[[[["a"]]]]')


# ----------------------------------------------------------------------------- memory budget


def test_memory_budget_bounds_a_long_string(vocab):
    budget = 1 << 20
    schema = {"type": "string", "maxLength": 10**9}
    g = compile_json_schema(schema, vocab, memory_bytes=budget)
    ref = compile_json_schema(schema, vocab)  # default budget: never evicts here
    # one state per token (Automaton.slice_advance) and one shared mask: a long text to fill 1 MiB
    text = json.dumps("word, more words " * 700)
    m, mr = Matcher(g), Matcher(ref)
    for i, tid in enumerate(encode(TOK, text)):
        got = m.packed_mask()
        assert g.retained_bytes() <= budget
        if i % 25 == 0:
            np.testing.assert_array_equal(got, mr.packed_mask())
        m.accept_token(tid)
        mr.accept_token(tid)
        assert g.retained_bytes() <= budget
    assert g.evictions >= 3
    assert ref.evictions == 0
    assert m.is_accepting()
    assert m.history[0] == STALE  # older entries are re-interned only when needed
    m.rollback(3)
    mr.rollback(3)
    np.testing.assert_array_equal(m.packed_mask(), mr.packed_mask())


def test_memory_budget_keeps_forks_and_regex_exact(vocab):
    g = compile_regex_constraint("a.{25}b", vocab, memory_bytes=1 << 20)
    table = token_table(vocab)
    m = Matcher(g)
    for tid in encode(TOK, "a" + "xyz" * 8 + "q"):
        m.accept_token(tid)
        fork = m.fork()
        g.evict()  # as the budget would: every id is renumbered
        np.testing.assert_array_equal(vocab_ids(g, fork), reference_allowed_ids(g, table, fork.state))
    assert m.try_accept(encode(TOK, "b")[0]) and m.is_accepting()


def test_memory_budget_is_validated(vocab):
    with pytest.raises(EnforcerError, match="memory_bytes"):
        compile_json_schema({"type": "string"}, vocab, memory_bytes=1000)


def test_threads_stay_exact_across_evictions(vocab):
    """Matchers on several threads share a grammar whose budget keeps evicting; every mask
    still equals the one of a grammar that never evicts."""
    import threading

    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 10**9}}}
    text = json.dumps({"note": "threads and budgets " * 400})  # one state per token: enough to evict
    ids = encode(TOK, text)
    ref = Matcher(compile_json_schema(schema, vocab))
    expected = []
    for tid in ids:
        expected.append(ref.packed_mask().copy())
        ref.accept_token(tid)
    g = compile_json_schema(schema, vocab, memory_bytes=1 << 20)
    failures: list[str] = []

    def run(seed: int) -> None:
        m = Matcher(g)
        for i, tid in enumerate(ids):
            if not np.array_equal(m.packed_mask(), expected[i]):
                failures.append(f"thread {seed}: mask {i} differs")
                return
            m.accept_token(tid)
        if not m.is_accepting():
            failures.append(f"thread {seed}: not accepting at the end")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert g.evictions >= 1


def test_stacks_deeper_than_the_recursion_limit(vocab):
    """300 levels: stacks of over a thousand frames; closure, merging and distances are iterative."""
    levels = 300
    g = compile_json_schema(tree_schema(), vocab, SchemaOptions(max_depth=2 * levels + 2))
    ids = encode(TOK, tree_text(levels, codec_at=levels // 2))
    m = Matcher(g)
    for i, tid in enumerate(ids):
        m.accept_token(tid)
        if i == len(ids) // 2:
            # every open object still needs its closing brackets: at least one byte per level open
            assert m.distance() >= levels // 2
    assert m.is_accepting() and m.distance() == 0
    assert widest_state(g) <= 8


def _tools_union(n: int) -> dict:
    """A function-calling union: n tools, each told apart by a ``const`` name."""
    def tool(i: int) -> dict:
        args = {"type": "object", "properties": {f"a{i}": {"type": "string"}}, "required": [f"a{i}"],
                "additionalProperties": False}
        return {"type": "object", "properties": {"name": {"const": f"tool_{i}"}, "arguments": args},
                "required": ["name", "arguments"], "additionalProperties": False}
    return {"anyOf": [tool(i) for i in range(n)]}


def test_many_callers_of_one_state_merge_their_stacks_in_linear_memory(vocab):
    """Every tool's object reaches the same shared states with its own return frame: merging those
    stacks one caller at a time kept a node per partial union (quadratic in the tools); one merge
    per set of callers keeps the memory linear.  50 -> 200 tools must cost at most ~4x, not ~11x."""
    table = token_table(vocab)
    retained = []
    for n in (50, 200):
        g = compile_json_schema(_tools_union(n), vocab)
        m = Matcher(g)
        for piece in ('{"', "name", '":', ' "', "tool"):
            m.packed_mask()
            m.accept_token(bytes_to_id(table)[piece.encode()])
        assert np.array_equal(np.sort(m.allowed_ids()), np.sort(reference_allowed_ids(g, table, m.state)))
        retained.append(g.automaton.retained_bytes())
    assert retained[1] < 6 * retained[0], retained
    done = {"name": "tool_137", "arguments": {"a137": "x"}}
    m = Matcher(compile_json_schema(_tools_union(200), vocab))
    for tid in encode(TOK, json.dumps(done)):
        m.accept_token(tid)
    assert m.is_accepting()
    jsonschema.validate(done, _tools_union(200))
