"""Compiled constraints and their cache.

A :class:`CompiledGrammar` joins a lazily determinised automaton (independent
of any tokenizer) with a vocabulary's :class:`~.mask.TokenIndex` and a mask
cache.  Grammars are kept in :data:`GRAMMAR_CACHE`, keyed by content only
(canonical constraint text, every option that changes behaviour, the
vocabulary fingerprint, the mask cache size), so many jobs with one schema
share every computed state and mask.  Schemas compiled against a caller's
``referencing.Registry`` are not cached: a registry's content cannot be keyed
soundly (it may retrieve documents lazily).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import referencing

from exl2_enforcer.compile.literal_set import LiteralSet
from exl2_enforcer.compile.nfa import NFA, Frag
from exl2_enforcer.compile.schema.compiler import (
    SchemaOptions,
    call_with_depth,
    check_schema_depth,
    compile_schema,
    located,
)
from exl2_enforcer.engine.automaton import Automaton
from exl2_enforcer.engine.mask import MaskEngine, TokenIndex
from exl2_enforcer.errors import EnforcerError, SchemaError, VocabularyError
from exl2_enforcer.tokens.vocabulary import TokenVocabulary

#: estimated bytes per NFA state and per edge (two small lists per state, one tuple per edge)
_NFA_STATE_BYTES = 2 * sys.getsizeof([]) + 16
_NFA_EDGE_BYTES = sys.getsizeof((0, 0, 0)) + 8
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
    #: bytes of the NFA, fixed once compiled (estimated once, see :meth:`retained_bytes`)
    nfa_bytes: int = 0
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

    def footprint_bytes(self) -> int:
        """:meth:`retained_bytes` plus the NFA's (fixed) estimate and the native tables' copy of it
        (:attr:`Automaton.native_fixed_bytes`): what :data:`GRAMMAR_CACHE` bounds."""
        return self.nfa_bytes + self.automaton.native_fixed_bytes + self.retained_bytes()

    def enforce_budget(self) -> bool:
        """Drop every state, row and mask when :meth:`retained_bytes` exceeds ``memory_bytes``.

        Matchers re-intern their states from the configurations they keep, so
        they go on working; the dropped work is redone on demand.  Returns
        whether it evicted.  Called by :class:`~.matcher.Matcher` after each step.
        """
        a = self.automaton
        # the automaton's part of retained_bytes() inlined (this runs after every matcher step);
        # the engine sums its own caches
        if a.state_bytes + a.table.nbytes + self.engine.retained_bytes() <= self.memory_bytes:
            return False
        # never wait for the lock here: a worker building rows holds it, and a guarded call that
        # stepped without it must not block; the next step over budget evicts instead
        if not a.lock.acquire(blocking=False):
            return False
        try:
            self.evict()
        finally:
            a.lock.release()
        return True

    def evict(self) -> None:
        """Drop every DFA state, row and mask now (matchers re-intern their states on next use)."""
        with self.automaton.lock:
            self.automaton.evict()
            self.engine.clear_states()
            self.evictions += 1


def nfa_bytes(nfa: NFA) -> int:
    """Estimated bytes held by ``nfa``'s states and edges."""
    n_edges = sum(map(len, nfa.edges)) + sum(map(len, nfa.eps))
    return len(nfa) * _NFA_STATE_BYTES + n_edges * _NFA_EDGE_BYTES + 200 * (len(nfa.calls) + len(nfa.loop_of))


class GrammarCache:
    """A thread-safe LRU of compiled grammars, bounded by entry count and retained bytes.

    ``max_entries`` grammars at most; the sum of their
    :meth:`CompiledGrammar.retained_bytes` is brought back under ``max_bytes``
    whenever a grammar is stored or found (grammars grow while in use, so the
    bound is enforced at those points, evicting least recently used ones).  A
    grammar larger than ``max_bytes`` on its own is returned but not kept.
    Keys must be built from content only (never ``id()``): equal keys must mean
    the same language, options and vocabulary.
    """

    def __init__(self, max_bytes: int = 2 << 30, max_entries: int = 64) -> None:
        if max_bytes < 0 or max_entries < 0:
            raise EnforcerError(f"GrammarCache: max_bytes and max_entries must be >= 0, got {max_bytes}, {max_entries}")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: "OrderedDict[Hashable, CompiledGrammar]" = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: Hashable, build: Callable[[], CompiledGrammar]) -> CompiledGrammar:
        """The cached grammar for ``key``, or ``build()``'s result (stored if it fits)."""
        with self._lock:
            got = self._entries.get(key)
            if got is not None:
                self._entries.move_to_end(key)
                self._shrink()
                return got
        grammar = build()
        with self._lock:
            self._entries[key] = grammar
            self._entries.move_to_end(key)
            self._shrink()
        return grammar

    def _shrink(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        total = sum(g.footprint_bytes() for g in self._entries.values())
        while self._entries and total > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            total -= old.footprint_bytes()

    def clear(self) -> None:
        """Forget every grammar (matchers holding one keep it alive)."""
        with self._lock:
            self._entries.clear()

    def discard(self, grammar: CompiledGrammar) -> None:
        """Forget ``grammar`` under whichever keys hold it."""
        with self._lock:
            for k in [k for k, g in self._entries.items() if g is grammar]:
                del self._entries[k]

    def retained_bytes(self) -> int:
        """Sum of the retained bytes of the cached grammars."""
        with self._lock:
            return sum(g.footprint_bytes() for g in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, grammar: object) -> bool:
        with self._lock:
            return any(g is grammar for g in self._entries.values())


#: the process-wide cache every ``compile_*`` function uses
GRAMMAR_CACHE = GrammarCache()


_GC_LOCK = threading.Lock()
_GC_PAUSES = [0, False]  # [compiles running, whether gc was enabled before the first]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while compiling (nesting and thread safe).

    A compile allocates hundreds of thousands of small acyclic lists; each
    allocation burst would trigger full collections that traverse every live
    object of the process (a loaded vocabulary holds millions), which costs
    two to four times the compile itself.
    """
    with _GC_LOCK:
        if _GC_PAUSES[0] == 0:
            _GC_PAUSES[1] = gc.isenabled()
            gc.disable()
        _GC_PAUSES[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0 and _GC_PAUSES[1]:
                gc.enable()


def check_vocabulary_covers(nfa: NFA, index: TokenIndex, desc: str) -> None:
    """Prove that every byte the constraint can consume is reachable token by token.

    Sufficient condition, checked in one pass over the NFA edges: every byte
    range on an edge contains a byte that is a single-byte text token, and the
    vocabulary has at least one end id (so an accepting state can finish).  Then
    every live DFA state has an allowed token and its mask is never empty.
    Raises :class:`VocabularyError` naming the uncovered byte ranges otherwise
    (refusing rather than risking an empty mask mid-generation).
    """
    vocab = index.vocab
    if not vocab.end_ids:
        raise VocabularyError(f"{desc}: vocabulary {vocab.source} has no end id, so no output can ever finish;"
                              " pass extra_end_ids")
    single = index.single_byte_ids >= 0
    if single.all():
        return  # every byte is a token (every real byte-level or byte-fallback vocabulary)
    covered = np.concatenate([[0], np.cumsum(single)])
    missing: set[tuple[int, int]] = set()
    for a, b in nfa.open_spans():
        for es in nfa.edges[a:b]:
            for lo, hi, _dst in es:
                if covered[hi + 1] == covered[lo]:
                    missing.add((lo, hi))
    for block in nfa.sealed.values():  # a sealed interior reads the byte ranges it lists
        missing.update((lo, hi) for lo, hi in block.byte_ranges if covered[hi + 1] == covered[lo])
    if missing:
        shown = ", ".join(f"0x{lo:02X}" if lo == hi else f"0x{lo:02X}-0x{hi:02X}" for lo, hi in sorted(missing)[:8])
        raise VocabularyError(f"{desc}: vocabulary {vocab.source} has no single-byte token for any byte in {shown}"
                              f"{' ...' if len(missing) > 8 else ''}, which the constraint may need next;"
                              " its masks could be empty, so it is refused")


def _check_vocab(vocab: Any) -> None:
    if not isinstance(vocab, TokenVocabulary):
        raise EnforcerError(f"vocab must be a TokenVocabulary (TokenVocabulary.from_file(model_dir), "
                            f"from_exllamav2(tokenizer, config), default_vocabulary()), got {type(vocab).__name__}")


def _check_memory(memory_bytes: int) -> int:
    if not isinstance(memory_bytes, int) or memory_bytes < MIN_MEMORY_BYTES:
        raise EnforcerError(f"memory_bytes must be an int >= {MIN_MEMORY_BYTES}, got {memory_bytes!r}")
    return memory_bytes


def _finish(nfa: NFA, root: Frag, vocab: TokenVocabulary, max_depth: int, desc: str, t0: float,
            warnings: list[str], cache_bytes: int, memory_bytes: int) -> CompiledGrammar:
    index = TokenIndex.for_vocabulary(vocab)
    check_vocabulary_covers(nfa, index, desc)
    try:
        automaton = Automaton(nfa, root, max_depth=max_depth)
    except SchemaError:
        raise
    except EnforcerError as e:
        if desc == "JSON schema":
            raise SchemaError(f"{desc}: {e}", "") from None
        # a regex or choice has no JSON pointer: name the constraint itself
        raise EnforcerError(f"{desc}: {e}") from None
    # the mask LRU evicts on its own first, so masks alone never force dropping the states
    engine = MaskEngine(automaton, index, cache_bytes=min(cache_bytes, memory_bytes // 2))
    return CompiledGrammar(automaton, index, engine, desc, time.perf_counter() - t0, warnings,
                           nfa_bytes=nfa_bytes(nfa), memory_bytes=memory_bytes)


def compile_json_schema(schema: Any, vocab: TokenVocabulary, options: SchemaOptions | None = None, *,
                        registry: referencing.Registry | None = None,
                        mask_cache_bytes: int = 256 << 20,
                        memory_bytes: int = DEFAULT_MEMORY_BYTES) -> CompiledGrammar:
    """Compile a JSON Schema (dict, bool or JSON text) for ``vocab``; cached.

    ``memory_bytes`` bounds the grammar's DFA states, rows and masks together
    (bytes, default 256 MiB, at least 1 MiB); ``mask_cache_bytes`` bounds the
    mask LRU alone (at most half of ``memory_bytes`` is used).

    Raises :class:`SchemaError` with a JSON pointer for invalid or unsupported
    schemas, for schemas that admit no value, nest deeper than
    ``options.max_schema_depth`` or pass the compile budget
    (``options.compile_timeout_s``, ``options.max_nfa_states``), and
    :class:`VocabularyError` when ``vocab`` cannot write the language (see
    :func:`check_vocabulary_covers`).  ``mask_cache_bytes`` bounds the masks
    cached for this grammar.  :class:`EnforcerError` for a bad
    ``memory_bytes``.  Cached in :data:`GRAMMAR_CACHE` unless a ``registry`` is given or the schema
    holds a ``Decimal`` (read with ``parse_float=Decimal``) or a NaN.
    """
    _check_vocab(vocab)
    _check_memory(memory_bytes)
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SchemaError(f"schema is not valid JSON: {e}", "") from None
    options = options or SchemaOptions()
    if mask_cache_bytes < 0:
        raise EnforcerError(f"mask_cache_bytes must be >= 0, got {mask_cache_bytes}")
    # before json.dumps recurses into it (or expands a shared sub-object once per use)
    depth = check_schema_depth(schema, options.max_schema_depth, options.max_nfa_states)

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        with gc_paused():
            nfa, root, warns = compile_schema(schema, options, registry)
            try:
                return _finish(nfa, root, vocab, options.max_depth, "JSON schema", t0, warns, mask_cache_bytes,
                               memory_bytes)
            except SchemaError as e:  # a $ref cycle is named by its machine's (maybe rewritten) pointer
                raise located(e, schema) from None

    if registry is not None:
        return build()
    # property order is part of the language, so the key keeps dict order (and 1 vs 1.0 apart)
    try:
        text = call_with_depth(lambda: json.dumps(schema, allow_nan=False), depth)
    except (ValueError, TypeError):
        # no JSON text to key by, so compiled uncached: NaN or an infinity (ValueError), or a Decimal
        # (parse_float=Decimal), which no text keeps apart from a float compared after rounding
        # (TypeError); the compiler names the pointer of anything that is no JSON value
        return build()
    key = ("schema", text, options, vocab.fingerprint, mask_cache_bytes, memory_bytes)
    return GRAMMAR_CACHE.get_or_build(key, build)


def compile_regex_constraint(pattern: str, vocab: TokenVocabulary, *,
                             memory_bytes: int = DEFAULT_MEMORY_BYTES) -> CompiledGrammar:
    """The whole output must match ``pattern`` (ECMA-262 subset, fully anchored).

    ``memory_bytes`` bounds states, rows and masks together, as for :func:`compile_json_schema`.
    """
    from exl2_enforcer.compile.regex import compile_regex

    _check_vocab(vocab)
    _check_memory(memory_bytes)
    if not isinstance(pattern, str):
        raise EnforcerError(f"pattern must be a str, got {type(pattern).__name__} {pattern!r}")

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        with gc_paused():
            root = compile_regex(nfa, pattern, mode="raw", search=False)
            return _finish(nfa, root, vocab, 1, f"regex {pattern!r}", t0, [], 64 << 20, memory_bytes)

    return GRAMMAR_CACHE.get_or_build(("regex", pattern, vocab.fingerprint, 64 << 20, memory_bytes), build)


def compile_choice(choices: Sequence[str], vocab: TokenVocabulary, *,
                   memory_bytes: int = DEFAULT_MEMORY_BYTES, max_nfa_states: int = 2_000_000) -> CompiledGrammar:
    """The whole output must be exactly one of ``choices``.

    ``memory_bytes`` bounds states, rows and masks together, as for :func:`compile_json_schema`.
    ``max_nfa_states`` bounds the automaton of the choices (shared prefixes and suffixes count
    once; at most one state per byte of the choices, UTF-8): past it, or for an empty, non-string
    or unencodable (lone surrogate) choice, :class:`EnforcerError` is raised naming the parameter.
    """
    _check_vocab(vocab)
    _check_memory(memory_bytes)
    if isinstance(choices, (str, bytes)):  # a str is a Sequence[str]: its characters would be the choices
        raise EnforcerError(f"choices: must be a list of strings, got a {type(choices).__name__} {choices!r:.60}; "
                            "for one choice pass [choice]")
    choices = list(choices)
    if not choices:
        raise EnforcerError("choices: need at least one choice")
    if any(not isinstance(c, str) or not c for c in choices):
        raise EnforcerError("choices: every choice must be a non-empty string")
    if isinstance(max_nfa_states, bool) or not isinstance(max_nfa_states, int) or max_nfa_states < 1:
        raise EnforcerError(f"max_nfa_states must be an int >= 1, got {max_nfa_states!r}")

    def build() -> CompiledGrammar:
        t0 = time.perf_counter()
        nfa = NFA()
        with gc_paused():
            built = LiteralSet(_encoded_choices(choices))
            if built.n_states > max_nfa_states:
                raise EnforcerError(f"choices: {len(choices)} choices need {built.n_states} NFA states, more than"
                                    f" max_nfa_states={max_nfa_states}")
            root = built.emit(nfa)
            return _finish(nfa, root, vocab, 1, f"choice of {len(choices)}", t0, [], 64 << 20, memory_bytes)

    key = ("choice", tuple(choices), vocab.fingerprint, 64 << 20, memory_bytes, max_nfa_states)
    return GRAMMAR_CACHE.get_or_build(key, build)


def _encoded_choices(choices: list[str]) -> list[bytes]:
    try:
        return [c.encode() for c in choices]
    except UnicodeEncodeError:
        bad = next(i for i, c in enumerate(choices) if any(0xD800 <= ord(ch) <= 0xDFFF for ch in c))
        raise EnforcerError(f"choices: choice {bad} holds a lone surrogate (U+D800..U+DFFF), which no UTF-8"
                            " output can spell") from None
