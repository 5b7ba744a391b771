#!/usr/bin/env python
"""Scaling benchmark: how compile time, mask time and memory grow with schema size,
for exl2_enforcer, xgrammar and llguidance in the same run.

One command, from the project root::

    python benchmarks/bench_scaling.py --quick             # small sizes, a few minutes on 2 cores
    python benchmarks/bench_scaling.py                     # every family at every size
    python benchmarks/bench_scaling.py --families enum,anyof --sizes enum=100,10000 --cap 30

Families (``--families``; sizes per family with ``--sizes family=a,b,...``):

* ``nesting`` -- the recursive Dir/Zip tree schema (``$ref`` + ``anyOf``), forced with a
  chain of directories N deep (N = 4..20);
* ``chain`` -- ``L0 = integer``, ``Lk = anyOf[{x: L(k-1), p: integer}, {x: L(k-1), q: string}]``
  (closed objects, both keys required), root ``L_N`` (N = 4..20);
* ``enum`` -- ``{"enum": [n strings]}`` (n = 100..100,000), a numbered series (``alpha_0``, ...);
* ``enumhex`` -- the same with n strings of 16 random hex digits (little shared structure);
* ``enumnum`` -- ``{"enum": [n numbers]}``: integers below 2**53 and floats with a fraction, mixed;
* ``properties`` -- one object with n required integer properties (n = 10..2,000);
* ``anyof`` -- ``anyOf`` of n closed objects told apart by a ``const`` ``kind`` (n = 2..500);
* ``tools`` -- a function-calling union: ``anyOf`` of n tools ``{"name": const, "arguments": {...}}``,
  each with its own three typed arguments (n = 10..500), forced with a call of the last tool;
* ``freetext`` -- ``{"type": "string", "maxLength": 1e9}`` forced with a text of n tokens
  (n = 20,000).

Every (family, size, engine) runs in a worker process that loaded the tokenizer once; a case
that passes ``--cap`` seconds is reported as ``> cap`` and its worker is replaced, so a slow
case never hangs the run.  Each case: a cold compile (``compile ms``), then one matcher
driven through the instance's real token ids, timing every mask fill (``slowest mask``) and
the whole forced instance (every fill and accept, ``instance ms``); ``retained`` is what the
compiled grammar holds afterwards (ours: ``CompiledGrammar.retained_bytes()``; xgrammar:
``memory_size_bytes``; llguidance does not report it).  Ratios are ours / peer (below 1: we
are faster).  Engines and helpers are those of ``bench_engine.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_engine import (  # noqa: E402 -- after the path set-up above
    PEERS,
    Ours,
    Refused,
    encode_instance,
    fmt_bytes,
    fmt_num,
    load_tokenizer,
    make_engine,
    run_pass,
)

FAMILIES: dict[str, list[int]] = {
    "nesting": [4, 8, 12, 16, 20],
    "chain": [4, 8, 12, 16, 20],
    "enum": [100, 1_000, 10_000, 100_000],
    "enumhex": [100, 1_000, 10_000, 100_000],
    "enumnum": [100, 1_000, 10_000],
    "properties": [10, 100, 500, 2_000],
    "anyof": [2, 10, 100, 500],
    "tools": [10, 50, 200, 500],
    "freetext": [20_000],
}
QUICK: dict[str, list[int]] = {
    "nesting": [4, 8], "chain": [4, 8], "enum": [100, 1_000, 10_000], "enumhex": [1_000], "enumnum": [1_000],
    "properties": [10, 100],
    "anyof": [2, 10, 100], "tools": [10, 50], "freetext": [2_000],
}
ENGINES = ("ours", *PEERS)


# ----------------------------------------------------------------------------- cases

def tree_case(n: int) -> tuple[dict, Any, int]:
    """The Dir/Zip schema, an instance n directories deep, and the ``max_depth`` it needs."""
    def node(extra: dict) -> dict:
        props = {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}
        return {"type": "object", "required": ["name", "children", *extra], "properties": {**props, **extra}}

    schema = {"$defs": {"Dir": node({}), "Zip": node({"codec": {"type": "string"}}),
                        "Node": {"anyOf": [{"$ref": "#/$defs/Dir"}, {"$ref": "#/$defs/Zip"}]}},
              "$ref": "#/$defs/Node"}
    inst: dict = {"name": "leaf", "children": []}
    for k in reversed(range(n - 1)):
        inst = {"name": f"d{k}", "children": [inst]}
    return schema, inst, 3 * n + 4


def chain_case(n: int) -> tuple[dict, Any, int]:
    """``L_n`` of the anyOf chain and an instance that alternates the two branches."""
    defs: dict = {"L0": {"type": "integer"}}
    for k in range(1, n + 1):
        below = {"$ref": f"#/$defs/L{k - 1}"}
        defs[f"L{k}"] = {"anyOf": [
            {"type": "object", "properties": {"x": below, "p": {"type": "integer"}}, "required": ["x", "p"],
             "additionalProperties": False},
            {"type": "object", "properties": {"x": below, "q": {"type": "string"}}, "required": ["x", "q"],
             "additionalProperties": False}]}
    inst: Any = 7
    for k in range(1, n + 1):
        inst = {"x": inst, "p": k} if k % 2 else {"x": inst, "q": f"s{k}"}
    return {"$defs": defs, "$ref": f"#/$defs/L{n}"}, inst, n + 4


def enum_case(n: int) -> tuple[dict, Any, int]:
    words = ("alpha", "beta", "gamma", "delta", "omega")
    values = [f"{words[i % 5]}_{i}" for i in range(n)]
    return {"enum": values}, values[-1], 16


def enumhex_case(n: int) -> tuple[dict, Any, int]:
    """n strings of 16 hex digits: almost nothing shared, the worst case for a literal automaton."""
    values = [hashlib.sha1(str(i).encode()).hexdigest()[:16] for i in range(n)]
    return {"enum": values}, values[-1], 16


def enumnum_case(n: int) -> tuple[dict, Any, int]:
    """n numbers: integers spread below 2**53 and floats with a fraction (every JSON spelling of each)."""
    values = [int(hashlib.sha1(str(i).encode()).hexdigest()[:13], 16) if i % 2 else i / 8 + 0.001 for i in range(n)]
    return {"enum": values}, values[-1], 16


def properties_case(n: int) -> tuple[dict, Any, int]:
    names = [f"field_{i}" for i in range(n)]
    schema = {"type": "object", "properties": {k: {"type": "integer"} for k in names}, "required": names}
    return schema, {k: i % 100 for i, k in enumerate(names)}, 16


def anyof_case(n: int) -> tuple[dict, Any, int]:
    branches = [{"type": "object", "properties": {"kind": {"const": f"kind_{i}"}, "value": {"type": "integer"}},
                 "required": ["kind", "value"], "additionalProperties": False} for i in range(n)]
    return {"anyOf": branches}, {"kind": f"kind_{n - 1}", "value": 42}, 16


TOOL_NAMES = ("get_weather", "send_email", "search_web", "create_event", "read_file", "write_file", "list_dir",
              "run_sql", "translate", "summarize")


def tools_case(n: int) -> tuple[dict, Any, int]:
    """n tools told apart by a ``const`` name; each tool's arguments are its own three typed fields."""
    def tool(i: int) -> dict:
        args = {f"arg{j}_{i}": {"type": ("string", "integer", "boolean")[j]} for j in range(3)}
        return {"type": "object", "properties": {
            "name": {"const": f"{TOOL_NAMES[i % 10]}_{i}"},
            "arguments": {"type": "object", "properties": args, "required": list(args), "additionalProperties": False}},
            "required": ["name", "arguments"], "additionalProperties": False}
    k = n - 1
    call = {"name": f"{TOOL_NAMES[k % 10]}_{k}", "arguments": {f"arg0_{k}": "Kyoto", f"arg1_{k}": 3, f"arg2_{k}": True}}
    return {"anyOf": [tool(i) for i in range(n)]}, call, 16


def freetext_case(n: int) -> tuple[dict, Any, int]:
    """A free string (maxLength 1e9) and about n tokens of prose-like text (trimmed to n later)."""
    words = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs", "while", "seven", "wizards", "hum")
    text = " ".join(f"{words[(i * 7) % len(words)]}{'.' if i % 13 == 12 else ''}" for i in range(n + 16))
    return {"type": "string", "maxLength": 1_000_000_000}, text, 16


MAKERS = {"nesting": tree_case, "chain": chain_case, "enum": enum_case, "enumhex": enumhex_case,
          "enumnum": enumnum_case,
          "properties": properties_case,
          "anyof": anyof_case, "tools": tools_case, "freetext": freetext_case}


def case_ids(hf: Any, family: str, size: int) -> tuple[dict, list[int], int]:
    """(schema, the instance's token ids, max_depth) for one case."""
    schema, inst, max_depth = MAKERS[family](size)
    ids, _note = encode_instance(hf, json.dumps(inst, ensure_ascii=False))
    if family == "freetext" and len(ids) > size + 2:
        # keep the opening quote, ``size`` tokens of text, and the closing quote
        body = hf.decode(ids[: size + 1])
        ids, _note = encode_instance(hf, json.dumps(body[1:], ensure_ascii=False))
    return schema, ids, max_depth


# ----------------------------------------------------------------------------- worker

class ScalingOurs(Ours):
    """Ours, with the case's ``max_depth`` and the cap as its own compile budget."""

    def configure(self, max_depth: int, cap: float) -> None:
        from exl2_enforcer.compile.schema.compiler import SchemaOptions

        self.options = SchemaOptions(max_depth=max_depth, compile_timeout_s=cap)

    def compile(self, schema: dict) -> tuple[Any, float]:
        from exl2_enforcer import grammar as G

        G.GRAMMAR_CACHE.clear()
        t0 = time.perf_counter()
        g = G.compile_json_schema(schema, self.vocab, self.options)
        return g, time.perf_counter() - t0

    def memory(self, g: Any) -> dict[str, Any]:
        return {"retained_bytes": g.retained_bytes()}


def run_case(engine: Any, ctx: Any, family: str, size: int, cap: float) -> dict[str, Any]:
    schema, ids, max_depth = case_ids(ctx.hf, family, size)
    if isinstance(engine, ScalingOurs):
        engine.configure(max_depth, cap)
    row: dict[str, Any] = {"family": family, "size": size, "engine": engine.name, "tokens": len(ids)}
    try:
        handle, compile_s = engine.compile(schema)
    except Exception as exc:  # noqa: BLE001 -- reported as this engine's result for the case
        return {**row, "status": f"compile failed: {type(exc).__name__}: {str(exc)[:120]}"}
    row["compile_ms"] = compile_s * 1000
    m = engine.matcher(handle, True)
    fill, words, accept = engine.bind(m)
    try:
        res = run_pass(fill, words, accept, ids, ctx.end_ids, ctx.width, False, lambda t: str(t))
    except Refused as exc:
        return {**row, "status": f"refused: {exc}"}
    row["slowest_mask_ms"] = max(res.fill_ns) / 1e6
    row["instance_ms"] = (sum(res.fill_ns) + sum(res.accept_ns)) / 1e6
    mem = engine.memory(handle)
    row["retained_bytes"] = mem.get("retained_bytes", mem.get("compiled_grammar_bytes"))
    row["status"] = "ok" if not res.mask_misses else f"{len(res.mask_misses)} mask misses"
    return row


def worker(engine_name: str, tokenizer: str) -> int:
    """Read one JSON case per stdin line, answer one JSON row per stdout line."""
    ctx = load_tokenizer(tokenizer)
    engine = ScalingOurs() if engine_name == "ours" else make_engine(engine_name)
    engine.prepare(ctx)
    for family in ("properties", "enum", "chain"):  # first-use work (imports, lazy tables) is not scaling
        run_case(engine, ctx, family, 2, 600.0)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        case = json.loads(line)
        try:
            row = run_case(engine, ctx, case["family"], case["size"], case["cap"])
        except Exception as exc:  # noqa: BLE001 -- one broken case must not end the worker
            row = {**case, "engine": engine_name, "status": f"crashed: {type(exc).__name__}: {str(exc)[:120]}"}
        print(json.dumps(row), flush=True)
    return 0


# ----------------------------------------------------------------------------- driver

class Worker:
    """A worker process for one engine, replaced when a case passes its cap."""

    def __init__(self, engine: str, tokenizer: str, startup_s: float) -> None:
        self.engine, self.tokenizer, self.startup_s = engine, tokenizer, startup_s
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue = queue.Queue()

    def start(self) -> str | None:
        self.lines = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", self.engine, "--tokenizer",
                                      self.tokenizer], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        out, lines = self.proc.stdout, self.lines
        threading.Thread(target=lambda: [lines.put(x) for x in out] + [lines.put(None)], daemon=True).start()
        got = self._read(self.startup_s)
        return None if got and got.get("ready") else f"worker did not start ({got})"

    def _read(self, timeout: float) -> dict | None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if line is None else json.loads(line)

    def run(self, family: str, size: int, cap: float) -> dict[str, Any]:
        base = {"family": family, "size": size, "engine": self.engine}
        if self.proc is None or self.proc.poll() is not None:
            problem = self.start()
            if problem:
                self.stop()
                return {**base, "status": problem}
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"family": family, "size": size, "cap": cap}) + "\n")
        self.proc.stdin.flush()
        row = self._read(cap)
        if row is None:
            self.stop()
            return {**base, "status": f"> cap ({cap:g} s)"}
        return row

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def ratio(ours: Any, peer: Any) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(peer, (int, float)) or peer <= 0:
        return "-"
    return f"{ours / peer:.2f}x"


def print_rows(rows: list[dict[str, Any]], engines: list[str]) -> None:
    head = f"{'family':<11}{'size':>8}  {'engine':<11}{'compile ms':>11}{'slowest mask ms':>16}{'instance ms':>12}" \
           f"{'retained':>12}  status"
    print(head)
    print("-" * len(head))
    by_case: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault((r["family"], r["size"]), {})[r["engine"]] = r
    for (family, size), per in by_case.items():
        for e in engines:
            r = per.get(e)
            if r is None:
                continue
            print(f"{family:<11}{size:>8}  {e:<11}{fmt_num(r.get('compile_ms')):>11}"
                  f"{fmt_num(r.get('slowest_mask_ms')):>16}{fmt_num(r.get('instance_ms')):>12}"
                  f"{fmt_bytes(r.get('retained_bytes')):>12}  {r.get('status', '')}")
        ours = per.get("ours", {})
        for e in engines:
            if e == "ours" or e not in per:
                continue
            p = per[e]
            print(f"{'':<19}  ours/{e:<6} compile {ratio(ours.get('compile_ms'), p.get('compile_ms'))}, slowest mask "
                  f"{ratio(ours.get('slowest_mask_ms'), p.get('slowest_mask_ms'))}, instance "
                  f"{ratio(ours.get('instance_ms'), p.get('instance_ms'))}")


def parse_sizes(spec: list[str], base: dict[str, list[int]]) -> dict[str, list[int]]:
    sizes = {k: list(v) for k, v in base.items()}
    for item in spec:
        family, _, values = item.partition("=")
        if family not in FAMILIES or not values:
            raise SystemExit(f"--sizes: expected FAMILY=N,N,... with FAMILY in {', '.join(FAMILIES)}, got {item!r}")
        sizes[family] = [int(float(v)) for v in values.split(",")]
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma list of " + ", ".join(FAMILIES))
    ap.add_argument("--sizes", action="append", default=[], metavar="FAMILY=N,N", help="sizes for one family")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of ours, xgrammar, llguidance")
    ap.add_argument("--tokenizer", default="llama3", help="a tokenizer of ../shared/tokenizers (default llama3)")
    ap.add_argument("--cap", type=float, default=60.0, help="seconds per case and engine (default 60)")
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    ap.add_argument("--worker", metavar="ENGINE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.tokenizer)
    families = [f for f in args.families.split(",") if f]
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise SystemExit(f"--families: unknown {bad}; choose from {', '.join(FAMILIES)}")
    engines = [e for e in args.engines.split(",") if e]
    sizes = parse_sizes(args.sizes, QUICK if args.quick else FAMILIES)
    workers = {e: Worker(e, args.tokenizer, startup_s=600) for e in engines}
    rows: list[dict[str, Any]] = []
    try:
        for family in families:
            for size in sizes[family]:
                for e in engines:
                    row = workers[e].run(family, size, args.cap)
                    rows.append(row)
                    print(f"  {family} {size} {e}: {row.get('status')} compile {fmt_num(row.get('compile_ms'))} ms",
                          file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.stop()
    print(f"\nscaling on {args.tokenizer}, cap {args.cap:g} s per case and engine\n")
    print_rows(rows, engines)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
