"""Compiled constraints and their cache.

A :class:`CompiledGrammar` joins a lazily determinised automaton (independent
of any tokenizer) with a vocabulary's :class:`~.mask.TokenIndex` and a mask
cache.  Grammars are cached by (canonical constraint, options, vocabulary
fingerprint), so many jobs with one schema share every computed state and
mask.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import referencing

from exl2_enforcer.engine.automaton import Automaton
from exl2_enforcer.errors import EnforcerError, SchemaError
from exl2_enforcer.engine.mask import MaskEngine, TokenIndex
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.compiler import SchemaOptions, compile_schema
from exl2_enforcer.tokens.vocabulary import TokenVocabulary


@dataclass
class CompiledGrammar:
    """A constraint ready for token masking; share it between matchers freely."""

    automaton: Automaton
    index: TokenIndex
    engine: MaskEngine
    description: str
    compile_seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def vocab(self) -> TokenVocabulary:
        """The vocabulary the masks are computed for."""
        return self.index.vocab


_CACHE: "OrderedDict[tuple, CompiledGrammar]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 64


def _cached(key: tuple, build) -> CompiledGrammar:
    with _CACHE_LOCK:
        got = _CACHE.get(key)
        if got is not None:
            _CACHE.move_to_end(key)
            return got
    grammar = build()
    with _CACHE_LOCK:
        _CACHE[key] = grammar
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return grammar


def _finish(nfa: NFA, root: Frag, vocab: TokenVocabulary, max_depth: int, desc: str, t0: float,
            warnings: list[str], cache_bytes: int) -> CompiledGrammar:
    try:
        automaton = Automaton(nfa, root, max_depth=max_depth)
    except EnforcerError as e:
        if desc == "JSON schema":
            raise SchemaError(f"{desc}: {e}", "") from None
        # a regex or choice has no JSON pointer: name the constraint itself
        raise EnforcerError(f"{desc}: {e}") from None
    index = TokenIndex.for_vocabulary(vocab)
    engine = MaskEngine(automaton, index, cache_bytes=cache_bytes)
    return CompiledGrammar(automaton, index, engine, desc, time.perf_counter() - t0, warnings)


def compile_json_schema(schema: Any, vocab: TokenVocabulary, options: SchemaOptions | None = None, *,
                        registry: referencing.Registry | None = None,
                        mask_cache_bytes: int = 256 << 20) -> CompiledGrammar:
    """Compile a JSON Schema (dict, bool or JSON text) for ``vocab``; cached.

    Raises :class:`SchemaError` with a JSON pointer for invalid or unsupported
    schemas and for schemas that admit no value.
    """
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(f"schema is not valid JSON: {e}", "") from None
    options = options or SchemaOptions()
    # property order is part of the language, so the key keeps dict order
    key = ("schema", json.dumps(schema), options, vocab.fingerprint, id(registry) if registry else 0)

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa, root, warns = compile_schema(schema, options, registry)
        return _finish(nfa, root, vocab, options.max_depth, "JSON schema", t0, warns, mask_cache_bytes)

    return _cached(key, build)


def compile_regex_constraint(pattern: str, vocab: TokenVocabulary) -> CompiledGrammar:
    """The whole output must match ``pattern`` (ECMA-262 subset, fully anchored)."""
    from exl2_enforcer.compile.regex import compile_regex

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        root = compile_regex(nfa, pattern, mode="raw", search=False)
        return _finish(nfa, root, vocab, 1, f"regex {pattern!r}", t0, [], 64 << 20)

    return _cached(("regex", pattern, vocab.fingerprint), build)


def compile_choice(choices: Sequence[str], vocab: TokenVocabulary) -> CompiledGrammar:
    """The whole output must be exactly one of ``choices``."""
    choices = list(choices)
    if not choices:
        raise EnforcerError("choices: need at least one choice")
    if any(not isinstance(c, str) or not c for c in choices):
        raise EnforcerError("choices: every choice must be a non-empty string")

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        root = nfa.alt([nfa.literal(c.encode()) for c in dict.fromkeys(choices)])
        return _finish(nfa, root, vocab, 1, f"choice of {len(choices)}", t0, [], 64 << 20)

    return _cached(("choice", tuple(choices), vocab.fingerprint), build)
