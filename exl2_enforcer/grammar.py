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

#: default per-grammar budget for states, rows and masks (bytes)
DEFAULT_MEMORY_BYTES = 256 << 20
#: the smallest budget accepted: a few states and one vocabulary-wide mask must fit
MIN_MEMORY_BYTES = 1 << 20


@dataclass
class CompiledGrammar:
    """A constraint ready for token masking; share it between matchers freely."""

    automaton: Automaton
    index: TokenIndex
    engine: MaskEngine
    description: str
    compile_seconds: float
    warnings: list[str] = field(default_factory=list)
    #: budget in bytes for DFA states, rows and masks together (see :meth:`enforce_budget`)
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    #: how many times the budget dropped every state (a counter, for reports and tests)
    evictions: int = 0

    @property
    def vocab(self) -> TokenVocabulary:
        """The vocabulary the masks are computed for."""
        return self.index.vocab

    def retained_bytes(self) -> int:
        """Bytes now held by this grammar's DFA states, rows, closures, stack nodes and masks.

        Counts what grows with use (an estimate for Python objects, exact for
        arrays); the vocabulary index, shared by every grammar, is not included.
        """
        return self.automaton.retained_bytes() + self.engine.retained_bytes()

    def enforce_budget(self) -> bool:
        """Drop every state, row and mask when :meth:`retained_bytes` exceeds ``memory_bytes``.

        Matchers re-intern their states from the configurations they keep, so
        they go on working; the dropped work is redone on demand.  Returns
        whether it evicted.  Called by :class:`~.matcher.Matcher` after each step.
        """
        a, e = self.automaton, self.engine
        # inlined retained_bytes(): this runs after every matcher step
        if a.state_bytes + a.table.nbytes + e.cached_bytes + e.side_bytes <= self.memory_bytes:
            return False
        self.evict()
        return True

    def evict(self) -> None:
        """Drop every DFA state, row and mask now (matchers re-intern their states on next use)."""
        with self.automaton.lock:
            self.automaton.evict()
            self.engine.clear_states()
            self.evictions += 1


_CACHE: OrderedDict[tuple, CompiledGrammar] = OrderedDict()
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


def _check_memory(memory_bytes: int) -> int:
    if not isinstance(memory_bytes, int) or memory_bytes < MIN_MEMORY_BYTES:
        raise EnforcerError(f"memory_bytes must be an int >= {MIN_MEMORY_BYTES}, got {memory_bytes!r}")
    return memory_bytes


def _finish(nfa: NFA, root: Frag, vocab: TokenVocabulary, max_depth: int, desc: str, t0: float,
            warnings: list[str], cache_bytes: int, memory_bytes: int) -> CompiledGrammar:
    try:
        automaton = Automaton(nfa, root, max_depth=max_depth)
    except SchemaError:
        raise
    except EnforcerError as e:
        raise SchemaError(f"{desc}: {e}", "") from None
    index = TokenIndex.for_vocabulary(vocab)
    # the mask LRU evicts on its own first, so masks alone never force dropping the states
    engine = MaskEngine(automaton, index, cache_bytes=min(cache_bytes, memory_bytes // 2))
    return CompiledGrammar(automaton, index, engine, desc, time.perf_counter() - t0, warnings, memory_bytes)


def compile_json_schema(schema: Any, vocab: TokenVocabulary, options: SchemaOptions | None = None, *,
                        registry: referencing.Registry | None = None,
                        mask_cache_bytes: int = 256 << 20,
                        memory_bytes: int = DEFAULT_MEMORY_BYTES) -> CompiledGrammar:
    """Compile a JSON Schema (dict, bool or JSON text) for ``vocab``; cached.

    ``memory_bytes`` bounds the grammar's DFA states, rows and masks together
    (bytes, default 256 MiB, at least 1 MiB); ``mask_cache_bytes`` bounds the
    mask LRU alone (at most half of ``memory_bytes`` is used).

    Raises :class:`SchemaError` with a JSON pointer for invalid or unsupported
    schemas and for schemas that admit no value; :class:`EnforcerError` for a
    bad ``memory_bytes``.
    """
    _check_memory(memory_bytes)
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise SchemaError(f"schema is not valid JSON: {e}", "") from None
    options = options or SchemaOptions()
    # property order is part of the language, so the key keeps dict order
    key = ("schema", json.dumps(schema), options, vocab.fingerprint, id(registry) if registry else 0,
           mask_cache_bytes, memory_bytes)

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa, root, warns = compile_schema(schema, options, registry)
        return _finish(nfa, root, vocab, options.max_depth, "JSON schema", t0, warns, mask_cache_bytes,
                       memory_bytes)

    return _cached(key, build)


def compile_regex_constraint(pattern: str, vocab: TokenVocabulary, *,
                             memory_bytes: int = DEFAULT_MEMORY_BYTES) -> CompiledGrammar:
    """The whole output must match ``pattern`` (ECMA-262 subset, fully anchored).

    ``memory_bytes`` bounds states, rows and masks together, as for :func:`compile_json_schema`.
    """
    from exl2_enforcer.compile.regex import compile_regex

    _check_memory(memory_bytes)

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        root = compile_regex(nfa, pattern, mode="raw", search=False)
        return _finish(nfa, root, vocab, 1, f"regex {pattern!r}", t0, [], 64 << 20, memory_bytes)

    return _cached(("regex", pattern, vocab.fingerprint, memory_bytes), build)


def compile_choice(choices: Sequence[str], vocab: TokenVocabulary, *,
                   memory_bytes: int = DEFAULT_MEMORY_BYTES) -> CompiledGrammar:
    """The whole output must be exactly one of ``choices``.

    ``memory_bytes`` bounds states, rows and masks together, as for :func:`compile_json_schema`.
    """
    _check_memory(memory_bytes)
    choices = list(choices)
    if not choices:
        raise EnforcerError("choices: need at least one choice")
    if any(not isinstance(c, str) or not c for c in choices):
        raise EnforcerError("choices: every choice must be a non-empty string")

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        root = nfa.alt([nfa.literal(c.encode()) for c in dict.fromkeys(choices)])
        return _finish(nfa, root, vocab, 1, f"choice of {len(choices)}", t0, [], 64 << 20, memory_bytes)

    return _cached(("choice", tuple(choices), vocab.fingerprint, memory_bytes), build)
