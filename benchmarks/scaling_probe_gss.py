"""Scaling probe for nested ambiguity and automaton memory (issue 10, items 1 and 3).

Forces one instance through the public API (compile, Matcher, a mask before every
token) and prints the slowest single mask, the whole forced instance, the DFA
state count, the largest configuration count of a DFA state, and the grammar's
retained bytes.  Workloads:

* ``tree N``  -- ``Node = anyOf[Dir, Zip]`` with a shared recursive ``children`` field,
  forced ``{"name":"d0","children":[{"name":"d1",...}]}`` nested ``N`` levels deep;
* ``chain K`` -- ``L0 = integer``, ``Lk = anyOf[{x: L(k-1), p: integer}, {x: L(k-1), q: string}]``
  written out inline (the schema text doubles per level, so compile time, dominated by
  ``jsonschema``'s own schema check, grows with it); ``chain_defs K`` -- the same with ``$defs``;
* ``long N``  -- ``{"type": "string", "maxLength": 1e9}`` forced over ``N`` tokens.

Run: ``PYTHONPATH=$PWD python benchmarks/scaling_probe_gss.py [--tokenizer llama3] [--give-up 60]``.
A workload whose forced instance takes longer than ``--give-up`` seconds stops its series.
"""

from __future__ import annotations

import argparse
import json
import lzma
import resource
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "tokenizers"


def tree_schema() -> dict:
    node_ref = {"$ref": "#/$defs/Node"}
    children = {"type": "array", "items": node_ref}
    return {"$defs": {
        "Dir": {"type": "object", "required": ["name", "children"],
                "properties": {"name": {"type": "string"}, "children": children}},
        "Zip": {"type": "object", "required": ["name", "children", "codec"],
                "properties": {"name": {"type": "string"}, "children": children, "codec": {"type": "string"}}},
        "Node": {"anyOf": [{"$ref": "#/$defs/Dir"}, {"$ref": "#/$defs/Zip"}]}},
        "$ref": "#/$defs/Node"}


def tree_text(depth: int) -> str:
    inner = '{"name":"leaf","children":[]}'
    for level in reversed(range(depth)):
        inner = f'{{"name":"d{level}","children":[{inner}]}}'
    return inner


def chain_schema(k: int) -> dict:
    level: dict = {"type": "integer"}
    for _ in range(k):
        level = {"anyOf": [
            {"type": "object", "properties": {"x": level, "p": {"type": "integer"}},
             "required": ["x", "p"], "additionalProperties": False},
            {"type": "object", "properties": {"x": level, "q": {"type": "string"}},
             "required": ["x", "q"], "additionalProperties": False}]}
    return level


def chain_defs_schema(k: int) -> dict:
    """The same language as :func:`chain_schema` with each level in ``$defs`` (linear schema text)."""
    defs: dict = {"L0": {"type": "integer"}}
    for i in range(1, k + 1):
        inner = {"$ref": f"#/$defs/L{i - 1}"}
        defs[f"L{i}"] = {"anyOf": [
            {"type": "object", "properties": {"x": inner, "p": {"type": "integer"}},
             "required": ["x", "p"], "additionalProperties": False},
            {"type": "object", "properties": {"x": inner, "q": {"type": "string"}},
             "required": ["x", "q"], "additionalProperties": False}]}
    return {"$defs": defs, "$ref": f"#/$defs/L{k}"}


def chain_text(k: int) -> str:
    text = "7"
    for i in range(k):
        text = f'{{"x":{text},"p":{i}}}' if i % 2 else f'{{"x":{text},"q":"s{i}"}}'
    return text


def force(grammar, ids: list[int]) -> dict:
    from exl2_enforcer.matcher import Matcher

    m = Matcher(grammar)
    slowest = 0.0
    t0 = time.perf_counter()
    for tid in ids:
        t = time.perf_counter()
        mask = m.packed_mask()
        slowest = max(slowest, time.perf_counter() - t)
        assert (mask[tid >> 5] >> (tid & 31)) & 1, f"token {tid} refused"
        m.accept_token(tid)
    assert m.is_accepting()
    total = time.perf_counter() - t0
    auto = grammar.automaton
    widest = max(len(s.configs) for s in auto.states if s is not None)
    retained = grammar.retained_bytes() if hasattr(grammar, "retained_bytes") else None
    evictions = getattr(grammar, "evictions", None)
    return {"tokens": len(ids), "slowest_mask_ms": round(slowest * 1e3, 2), "total_s": round(total, 3),
            "dfa_states": auto.n_states if hasattr(auto, "n_states") else len(auto.states),
            "widest_state_configs": widest, "retained_bytes": retained, "evictions": evictions,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="llama3")
    ap.add_argument("--tree", default="4,8,12,16,20", help="comma list of nesting depths")
    ap.add_argument("--chain", default="4,8,12", help="comma list of inline chain lengths")
    ap.add_argument("--chain-defs", default="4,8,12,16,20", help="comma list of $defs chain lengths")
    ap.add_argument("--long", default="20000", help="comma list of token counts for the long string")
    ap.add_argument("--give-up", type=float, default=60.0, help="stop a series after a slower instance (s)")
    args = ap.parse_args()

    import tokenizers

    from exl2_enforcer import grammar as gm
    from exl2_enforcer.compile.schema.compiler import SchemaOptions
    from exl2_enforcer.tokens.vocabulary import TokenVocabulary

    path = SHARED / f"{args.tokenizer}.tokenizer.json.xz"
    vocab = TokenVocabulary.from_file(path)
    tok = tokenizers.Tokenizer.from_str(lzma.decompress(path.read_bytes()).decode())

    def run(name: str, sizes: str, schema_of, text_of, opts: SchemaOptions) -> None:
        for n in [int(x) for x in sizes.split(",") if x]:
            gm._CACHE.clear()
            t0 = time.perf_counter()
            g = gm.compile_json_schema(schema_of(n), vocab, opts)
            compile_s = time.perf_counter() - t0
            ids = tok.encode(text_of(n), add_special_tokens=False).ids
            row = {"workload": name, "n": n, "compile_s": round(compile_s, 3), **force(g, ids)}
            print(json.dumps(row), flush=True)
            if row["total_s"] > args.give_up:
                print(json.dumps({"workload": name, "stopped_after": n}), flush=True)
                break

    run("tree", args.tree, lambda n: tree_schema(), tree_text, SchemaOptions(max_depth=64))
    run("chain", args.chain, chain_schema, chain_text, SchemaOptions(max_depth=64))
    run("chain_defs", args.chain_defs, chain_defs_schema, chain_text, SchemaOptions(max_depth=64))
    run("long", args.long, lambda n: {"type": "string", "maxLength": 10**9},
        lambda n: json.dumps("word " * (n - 2)), SchemaOptions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
