"""Engine adapters that drive a token sequence through a mask, for timing and checking.

One interface for this engine and the optional peers (xgrammar, llguidance,
lm-format-enforcer), so ``exl2-enforcer bench`` (and ``benchmarks/bench_engine.py``)
can time every engine on exactly the same token ids:

* ``prepare(ctx)`` once per tokenizer (raises ``ImportError`` when the peer is absent);
* ``compile(schema, options)`` -> ``(handle, seconds)``, a fresh compile;
* ``matcher(handle, first)`` -> a matcher (``first``: the cold pass);
* ``bind(matcher)`` -> ``(fill, allowed, accept)``: fill the next mask (the timed
  call), ask whether a token is in the last mask, accept a token.

No peer needs ``transformers``: each is built from the ``tokenizer.json`` text.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

PEER_NAMES = ("xgrammar", "llguidance", "lm-format-enforcer")

#: (fill, allowed(token) -> bool, accept(token) -> bool)
Binding = tuple[Callable[[], None], Callable[[int], bool], Callable[[int], bool]]


@dataclass
class TokenizerContext:
    """One tokenizer as every engine needs it."""

    text: str  # the tokenizer.json text
    width: int  # logits width: the number of bits a mask row has
    end_ids: list[int]
    hf: Any  # tokenizers.Tokenizer
    vocab: TokenVocabulary | None = None  # exact token bytes (this engine, lm-format-enforcer)


@dataclass
class Refusal:
    """Where a pass stopped: token ``index`` of the sequence (``len(ids)`` = the end token)."""

    index: int
    token_id: int | None
    reason: str


@dataclass
class PassResult:
    """Per-step timings of one pass, and the refusal that ended it early, if any."""

    fill_ns: list[int] = field(default_factory=list)
    accept_ns: list[int] = field(default_factory=list)
    refusal: Refusal | None = None


def bit_is_set(words: np.ndarray, token: int) -> bool:
    """Whether bit ``token`` is set in packed int32 mask ``words``."""
    return 0 <= token < words.shape[0] * 32 and bool((int(words[token >> 5]) >> (token & 31)) & 1)


def stats_us(ns: list[int]) -> dict[str, float]:
    """Mean, median, 99th percentile and max of nanosecond timings, in microseconds."""
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    if a.size == 0:
        return {"mean_us": 0.0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}
    return {"mean_us": round(float(a.mean()), 2), "p50_us": round(float(np.percentile(a, 50)), 2),
            "p99_us": round(float(np.percentile(a, 99)), 2), "max_us": round(float(a.max()), 2)}


def drive(binding: Binding, ids: list[int], end_ids: list[int]) -> PassResult:
    """Fill a mask before each token of ``ids`` and once after them (an end id must be allowed).

    Only ``fill`` is inside the timed region (``accept`` is timed apart); garbage
    collection is off so that a collection does not land in one step.
    """
    fill, allowed, accept = binding
    res = PassResult()
    perf = time.perf_counter_ns
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for k, t in enumerate(ids):
            t0 = perf()
            fill()
            res.fill_ns.append(perf() - t0)
            in_mask = allowed(t)
            t0 = perf()
            ok = accept(t)
            res.accept_ns.append(perf() - t0)
            if not (in_mask and ok):
                res.refusal = Refusal(k, t, _why(in_mask, ok))
                return res
        t0 = perf()
        fill()
        res.fill_ns.append(perf() - t0)
        if not any(allowed(e) for e in end_ids):
            res.refusal = Refusal(len(ids), None, f"no end id {sorted(end_ids)} is allowed after the whole text")
    finally:
        if was_enabled:
            gc.enable()
    return res


def _why(in_mask: bool, accepted: bool) -> str:
    if not in_mask and accepted:
        return "not in the mask, yet the matcher accepts it (mask and matcher disagree: an engine bug)"
    if in_mask:
        return "in the mask, yet the matcher refuses it (mask and matcher disagree: an engine bug)"
    return "not in the mask"


def encode_for_generation(hf: Any, text: str) -> tuple[list[int], str | None]:
    """Token ids of ``text`` as a model writes it after a prompt, and a note when adjusted.

    The canonical encoding (``add_special_tokens=False``) except for tokenizers that
    prepend a space to a text (SentencePiece normalizers turn ``{"`` into ``▁{"``): there
    the text is encoded after a newline and the newline's tokens are dropped.
    """
    ids = hf.encode(text, add_special_tokens=False).ids
    probe = hf.encode("a", add_special_tokens=False).tokens
    if not probe or probe[0][:1] not in ("▁", "Ġ") or text[:1].isspace():
        return ids, None
    lead = "\n"
    enc = hf.encode(lead + text, add_special_tokens=False)
    for k, (start, _end) in enumerate(enc.offsets):
        if start >= len(lead):
            tail = enc.ids[k:]
            if all(end <= len(lead) for _s, end in enc.offsets[:k]) and hf.decode(tail) == text:
                return tail, "encoded after a newline (this tokenizer prepends a space to a text)"
            break
    return ids, "the tokenizer prepends a space and the text could not be encoded without it"


def _packed_buffer(width: int) -> np.ndarray:
    # -1 pre-faults the pages, so the first timed fill does not pay for them
    return np.full((1, (width + 31) // 32), -1, np.int32)


class Engine:
    """Adapter base class: see the module docstring for the protocol."""

    name = "?"

    def prepare(self, ctx: TokenizerContext) -> None:
        """Load the engine and build its per-tokenizer data."""

    def compile(self, schema: Any, options: SchemaOptions) -> tuple[Any, float]:
        """A fresh compiled grammar for ``schema`` and the seconds it took."""
        raise NotImplementedError

    def matcher(self, handle: Any, first: bool) -> Any:
        """A new matcher on a compiled grammar (``first``: the cold pass)."""
        raise NotImplementedError

    def bind(self, matcher: Any) -> Binding:
        """``(fill, allowed, accept)`` for one matcher."""
        raise NotImplementedError


class Ours(Engine):
    """This engine: ``compile_json_schema`` after clearing the grammar cache, then ``Matcher``."""

    name = "exl2_enforcer"

    def prepare(self, ctx: TokenizerContext) -> None:
        """Build the token index and warm the process up, so neither counts as compile time.

        A throwaway compile of a tiny schema pays for lazy imports and jsonschema's set-up.
        """
        from exl2_enforcer import grammar
        from exl2_enforcer.engine.mask import TokenIndex

        if ctx.vocab is None:
            raise ValueError("this engine needs the TokenVocabulary of the tokenizer")
        self.ctx = ctx
        TokenIndex.for_vocabulary(ctx.vocab)
        warm_up = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}, "s": {"enum": ["a"]}},
                   "$defs": {"x": {"type": "array", "items": {"$ref": "#/properties/n"}}}}
        grammar.compile_json_schema(warm_up, ctx.vocab)

    def compile(self, schema: Any, options: SchemaOptions) -> tuple[Any, float]:
        """Clear the grammar cache (a cold compile: no DFA states, no masks) and compile."""
        from exl2_enforcer import grammar

        grammar.GRAMMAR_CACHE.clear()
        t0 = time.perf_counter()
        if self.ctx.vocab is None:
            raise ValueError("the tokenizer context has no exl2_enforcer vocabulary")
        g = grammar.compile_json_schema(schema, self.ctx.vocab, options)
        return g, time.perf_counter() - t0

    def matcher(self, handle: Any, first: bool) -> Any:
        """A new ``Matcher``; the warm one shares every state and mask the cold one built."""
        from exl2_enforcer.matcher import Matcher

        return Matcher(handle)

    def bind(self, m: Any) -> Binding:
        """Fill with ``fill_bitmask`` at the logits width; accept with ``try_accept``."""
        width = self.ctx.width
        buf = _packed_buffer(width)[0]
        return (lambda: m.fill_bitmask(buf, width)), (lambda t: bit_is_set(buf, t)), m.try_accept


class XGrammarPeer(Engine):
    """xgrammar: ``TokenizerInfo`` from the raw vocabulary, ``GrammarCompiler`` without cache."""

    name = "xgrammar"

    def prepare(self, ctx: TokenizerContext) -> None:
        """A ``GrammarCompiler`` without cache: every compile is cold, like ours after a cache clear."""
        import xgrammar as xgr

        self.xgr, self.ctx = xgr, ctx
        self.compiler = xgr.GrammarCompiler(xgrammar_tokenizer_info(ctx), max_threads=os.cpu_count() or 1,
                                            cache_enabled=False)

    def compile(self, schema: Any, options: SchemaOptions) -> tuple[Any, float]:
        """``compile_json_schema`` with the closest settings to ``options``."""
        import json

        text = json.dumps(schema)
        ws: dict[str, Any] = ({"any_whitespace": False, "separators": (",", ":")} if options.max_whitespace == 0
                              else {"any_whitespace": True, "max_whitespace_cnt": options.max_whitespace})
        t0 = time.perf_counter()
        cg = self.compiler.compile_json_schema(text, strict_mode=options.strict_objects,
                                               any_order=options.property_order == "any", **ws)
        return cg, time.perf_counter() - t0

    def matcher(self, handle: Any, first: bool) -> Any:
        """A new ``GrammarMatcher``."""
        return self.xgr.GrammarMatcher(handle)

    def bind(self, m: Any) -> Binding:
        """Fill through DLPack into a numpy buffer (no torch needed)."""
        buf = _packed_buffer(self.ctx.width)
        return (lambda: m.fill_next_token_bitmask(buf, 0)), (lambda t: bit_is_set(buf[0], t)), m.accept_token


class LLGuidancePeer(Engine):
    """llguidance: ``LLTokenizer`` from the tokenizer.json text, ``LLMatcher`` per grammar."""

    name = "llguidance"

    def prepare(self, ctx: TokenizerContext) -> None:
        """The ``LLTokenizer`` of the tokenizer."""
        import llguidance

        self.llg, self.ctx, self.tok = llguidance, ctx, llguidance_tokenizer(ctx)

    def compile(self, schema: Any, options: SchemaOptions) -> tuple[Any, float]:
        """``grammar_from_json_schema`` + ``LLMatcher``; the warm matcher is a deep copy taken first."""
        M = self.llg.LLMatcher
        defaults: dict[str, Any] = ({"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
                                    if options.max_whitespace == 0 else {"whitespace_flexible": True})
        t0 = time.perf_counter()
        template = M(self.tok, M.grammar_from_json_schema(schema, defaults=defaults))
        seconds = time.perf_counter() - t0
        if template.is_error():
            raise RuntimeError(f"grammar error: {template.get_error()}")
        return {"cold": template, "warm": template.deep_copy()}, seconds

    def matcher(self, handle: Any, first: bool) -> Any:
        """The compiled matcher (cold) or its copy (warm: shares the lexer caches)."""
        return handle["cold" if first else "warm"]

    def bind(self, m: Any) -> Binding:
        """Fill with ``unsafe_compute_mask_ptr`` (what ``llguidance.numpy`` calls after its checks)."""
        buf = _packed_buffer(self.tok.vocab_size)
        ptr, nbytes = buf.ctypes.data, buf.nbytes
        return (lambda: m.unsafe_compute_mask_ptr(ptr, nbytes)), (lambda t: bit_is_set(buf[0], t)), m.consume_token


class LMFormatEnforcerPeer(Engine):
    """lm-format-enforcer: ``TokenEnforcer`` over ``JsonSchemaParser``; its masks are id lists
    (timed as it returns them, with no packing into a bitmask)."""

    name = "lm-format-enforcer"

    def prepare(self, ctx: TokenizerContext) -> None:
        """The enforcer's tokenizer data, built from the exact token bytes."""
        if ctx.vocab is None:
            raise ValueError("lm-format-enforcer needs the TokenVocabulary of the tokenizer")
        self.data = lmfe_tokenizer_data(ctx.vocab, ctx.width, ctx.end_ids)

    def compile(self, schema: Any, options: SchemaOptions) -> tuple[Any, float]:
        """``JsonSchemaParser(schema)``; the enforcer itself is built per matcher."""
        from lmformatenforcer import JsonSchemaParser

        t0 = time.perf_counter()
        parser = JsonSchemaParser(schema)
        return parser, time.perf_counter() - t0

    def matcher(self, handle: Any, first: bool) -> Any:
        """A new ``TokenEnforcer`` (its state caches live in the enforcer, so warm = cold here)."""
        from lmformatenforcer import TokenEnforcer

        return {"enforcer": TokenEnforcer(self.data, handle), "seq": [], "allowed": []}

    def bind(self, m: dict) -> Binding:
        """Fill = ``get_allowed_tokens(sequence so far)``, which also applies the last token."""
        enforcer, seq = m["enforcer"], m["seq"]

        def fill() -> None:
            m["allowed"] = enforcer.get_allowed_tokens(seq).allowed_tokens

        def accept(t: int) -> bool:
            # the enforcer has no refusal of its own: an invalid token silently stops its
            # parser, so a token outside its last mask counts as refused
            ok = t in m["allowed"]
            seq.append(t)
            return ok

        return fill, (lambda t: t in m["allowed"]), accept


# ----------------------------------------------------------------------------- peer tokenizer data

def xgrammar_tokenizer_info(ctx: Any) -> Any:
    """``xgrammar.TokenizerInfo`` without ``transformers`` (``ctx``: ``text, hf, width, end_ids``).

    What ``from_huggingface`` does for a fast tokenizer: raw vocabulary strings by id, the
    vocab type and prefix-space flag xgrammar detects from tokenizer.json, ``vocab_size`` =
    the logits width.
    """
    import json

    import xgrammar as xgr
    from xgrammar.base import _core

    encoded = [""] * ctx.width
    for piece, i in ctx.hf.get_vocab(with_added_tokens=True).items():
        if i < ctx.width:
            encoded[i] = piece
    meta = json.loads(_core.TokenizerInfo._detect_metadata_from_hf(ctx.text))
    return xgr.TokenizerInfo(encoded, xgr.VocabType(meta["vocab_type"]), vocab_size=ctx.width,
                             stop_token_ids=list(ctx.end_ids), add_prefix_space=meta["add_prefix_space"])


def llguidance_tokenizer(ctx: Any) -> Any:
    """``llguidance.LLTokenizer`` (``ctx``: ``text, width, end_ids``) at the logits width, or
    at its own size when it refuses a smaller one; no ``transformers`` involved."""
    import llguidance

    try:
        return llguidance.LLTokenizer(ctx.text, n_vocab=ctx.width, eos_token=list(ctx.end_ids))
    except Exception:  # n_vocab below the tokenizer's own size (gemma3's extra id)
        return llguidance.LLTokenizer(ctx.text, eos_token=list(ctx.end_ids))


def lmfe_tokenizer_data(vocab: TokenVocabulary, width: int, end_ids: list[int]) -> Any:
    """lm-format-enforcer's ``TokenEnforcerTokenizerData`` from exact token bytes (list masks).

    Its ``transformers`` helper does not work with transformers 5, and its regular-token
    list only needs (id, text, starts-a-word).  A token that is complete UTF-8 counts as a
    word start, so its text is used as is; a partial-UTF-8 token goes through the decoder
    together with the tokens before it, as the library does for non-word-start tokens.
    """
    from lmformatenforcer import TokenEnforcerTokenizerData

    regular = []
    for i, data in enumerate(vocab.token_bytes):
        if data and i not in vocab.special_ids and i < width:
            text, whole = _utf8_or_replace(data)
            regular.append((i, text, whole))

    def decode(ids: list[int]) -> str:
        return vocab.decode_bytes(ids).decode("utf-8", errors="replace").rstrip("\ufffd")

    ends = [e for e in end_ids if e < width]
    return TokenEnforcerTokenizerData(regular, decode, ends, False, width)


def _utf8_or_replace(data: bytes) -> tuple[str, bool]:
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), False


def make_peer(name: str) -> Engine:
    """A fresh adapter for the peer ``name`` (one of :data:`PEER_NAMES`)."""
    return {"xgrammar": XGrammarPeer, "llguidance": LLGuidancePeer, "lm-format-enforcer": LMFormatEnforcerPeer}[name]()


def time_passes(engine: Engine, schema: Any, options: SchemaOptions, ids: list[int],
                end_ids: list[int]) -> tuple[float, PassResult, PassResult]:
    """Compile, then a cold and a warm pass: ``(compile seconds, cold, warm)``.

    A pass stops at the first refused token, so a refusing warm pass stops where the cold one did.
    """
    handle, seconds = engine.compile(schema, options)
    cold = drive(engine.bind(engine.matcher(handle, True)), ids, end_ids)
    warm = drive(engine.bind(engine.matcher(handle, False)), ids, end_ids)
    return seconds, cold, warm


def peer_figures(name: str, ctx: TokenizerContext, schema: Any, options: SchemaOptions,
                 ids: list[int]) -> dict[str, Any] | str:
    """``{compile_ms, cold, warm}`` for one peer, or a one-line reason why there are none."""
    try:
        engine = make_peer(name)
        engine.prepare(ctx)
    except ImportError as exc:
        return f"not installed ({_short(exc)}); pip install {name}"
    except Exception as exc:  # a peer's own failure must never stop the run
        return f"cannot prepare the tokenizer: {_short(exc)}"
    try:
        seconds, cold, warm = time_passes(engine, schema, options, ids, ctx.end_ids)
    except Exception as exc:
        return f"failed: {_short(exc)}"
    bad = cold.refusal or warm.refusal
    if bad is not None:
        piece = ctx.vocab.token_bytes[bad.token_id] if ctx.vocab and bad.token_id is not None else None
        tok = "the end token" if bad.token_id is None else f"token #{bad.index} (id {bad.token_id}, {piece!r})"
        return f"refused {tok}: {bad.reason}"
    return {"compile_ms": round(seconds * 1000, 3), "cold": stats_us(cold.fill_ns), "warm": stats_us(warm.fill_ns)}


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
