#!/usr/bin/env python
"""Token-mask benchmark: exl2_enforcer against xgrammar and llguidance on the same tokens.

Run from anywhere::

    python benchmarks/bench_engine.py                       # llama3 + gemma3, all schemas
    python benchmarks/bench_engine.py --tokenizers qwen3 --schemas tree --json out.json

For every (tokenizer, schema) pair the valid instance of the schema is serialised with
``json.dumps(instance, ensure_ascii=False)`` and encoded with the real Hugging Face
tokenizer (``add_special_tokens=False``).  Every engine is then driven through exactly
those token ids: before each token it fills a packed int32 bitmask as wide as the model's
logits row (the timed figure), the benchmark checks the token's bit is set, and the token
is accepted.  After the last token the mask is filled once more (also timed) and an end
id must be allowed.  See benchmarks/README.md for what each figure means.

A peer that is not installed, fails to build or refuses a token is reported as
``n/a (reason)`` / ``ERROR`` for that row; the run always continues.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata as _md
import json
import lzma
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKENIZER_DIR = ROOT.parent / "shared" / "tokenizers"
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from exl2_enforcer.engine import native  # noqa: E402 - after the checkout is on the path

#: logits width of the models that use each tokenizer (the size of the mask row)
LOGITS_WIDTH = {
    "llama3": 128_256,
    "gemma3": 262_144,
    "qwen3": 151_936,
    "llama2": 32_000,
    "deepseek_v3": 129_280,
}

#: name -> (schema file, instance file)
SCHEMAS = {
    "function_call": (ROOT / "tests" / "schemas" / "function_call.json",
                      HERE / "schemas" / "function_call.instance.json"),
    "flat_record": (HERE / "schemas" / "flat_record.schema.json", HERE / "schemas" / "flat_record.instance.json"),
    "free_text": (HERE / "schemas" / "free_text.schema.json", HERE / "schemas" / "free_text.instance.json"),
    "tree": (HERE / "schemas" / "tree.schema.json", HERE / "schemas" / "tree.instance.json"),
    "patterns_formats": (HERE / "schemas" / "patterns_formats.schema.json",
                         HERE / "schemas" / "patterns_formats.instance.json"),
    # three more of the same kinds, added after the engine's work on the five above (held out until then)
    "net_formats": (HERE / "schemas" / "net_formats.schema.json", HERE / "schemas" / "net_formats.instance.json"),
    "pattern_fields": (HERE / "schemas" / "pattern_fields.schema.json",
                       HERE / "schemas" / "pattern_fields.instance.json"),
    "email_records": (HERE / "schemas" / "email_records.schema.json",
                      HERE / "schemas" / "email_records.instance.json"),
}

ENGINES = ("ours", "xgrammar", "llguidance", "lm-format-enforcer")
PEERS = ("xgrammar", "llguidance")
FIGURES = ("compile_ms", "first_ms", "cold_mean", "cold_p50", "cold_p99", "cold_max",
           "warm_mean", "warm_p50", "warm_p99", "warm_max")


# ----------------------------------------------------------------------------- helpers

def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _bit(words: np.ndarray, t: int) -> bool:
    return bool((int(words[t >> 5]) >> (t & 31)) & 1)


def _clean_mask(words: np.ndarray, width: int) -> np.ndarray:
    """A copy of the first ceil(width/32) words with the bits at or beyond ``width`` cleared."""
    n = (width + 31) // 32
    out = np.zeros(n, dtype=np.uint32)
    k = min(n, words.shape[0])
    out[:k] = words[:k].view(np.uint32)
    if width % 32:
        out[n - 1] &= np.uint32((1 << (width % 32)) - 1)
    return out


def _stats_us(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    if a.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


class Refused(Exception):
    """A token of the valid instance was refused (mask bit missing and accept failed)."""


@dataclass
class PassResult:
    fill_ns: list[int] = field(default_factory=list)
    accept_ns: list[int] = field(default_factory=list)
    masks: list[np.ndarray] | None = None
    #: steps whose mask lacked the instance's token although accept then succeeded
    mask_misses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Ctx:
    """One tokenizer with everything the engines need."""

    name: str
    path: Path
    text: str
    width: int
    end_ids: list[int]
    hf: Any  # tokenizers.Tokenizer
    read_s: float


def run_pass(fill: Callable[[], None], words: np.ndarray, accept: Callable[[int], bool], ids: list[int],
             end_ids: list[int], width: int, keep_masks: bool, piece: Callable[[int], str]) -> PassResult:
    """Drive one matcher through ``ids``; time each mask fill (and each accept) separately.

    ``fill`` writes into ``words`` (a 1-D int32 view).  The final mask (before the end
    token) is timed too.  GC is off while timing.
    """
    res = PassResult(masks=[] if keep_masks else None)
    perf = time.perf_counter_ns
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for k, t in enumerate(ids):
            t0 = perf()
            fill()
            t1 = perf()
            res.fill_ns.append(t1 - t0)
            if keep_masks:
                res.masks.append(_clean_mask(words, width))
            allowed = _bit(words, t)
            t2 = perf()
            ok = accept(t)
            t3 = perf()
            res.accept_ns.append(t3 - t2)
            if not ok:
                raise Refused(f"token #{k} id {t} {piece(t)} refused (mask bit {'set' if allowed else 'clear'}, "
                              f"accept failed)")
            if not allowed:
                res.mask_misses.append({"step": k, "token": t, "piece": piece(t)})
        t0 = perf()
        fill()
        t1 = perf()
        res.fill_ns.append(t1 - t0)
        if keep_masks:
            res.masks.append(_clean_mask(words, width))
        if not any(_bit(words, e) for e in end_ids if e < width):
            raise Refused(f"no end id {end_ids} allowed after the complete instance")
    finally:
        if gc_was:
            gc.enable()
    return res


# ----------------------------------------------------------------------------- engines

class Engine:
    """Adapter: prepare(ctx) once per tokenizer, compile(schema) per schema, matchers per pass."""

    name = "?"

    def prepare(self, ctx: Ctx) -> dict[str, float]:
        raise NotImplementedError

    def compile(self, schema: dict) -> tuple[Any, float]:
        """Return (handle, seconds)."""
        raise NotImplementedError

    def matcher(self, handle: Any, first: bool) -> Any:
        raise NotImplementedError

    def bind(self, matcher: Any) -> tuple[Callable[[], None], np.ndarray, Callable[[int], bool]]:
        """(fill, 1-D int32 words, accept) for one matcher."""
        raise NotImplementedError

    def memory(self, handle: Any) -> dict[str, Any]:
        return {}


class Ours(Engine):
    name = "ours"

    def prepare(self, ctx: Ctx) -> dict[str, float]:
        from exl2_enforcer.engine.mask import TokenIndex
        from exl2_enforcer.tokens.vocabulary import TokenVocabulary

        self.ctx = ctx
        t0 = time.perf_counter()
        self.vocab = TokenVocabulary.from_file(ctx.path)
        t1 = time.perf_counter()
        TokenIndex.for_vocabulary(self.vocab)
        t2 = time.perf_counter()
        return {"vocabulary_s": t1 - t0, "token_index_s": t2 - t1, "total_s": t2 - t0}

    def compile(self, schema: dict) -> tuple[Any, float]:
        from exl2_enforcer import grammar as G

        G.GRAMMAR_CACHE.clear()  # force a fresh compile (and an empty mask cache)
        t0 = time.perf_counter()
        g = G.compile_json_schema(schema, self.vocab)
        return g, time.perf_counter() - t0

    def matcher(self, handle: Any, first: bool) -> Any:
        from exl2_enforcer.matcher import Matcher

        return Matcher(handle)

    def bind(self, m: Any):
        width = self.ctx.width
        out = np.full((width + 31) // 32, -1, np.int32)  # pre-faulted pages

        def fill() -> None:
            m.fill_bitmask(out, width)

        return fill, out, m.try_accept

    def memory(self, g: Any) -> dict[str, Any]:
        return {"mask_cache_bytes": int(g.engine.cached_bytes), "dfa_states": len(g.automaton.states),
                "retained_bytes": int(g.retained_bytes())}


class XGrammar(Engine):
    name = "xgrammar"

    def prepare(self, ctx: Ctx) -> dict[str, float]:
        import tokenizers
        import xgrammar as xgr
        from xgrammar.base import _core

        self.xgr, self.ctx = xgr, ctx
        width = ctx.width
        t0 = time.perf_counter()
        # What TokenizerInfo.from_huggingface does for a fast tokenizer, minus transformers:
        # the raw vocabulary strings by id, the vocab type / prefix space detected from
        # tokenizer.json, and the model's logits width as vocab_size.
        tok = tokenizers.Tokenizer.from_str(ctx.text)
        encoded = [""] * width
        for piece, i in tok.get_vocab(with_added_tokens=True).items():
            if i < width:
                encoded[i] = piece
        meta = json.loads(_core.TokenizerInfo._detect_metadata_from_hf(ctx.text))
        self.info = xgr.TokenizerInfo(encoded, xgr.VocabType(meta["vocab_type"]), vocab_size=width,
                                      stop_token_ids=list(ctx.end_ids), add_prefix_space=meta["add_prefix_space"])
        t1 = time.perf_counter()
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=os.cpu_count() or 1, cache_enabled=False)
        t2 = time.perf_counter()
        return {"tokenizer_info_s": t1 - t0, "grammar_compiler_s": t2 - t1, "total_s": t2 - t0,
                "vocab_type": self.info.vocab_type.name}

    def compile(self, schema: dict) -> tuple[Any, float]:
        text = json.dumps(schema)
        t0 = time.perf_counter()
        # any_whitespace: flexible whitespace like the other engines; strict_mode (default True):
        # no properties beyond those named, like our strict_objects; property order = schema order.
        cg = self.compiler.compile_json_schema(text, any_whitespace=True, strict_mode=True)
        return cg, time.perf_counter() - t0

    def matcher(self, handle: Any, first: bool) -> Any:
        return self.xgr.GrammarMatcher(handle)

    def bind(self, m: Any):
        width = self.ctx.width
        buf = np.full((1, (width + 31) // 32), -1, np.int32)  # pre-faulted; DLPack: numpy works, no torch needed

        def fill() -> None:
            m.fill_next_token_bitmask(buf, 0)

        return fill, buf[0], m.accept_token

    def memory(self, cg: Any) -> dict[str, Any]:
        size = cg.memory_size_bytes
        return {"compiled_grammar_bytes": int(size() if callable(size) else size)}


class LLGuidance(Engine):
    name = "llguidance"

    def prepare(self, ctx: Ctx) -> dict[str, float]:
        import llguidance

        self.llg, self.ctx = llguidance, ctx
        t0 = time.perf_counter()
        # LLTokenizer takes the tokenizer.json text directly (what llguidance.hf.from_tokenizer
        # passes it after serialising the transformers backend); no transformers needed.
        try:
            self.tok = llguidance.LLTokenizer(ctx.text, n_vocab=ctx.width, eos_token=list(ctx.end_ids))
            self.note = ""
        except Exception as exc:  # e.g. n_vocab smaller than the tokenizer (gemma3)
            self.tok = llguidance.LLTokenizer(ctx.text, eos_token=list(ctx.end_ids))
            self.note = f"n_vocab={ctx.width} refused ({_short(exc, 80)}); used the tokenizer's own size"
        t1 = time.perf_counter()
        out: dict[str, Any] = {"lltokenizer_s": t1 - t0, "total_s": t1 - t0, "vocab_size": self.tok.vocab_size}
        if self.note:
            out["note"] = self.note
        return out

    def compile(self, schema: dict) -> tuple[Any, float]:
        M = self.llg.LLMatcher
        t0 = time.perf_counter()
        grammar = M.grammar_from_json_schema(schema, defaults={"whitespace_flexible": True})
        template = M(self.tok, grammar)
        dt = time.perf_counter() - t0
        if template.is_error():
            raise RuntimeError(f"grammar error: {template.get_error()}")
        # the warm matcher is a deep copy of the freshly built one (it shares the compiled
        # grammar and the lexer caches that the cold pass fills)
        return {"template": template, "copy": template.deep_copy(), "grammar": grammar}, dt

    def matcher(self, handle: Any, first: bool) -> Any:
        return handle["template"] if first else handle["copy"]

    def bind(self, m: Any):
        n_words = (self.tok.vocab_size + 31) // 32
        buf = np.full((1, n_words), -1, np.int32)  # pre-faulted pages
        ptr, nbytes = buf.ctypes.data, buf.nbytes

        def fill() -> None:
            # what llguidance.numpy.fill_next_token_bitmask does, without its per-call asserts
            m.unsafe_compute_mask_ptr(ptr, nbytes)

        def accept(t: int) -> bool:
            return m.consume_token(t)

        self._last = m
        return fill, buf[0], accept


class LMFormatEnforcer(Engine):
    """lm-format-enforcer through the CLI's adapter (``exl2_enforcer.cli.peers``).

    Its masks are id lists; ``fill`` also packs the list into the bitmask a sampler needs, so its
    figures include that packing.  Its tokenizer data is built from our exact token bytes
    (its transformers helper breaks under transformers 5).
    """

    name = "lm-format-enforcer"

    def prepare(self, ctx: Ctx) -> dict[str, float]:
        from exl2_enforcer.cli.peers import LMFormatEnforcerPeer, TokenizerContext
        from exl2_enforcer.tokens.vocabulary import TokenVocabulary

        self.ctx = ctx
        t0 = time.perf_counter()
        vocab = TokenVocabulary.from_file(ctx.path)
        self.peer = LMFormatEnforcerPeer()
        self.peer.prepare(TokenizerContext(ctx.text, ctx.width, ctx.end_ids, ctx.hf, vocab))
        return {"total_s": time.perf_counter() - t0}

    def compile(self, schema: dict) -> tuple[Any, float]:
        from exl2_enforcer.compile.schema.compiler import SchemaOptions

        return self.peer.compile(schema, SchemaOptions())

    def matcher(self, handle: Any, first: bool) -> Any:
        return self.peer.matcher(handle, first)

    def bind(self, m: Any):
        peer_fill, _allowed, accept = self.peer.bind(m)
        words = np.zeros((self.ctx.width + 31) // 32, np.uint32)

        def fill() -> None:
            peer_fill()
            words[:] = 0
            ids = np.asarray(m["allowed"], dtype=np.int64)
            ids = ids[ids < self.ctx.width]
            np.bitwise_or.at(words, ids >> 5, np.left_shift(np.uint32(1), (ids & 31).astype(np.uint32)))

        return fill, words.view(np.int32), accept


def make_engine(name: str) -> Engine:
    engines = {"ours": Ours, "xgrammar": XGrammar, "llguidance": LLGuidance, "lm-format-enforcer": LMFormatEnforcer}
    return engines[name]()


def engine_version(name: str) -> str | None:
    if name == "ours":
        return _version("exl2-enforcer") or "checkout"
    return _version(name)


# ----------------------------------------------------------------------------- driver

def load_tokenizer(name: str) -> Ctx:
    import tokenizers

    path = TOKENIZER_DIR / f"{name}.tokenizer.json.xz"
    t0 = time.perf_counter()
    text = lzma.decompress(path.read_bytes()).decode("utf-8")
    read_s = time.perf_counter() - t0
    hf = tokenizers.Tokenizer.from_str(text)
    # the same end ids for every engine: the eos token named by tokenizer_config.json
    ends: list[int] = []
    cfg_path = TOKENIZER_DIR / f"{name}.tokenizer_config.json"
    if cfg_path.is_file():
        eos = json.loads(cfg_path.read_text(encoding="utf-8")).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and hf.token_to_id(eos) is not None:
            ends = [hf.token_to_id(eos)]
    if not ends:
        ends = sorted({i for i in map(hf.token_to_id, ("</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>",
                                                        "<|im_end|>", "<eos>", "<end_of_turn>")) if i is not None})
    return Ctx(name, path, text, LOGITS_WIDTH[name], ends, hf, read_s)


def encode_instance(hf: Any, text: str) -> tuple[list[int], str | None]:
    """The token ids of ``text`` as a model would generate it after a prompt.

    SentencePiece-style tokenizers (llama2) prepend a space when encoding from the start of a
    text (``{"`` becomes ``▁{"``), which no engine can accept for a value that starts with
    ``{``.  For them the text is encoded after a newline and the newline's tokens dropped.
    """
    ids = hf.encode(text, add_special_tokens=False).ids
    first = hf.encode("a", add_special_tokens=False).tokens
    if not (first and first[0][:1] in ("▁", "Ġ") and not text[:1].isspace()):
        return ids, None
    sentinel = "\n"
    enc = hf.encode(sentinel + text, add_special_tokens=False)
    for k, (start, _end) in enumerate(enc.offsets):
        if start >= len(sentinel):
            tail = enc.ids[k:]
            if all(end <= len(sentinel) for _s, end in enc.offsets[:k]) and hf.decode(tail) == text:
                return tail, "encoded after a newline (the tokenizer prepends a space at the start of a text)"
            break
    return ids, "WARNING: the tokenizer prepends a space and the instance could not be re-encoded without it"


def load_case(name: str) -> tuple[dict, Any, str | None]:
    schema_path, inst_path = SCHEMAS[name]
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    instance = json.loads(inst_path.read_text(encoding="utf-8"))
    problem = None
    try:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        cls(schema, format_checker=cls.FORMAT_CHECKER).validate(instance)
    except ImportError:
        pass
    except Exception as exc:  # the instance must be valid, else the run means nothing
        problem = _short(exc)
    return schema, instance, problem


def bench_one(engine: Engine, schema: dict, ctx: Ctx, ids: list[int], keep_masks: bool,
              repeat: int = 1) -> dict[str, Any]:
    """Run compile + cold + warm ``repeat`` times (fresh compile each time); figures are medians."""
    rows = []
    for i in range(max(1, repeat)):
        row = _bench_once(engine, schema, ctx, ids, keep_masks and i == 0)
        rows.append(row)
        if row["status"] != "ok":
            break
    if len(rows) == 1:
        return rows[0]
    merged = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float):
            merged[key] = float(np.median([r[key] for r in rows if isinstance(r.get(key), float)]))
    merged["repeats"] = len(rows)
    if rows[-1]["status"] != "ok":
        merged.update({k: v for k, v in rows[-1].items() if k in ("status", "error", "mask_misses")})
    return merged


def _bench_once(engine: Engine, schema: dict, ctx: Ctx, ids: list[int], keep_masks: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"engine": engine.name, "status": "ok"}
    piece = lambda t: repr(ctx.hf.id_to_token(t))  # noqa: E731
    try:
        handle, compile_s = engine.compile(schema)
    except Exception as exc:
        return {"engine": engine.name, "status": "n/a", "error": f"compile failed: {_short(exc)}"}
    row["compile_ms"] = compile_s * 1000
    row["steps"] = len(ids) + 1
    for label, first in (("cold", True), ("warm", False)):
        try:
            m = engine.matcher(handle, first)
            fill, words, accept = engine.bind(m)
            res = run_pass(fill, words, accept, ids, ctx.end_ids, ctx.width, keep_masks and first, piece)
        except Refused as exc:
            row["status"] = "error"
            row["error"] = f"{label} pass: {exc}"
            break
        except Exception as exc:
            row["status"] = "error"
            row["error"] = f"{label} pass crashed: {_short(exc)}"
            break
        st = _stats_us(res.fill_ns)
        for k, v in st.items():
            row[f"{label}_{k}"] = v
        row[f"{label}_accept_mean"] = _stats_us(res.accept_ns)["mean"]
        row[f"{label}_total_ms"] = (sum(res.fill_ns) + sum(res.accept_ns)) / 1e6
        if res.mask_misses:
            row.setdefault("mask_misses", {})[label] = res.mask_misses
            row["status"] = "mask-miss"
        if res.masks is not None:
            row["_masks"] = res.masks
    if "cold_total_ms" in row:
        # first request end to end: compile + every cold mask fill + every cold accept
        row["first_ms"] = row["compile_ms"] + row["cold_total_ms"]
    try:
        row.update(engine.memory(handle))
    except Exception as exc:
        row["memory_error"] = _short(exc)
    return row


def _tok_str(hf: Any, i: Any, limit: int = 14) -> str:
    piece = hf.id_to_token(int(i)) or f"<id {int(i)}>"
    return piece if len(piece) <= limit else piece[: limit - 3] + "..."


def compare_masks(ours: list[np.ndarray], peer: list[np.ndarray], hf: Any, limit: int = 3) -> dict[str, Any]:
    """Steps where the allowed sets differ, with a few example ids each way."""
    n = min(len(ours), len(peer))
    diffs = []
    for k in range(n):
        if not np.array_equal(ours[k], peer[k]):
            a = np.unpackbits(ours[k].view(np.uint8), bitorder="little").astype(bool)
            b = np.unpackbits(peer[k].view(np.uint8), bitorder="little").astype(bool)
            only_ours, only_peer = np.flatnonzero(a & ~b), np.flatnonzero(b & ~a)
            diffs.append({"step": k, "only_ours": int(only_ours.size), "only_peer": int(only_peer.size),
                          "ex_only_ours": [_tok_str(hf, i) for i in only_ours[:limit]],
                          "ex_only_peer": [_tok_str(hf, i) for i in only_peer[:limit]]})
    return {"steps": n, "identical": n - len(diffs), "steps_with_ours_only": sum(d["only_ours"] > 0 for d in diffs),
            "steps_with_peer_only": sum(d["only_peer"] > 0 for d in diffs), "diffs": diffs}


def fmt_num(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if v >= 1000:
        return f"{v:,.0f}{unit}"
    if v >= 10:
        return f"{v:.1f}{unit}"
    return f"{v:.2f}{unit}"


def fmt_bytes(v: Any) -> str:
    if v is None:
        return "-"
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v} B"


def print_table(results: list[dict[str, Any]]) -> None:
    head = ["tokenizer", "schema", "engine", "steps", "compile ms", "1st req ms", "cold mean", "p50", "p99", "max",
            "warm mean", "p50", "p99", "max", "acc c/w", "memory"]
    rows: list[list[str]] = []
    for r in results:
        if r.get("status") == "n/a" or "cold_mean" not in r:
            rows.append([r["tokenizer"], r["schema"], r["engine"], str(r.get("steps", "-")),
                         fmt_num(r.get("compile_ms")), f"n/a ({r.get('error', '?')})"])
            continue
        mem = r.get("retained_bytes", r.get("compiled_grammar_bytes"))
        cells = [r["tokenizer"], r["schema"], r["engine"] + ("" if r["status"] == "ok" else " !"),
                 str(r["steps"]), fmt_num(r["compile_ms"]), fmt_num(r.get("first_ms"))]
        cells += [fmt_num(r.get(f"cold_{k}")) for k in ("mean", "p50", "p99", "max")]
        cells += [fmt_num(r.get(f"warm_{k}")) for k in ("mean", "p50", "p99", "max")]
        cells += [f"{fmt_num(r.get('cold_accept_mean'))}/{fmt_num(r.get('warm_accept_mean'))}", fmt_bytes(mem)]
        rows.append(cells)
        if r.get("error"):
            rows.append(["", "", "", "", "", f"  {r['error']}"])
        if r["engine"] == "ours" and r.get("ratios"):
            ratio = r["ratios"]
            cells = ["", "", "  vs best peer", ""] + [_fmt_ratio(ratio.get(f)) for f in FIGURES]
            rows.append(cells)
    widths = [max(len(head[i]), *(len(c[i]) for c in rows if i < len(c) and not c[i].startswith(("n/a", "  ")))) \
              if rows else len(head[i]) for i in range(len(head))]
    sep = "  "
    print("times in microseconds per mask fill unless marked; acc = accept_token mean (cold/warm)")
    print(sep.join(h.rjust(w) if i >= 3 else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    print(sep.join("-" * w for w in widths))
    last_key = None
    for c in rows:
        key = (c[0], c[1])
        if c[0] and last_key and key != last_key and c[0] != last_key[0]:
            print()
        if c[0]:
            last_key = key
        if len(c) < len(head):
            lead = sep.join(x.ljust(w) for x, w in zip(c[:-1], widths))
            print(lead + sep + c[-1])
        else:
            print(sep.join(x.rjust(w) if i >= 3 else x.ljust(w) for i, (x, w) in enumerate(zip(c, widths))))


def _fmt_ratio(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizers", default="llama3,gemma3",
                    help=f"comma list from {','.join(LOGITS_WIDTH)} (default llama3,gemma3)")
    ap.add_argument("--schemas", default=",".join(SCHEMAS), help=f"comma list from {','.join(SCHEMAS)}")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help="comma list from ours,xgrammar,llguidance,lm-format-enforcer")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run compile + cold + warm N times per engine (fresh compile each) and report medians")
    ap.add_argument("--json", metavar="PATH", help="also write every figure to this JSON file")
    ap.add_argument("--no-crosscheck", action="store_true",
                    help="skip comparing our cold-pass masks with the peers' (saves memory and a little time)")
    args = ap.parse_args(argv)

    tok_names = [t.strip() for t in args.tokenizers.split(",") if t.strip()]
    schema_names = [s.strip() for s in args.schemas.split(",") if s.strip()]
    engine_names = [e.strip() for e in args.engines.split(",") if e.strip()]
    for bad, known, what in ((set(tok_names) - set(LOGITS_WIDTH), LOGITS_WIDTH, "tokenizer"),
                             (set(schema_names) - set(SCHEMAS), SCHEMAS, "schema"),
                             (set(engine_names) - set(ENGINES), ENGINES, "engine")):
        if bad:
            ap.error(f"unknown {what}(s) {sorted(bad)}; known: {', '.join(known)}")
    crosscheck = not args.no_crosscheck and "ours" in engine_names

    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": {e: engine_version(e) for e in engine_names} | {"tokenizers": _version("tokenizers")},
        "logits_width": {t: LOGITS_WIDTH[t] for t in tok_names},
        "repeat": args.repeat,
        "our_walks": "native" if native.enabled else "numpy",
    }
    print(f"# exl2_enforcer token-mask benchmark — {meta['date']}")
    print(f"# python {meta['python']}, numpy {meta['numpy']}, {meta['platform']}")
    print(f"# CPU: {meta['cpu']} ({meta['cpu_count']} logical cores)")
    print("# versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in meta["versions"].items()))
    print(f"# our token walks: {meta['our_walks']} (engine/native.py)")
    if args.repeat > 1:
        print(f"# every figure is the median of {args.repeat} runs (fresh compile each)")
    print()

    # engines that cannot even be imported are n/a for the whole run
    unavailable: dict[str, str] = {}
    for e in engine_names:
        mod = {"ours": "exl2_enforcer", "xgrammar": "xgrammar", "llguidance": "llguidance",
               "lm-format-enforcer": "lmformatenforcer"}[e]
        try:
            __import__(mod)
        except Exception as exc:
            unavailable[e] = f"not installed: {_short(exc, 80)}" if isinstance(exc, ImportError) else _short(exc)

    cases = {}
    for s in schema_names:
        schema, instance, problem = load_case(s)
        if problem:
            print(f"WARNING: instance of {s} does not validate against its schema: {problem}")
        cases[s] = (schema, instance)

    results: list[dict[str, Any]] = []
    prep: dict[str, dict[str, Any]] = {}
    crosschecks: list[dict[str, Any]] = []
    bugs: list[dict[str, Any]] = []
    t_run = time.perf_counter()
    for tname in tok_names:
        try:
            ctx = load_tokenizer(tname)
        except Exception as exc:
            print(f"{tname}: cannot load tokenizer: {_short(exc)}")
            prep[tname] = {"error": _short(exc)}
            continue
        prep[tname] = {"xz_read_s": ctx.read_s, "end_ids": ctx.end_ids, "logits_width": ctx.width}
        engines: dict[str, Engine] = {}
        for e in engine_names:
            if e in unavailable:
                prep[tname][e] = {"error": unavailable[e]}
                continue
            eng = make_engine(e)
            try:
                prep[tname][e] = eng.prepare(ctx)
                engines[e] = eng
            except Exception as exc:
                prep[tname][e] = {"error": f"tokenizer preparation failed: {_short(exc)}"}
                traceback.print_exc(limit=2)
        for sname in schema_names:
            schema, instance = cases[sname]
            text = json.dumps(instance, ensure_ascii=False)
            ids, enc_note = encode_instance(ctx.hf, text)
            if enc_note and enc_note.startswith("WARNING"):
                print(f"{tname}/{sname}: {enc_note}")
            elif ctx.hf.decode(ids) != text:
                print(f"note: {tname}/{sname}: decode(encode(text)) != text")
            case_rows = []
            for e in engine_names:
                if e not in engines:
                    reason = prep[tname].get(e, {}).get("error", "unavailable")
                    row = {"engine": e, "status": "n/a", "error": reason}
                else:
                    print(f"  running {tname} / {sname} / {e} ({len(ids)} tokens)...", file=sys.stderr, flush=True)
                    row = bench_one(engines[e], schema, ctx, ids, crosscheck, args.repeat)
                row.update(tokenizer=tname, schema=sname, text_chars=len(text))
                if enc_note:
                    row["encoding_note"] = enc_note
                case_rows.append(row)
            by = {r["engine"]: r for r in case_rows}
            ours = by.get("ours")
            if ours is not None:
                if ours.get("status") in ("error", "mask-miss"):
                    bugs.append({"tokenizer": tname, "schema": sname, "text": text, "error": ours.get("error"),
                                 "mask_misses": ours.get("mask_misses", {}).get("cold", [])[:10],
                                 "n_mask_misses": {k: len(v) for k, v in ours.get("mask_misses", {}).items()}})
                if "cold_mean" in ours:
                    ratios = {}
                    for f in FIGURES:
                        peer_vals = [by[p][f] for p in PEERS if p in by and by[p].get("status") == "ok"
                                     and by[p].get(f) is not None]
                        if peer_vals and ours.get(f) is not None and min(peer_vals) > 0:
                            ratios[f] = ours[f] / min(peer_vals)
                    ours["ratios"] = ratios
                if crosscheck and "_masks" in ours:
                    for p in PEERS:
                        if p in by and "_masks" in by[p]:
                            cmp = compare_masks(ours["_masks"], by[p]["_masks"], ctx.hf)
                            cmp.update(tokenizer=tname, schema=sname, peer=p)
                            crosschecks.append(cmp)
            for r in case_rows:
                r.pop("_masks", None)
            results.extend(case_rows)
        del ctx, engines
        gc.collect()
    run_s = time.perf_counter() - t_run

    # ------------------------------------------------------------------ report
    print("## Tokenizer preparation (seconds, once per tokenizer)")
    for tname, p in prep.items():
        if "error" in p:
            print(f"  {tname}: n/a ({p['error']})")
            continue
        print(f"  {tname} (logits width {p['logits_width']:,}, end ids {p['end_ids']}; xz read+decompress "
              f"{p['xz_read_s']:.2f} s, included in ours only)")
        for e in engine_names:
            q = p.get(e, {})
            if "error" in q:
                print(f"    {e:<11} n/a ({q['error']})")
            elif e == "ours":
                print(f"    {e:<11} {q['total_s']:.2f} s = TokenVocabulary.from_file {q['vocabulary_s']:.2f} s "
                      f"+ TokenIndex {q['token_index_s']:.2f} s")
            elif e == "xgrammar":
                print(f"    {e:<11} {q['total_s']:.2f} s = TokenizerInfo {q['tokenizer_info_s']:.2f} s (incl. "
                      f"tokenizers load + vocab list; {q['vocab_type']}) + "
                      f"GrammarCompiler {q['grammar_compiler_s']:.3f} s")
            elif e == "llguidance":
                extra = f"; {q['note']}" if q.get("note") else ""
                print(f"    {e:<11} {q['total_s']:.2f} s = LLTokenizer(tokenizer.json text), vocab_size "
                      f"{q['vocab_size']:,}{extra}")
    print()
    print("## Per-token mask time")
    print_table(results)
    print()
    print("'vs best peer': our figure divided by the lowest figure among peers that passed (0.20x = we take")
    print("a fifth of the best peer's time). memory: ours = retained_bytes() (states, rows, masks) after both passes;")
    print("xgrammar = compiled grammar size (its precomputed mask cache); llguidance: no API.")
    print("engine marked '!' = at least one token of the valid instance was missing from its mask.")

    if crosscheck and crosschecks:
        print()
        print("## Mask agreement (cold pass, ours vs peer, per step)")
        for c in crosschecks:
            line = (f"  {c['tokenizer']:<7} {c['schema']:<17} vs {c['peer']:<10} {c['identical']:>3}/{c['steps']:<3} "
                    f"identical, {c['steps_with_ours_only']:>3} with ours-only ids, "
                    f"{c['steps_with_peer_only']:>3} with "
                    f"peer-only ids")
            if c["diffs"]:
                d = c["diffs"][0]
                line += (f"; e.g. step {d['step']}: ours-only {d['only_ours']} {d['ex_only_ours'][:2]}, "
                         f"peer-only {d['only_peer']} {d['ex_only_peer'][:2]}")
            print(line)

    if bugs:
        print()
        print("## BUG: our engine's mask missed tokens of a valid instance")
        for b in bugs:
            print(f"  {b['tokenizer']} / {b['schema']}: {b['error'] or ''} mask misses per pass {b['n_mask_misses']}")
            for mm in b["mask_misses"][:5]:
                print(f"    step {mm['step']}: token {mm['token']} {mm['piece']}")
        first = bugs[0]
        if first["mask_misses"]:
            mm = first["mask_misses"][0]
            sp, _ = SCHEMAS[first["schema"]]
            print("  reproducer:")
            print(f"    schema = json.load(open({str(sp.relative_to(ROOT))!r})); tokenizer = {first['tokenizer']}")
            print(f"    text = json.dumps(instance, ensure_ascii=False)  # instance: "
                  f"{str(SCHEMAS[first['schema']][1].relative_to(ROOT))}")
            print(f"    ids = tok.encode(text, add_special_tokens=False).ids; token #{mm['step']} = {mm['token']} "
                  f"{mm['piece']} is not in the mask (Matcher.accept_token accepts it)")

    print()
    print(f"total benchmark time {run_s:.1f} s")

    if args.json:
        out = {"meta": meta | {"run_seconds": run_s}, "preparation": prep, "results": results,
               "mask_agreement": crosschecks, "bugs": bugs,
               "instances": {s: json.dumps(cases[s][1], ensure_ascii=False) for s in schema_names}}
        Path(args.json).write_text(json.dumps(out, indent=1, ensure_ascii=False, default=float), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
