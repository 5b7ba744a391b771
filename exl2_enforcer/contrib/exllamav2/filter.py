"""ExLlamaV2 (0.3.2) filters backed by exl2_enforcer grammars.

Usage::

    from exl2_enforcer.contrib.exllamav2 import JsonSchemaFilter

    f = JsonSchemaFilter(model, tokenizer, schema)
    job = ExLlamaV2DynamicJob(input_ids=ids, max_new_tokens=256, filters=[f], stop_conditions=f.end_ids)

This is the only module of the package that imports exllamav2.  How exllamav2 0.3.2 drives a
filter (``generator/dynamic.py``, ``generator/sampler.py``):

1. when a job samples its first token: ``background_drop()``, then ``begin("")``;
2. before each sample: if every filter of the job ``can_mask_logits()``, the sampler calls
   ``get_next(mask=True)`` (→ ``prepare_logit_mask()`` or its background result), then
   ``mask_logits(logits[0][0])``; otherwise ``get_next()`` (→ ``next()``) gives
   ``(pass_tokens, end_tokens)``, and sampling an end token ends the job ("end_filter");
3. after each sample the job calls ``feed(token)`` with a (1, 1) tensor, then queues
   ``background_prepare_logit_mask`` or ``background_next`` on the generator's 16-thread pool.

Widths: masks follow ``logits.shape[-1]``; ids from the tokenizer's ``get_vocab_size()`` on are
excluded too (the sampler sets them to -inf after the filters).  The list path never sees the
logits and uses ``model.config.vocab_size``: ``logit_filter_exclusive`` writes past the row for
a larger id.

After the value is complete only end ids are allowed: the union of every eos the model's
configs list and ``extra_end_ids`` (Llama 3: 128001, 128008 and 128009).  Pass ``f.end_ids``
as the job's ``stop_conditions`` so that whichever of them the model picks ends the job.

Guarded mode (``policy=GuardPolicy(...)``): every protocol call goes through a
:class:`~exl2_enforcer.watchdog.GuardedMatcher` (timing, per-token deadline with a safe fallback
mask, trip rules) and never raises: an exception is recorded in ``error``, sets
``cancel_requested`` and gets an end-only answer, so one job's failure cannot escape
``generator.iterate()`` and stop the batch.  :class:`~exl2_enforcer.contrib.exllamav2.guarded.GuardedGenerator`
reads ``tripped``, ``cancel_requested`` and ``error`` between steps and cancels or reports the job.
Without a policy nothing of this runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, cast

import numpy as np
import torch
from exllamav2.generator.filters import ExLlamaV2Filter

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.contrib.exllamav2.guarded_mode import GuardedMode
from exl2_enforcer.contrib.exllamav2.support import (
    NO_LIMIT,
    STATE_CACHE_BYTES,
    StateCache,
    VocabTables,
    complete_tokens,
    excluded_mask,
    excluded_mask_from_words,
    fed_token_id,
    parse_trigger,
    plain_safe,
    plain_safe_states,
    resolve_vocab,
)
from exl2_enforcer.errors import EnforcerError, TokenRejected
from exl2_enforcer.grammar import CompiledGrammar, compile_choice, compile_json_schema, compile_regex_constraint
from exl2_enforcer.lru import attached
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import TokenVocabulary
from exl2_enforcer.watchdog import CompletionPlans, GuardedMatcher, GuardPolicy

__all__ = ["JsonSchemaFilter", "RegexFilter", "ChoiceFilter"]


class _EnforcerFilter(GuardedMode, ExLlamaV2Filter):
    """An ExLlamaV2 filter that walks a :class:`Matcher` over a compiled grammar.

    With ``trigger`` (a string, or a token id) the filter starts unconstrained and switches the
    grammar on right after the trigger appears in the generated text: the value must follow
    directly (to let Qwen write its newline after ``<tool_call>``, use ``"<tool_call>\n"``).
    Before that, the only tokens refused are those that would complete the trigger with bytes
    after it that cannot start the value.

    With ``policy`` the filter runs guarded (see the module docstring); ``job_id`` names the job
    in the watchdog's log lines.  The watchdog's rules apply once the grammar is on.
    """

    #: ExLlamaV2Filter's pending background computation (a future from the generator's pool), else None
    background_result: Any

    def __init__(self, model: Any, tokenizer: Any, compile_for: Callable[[TokenVocabulary], CompiledGrammar], *,
                 extra_end_ids: Iterable[int] = (), trigger: str | int | None = None,
                 vocab: TokenVocabulary | None = None, policy: GuardPolicy | None = None,
                 job_id: object = None) -> None:
        super().__init__(model, tokenizer)
        self.policy, self.job_id = policy, job_id
        self._guard: GuardedMatcher | None = None
        #: the exception a guarded protocol call caught (the job failed), else None
        self.error: BaseException | None = None
        self._clock: float | None = None
        self._prepared: tuple[tuple, torch.Tensor | None] | None = None
        self._call_max_s = 0.0
        self.vocab = resolve_vocab(model, tokenizer, vocab, extra_end_ids)
        self.grammar = compile_for(self.vocab)
        self._cache: StateCache = attached(self.grammar, "_exl2_filter_cache", lambda: StateCache(STATE_CACHE_BYTES))
        self._matcher = Matcher(self.grammar)
        if policy is not None:
            self._plan_start(policy)
        self._end = np.asarray(sorted(self.vocab.end_ids), dtype=np.int64)
        self._trigger_id, self._trigger_bytes = parse_trigger(trigger)
        size = getattr(tokenizer, "get_vocab_size", None)
        self._tok_limit = int(size()) if callable(size) else NO_LIMIT
        self._cfg_width: int | None = getattr(getattr(model, "config", None), "vocab_size", None)
        self._mask_width: int | None = None
        self._mask_device = torch.device("cpu")
        self._reset()

    # ------------------------------------------------------------------ protocol

    def begin(self, prefix_str: str | list[str] | None = "") -> None:
        """Called when a job starts: by the dynamic job before its first sample (after
        ``background_drop()``, with ``""``), by the streaming/base generators with the healed
        token's text.  Resets to the start state, so one filter object can serve job after job.
        Token healing (a non-empty ``prefix_str``) is not supported and raises."""
        text = "".join(prefix_str) if isinstance(prefix_str, (list, tuple)) else (prefix_str or "")
        if text:
            raise ValueError("exl2_enforcer filters do not support token healing (begin() got "
                             f"prefix {text!r}); generate with token_healing=False")
        self.background_drop()
        self._reset()

    def feed(self, token: Any) -> None:
        """Called by the job right after each sample with the sampled (1, 1) tensor: advance.

        Raises :class:`TokenRejected` naming the id if the grammar refuses it (only possible
        when the sampler ignored this filter's mask or token list)."""
        if self._guard is not None:
            self._shielded(lambda: self._guarded_feed(fed_token_id(token)), lambda: None)
            return
        tid = fed_token_id(token)
        if not self._active:
            self._watch(tid)
            return
        m = self._matcher
        if m.ended and tid in self.vocab.end_ids:
            return  # a job whose stop conditions lack this end id samples end ids until it stops
        try:
            m.accept_token(tid)
        except TokenRejected as exc:
            raise TokenRejected(tid, f"refused by the exl2_enforcer {self.grammar.description} filter ({exc}); "
                                     "the sampler did not respect the filter's mask or token list") from None

    def next(self) -> tuple[list[int], set[int]]:
        """Called by the sampler before sampling when some filter of the job cannot mask logits
        (the list path), or on the generator's pool via ``background_next()`` after ``feed()``.

        Returns ``(pass_tokens, end_tokens)``: the allowed ids as a sorted list of Python ints
        below the logits width (what ``logit_filter_exclusive`` needs; never empty), and the
        set of allowed ids after which the value is complete (the end ids when the text so far
        is complete, and the text tokens that complete it with nothing allowed after them), so
        that sampling one ends the job with ``eos_reason == "end_filter"``."""
        if self._guard is not None:
            return self._shielded(self._guarded_next, self._fallback_next)
        width = self._list_width()
        if not self._active:
            return self._free_ids(width).tolist(), set()
        return self._allowed_list(width), set(self._end_tokens(width))

    def clone(self, c: _EnforcerFilter | None = None) -> _EnforcerFilter:
        """An independent filter at the same position, sharing the compiled grammar and caches.
        exllamav2 0.3.2's generators never call it; use it to give each job its own filter."""
        if c is None:
            c = type(self).__new__(type(self))
        super().clone(c)
        c.__dict__.update(self.__dict__)  # immutable or shared-by-design fields...
        c._matcher = self._matcher.fork()  # ...except the position, which must not be shared
        c.background_result = None
        if self._guard is not None:
            c._guard = GuardedMatcher(c._matcher, self.policy, self.job_id)
            c._prepared, c.error, c._call_max_s = None, None, 0.0
        return c

    def use_background_worker(self) -> bool:
        """Asked by the job after each ``feed()``: True, so the next mask (or list) is computed
        on the generator's thread pool while the model's next forward pass runs."""
        return True

    def can_mask_logits(self) -> bool:
        """Asked by the sampler each step: True, the filter can mask a logits row in place."""
        return True

    def prepare_logit_mask(self) -> bool:
        """Called on the generator's pool (``background_prepare_logit_mask``) after ``feed()``,
        or by ``get_next(mask=True)`` at the first step: compute and cache the mask of the
        current state for the logits width seen last (before any: ``config.vocab_size``
        padded to 32, the dynamic generator's width).  Returns True as the sampler asserts."""
        width, device = self._mask_width or self._default_width(), self._mask_device
        if self._guard is None:
            self._mask_tensor(width, device)
        else:
            self._shielded(lambda: self._guarded_mask_tensor(width, device), lambda: None)
        return True

    def mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Called by the sampler right before sampling (mask path) with ``logits[0][0]``: set the
        excluded logits to -inf in place and return the tensor.  The mask is sized from
        ``logits.shape[-1]`` and built (once per state, width and device) on the logits' device."""
        width = int(logits.shape[-1])
        self._mask_width, self._mask_device = width, logits.device
        if self._guard is None:
            excluded = self._mask_tensor(width, logits.device)
        else:
            excluded = self._shielded(lambda: self._guarded_mask_tensor(width, logits.device),
                                      lambda: self._fallback_excluded(width, logits.device))
        if excluded is not None:
            logits.masked_fill_(excluded, float("-inf"))
        return logits

    def background_drop(self) -> None:
        """Called by the dynamic job before ``begin()`` of each job: wait for and discard a
        pending background result.  A failed background computation is discarded too, so the
        filter stays reusable (the error recurs if the new state has the same problem)."""
        pending, self.background_result = self.background_result, None
        if pending is not None:
            try:
                pending.result()
            except Exception:  # noqa: BLE001 - the result is dropped either way
                pass

    # ------------------------------------------------------------------ queries

    @property
    def end_ids(self) -> list[int]:
        """The ids that end a complete value (use them as the job's ``stop_conditions``)."""
        return self._end.tolist()

    @property
    def is_active(self) -> bool:
        """Whether the grammar is on (always, without a trigger)."""
        return self._active

    @property
    def is_complete(self) -> bool:
        """Whether the constrained value is complete (only end ids may follow)."""
        return self._active and self._matcher.is_complete()

    @property
    def matcher(self) -> Matcher:
        """The matcher tracking this filter's position (read it, don't move it)."""
        return self._matcher

    @property
    def value_bytes(self) -> bytes:
        """The bytes of the constrained value so far (after the trigger, end tokens excluded)."""
        return self._rest + self._matcher.text_bytes() if self._active else b""

    # ------------------------------------------------------------------ internals

    def _reset(self) -> None:
        self._matcher.reset()
        self._active = self._trigger_id is None and self._trigger_bytes is None
        self._tail = b""  # last bytes of free text, to find a trigger split over tokens
        self._rest = b""  # bytes of the value inside the token that completed the trigger
        if self.policy is not None:
            self._new_guard()

    def _plan_start(self, policy: GuardPolicy) -> None:
        """Record the start state's completion plan now (compile time; :meth:`GuardedGenerator.submit`
        runs this off the generation thread), so that a deadline cut from the first token on has
        a valid way out."""
        CompletionPlans.of(self._matcher).record(self._matcher.grammar.automaton.start, policy.plan_max_bytes)

    def _state_key(self) -> Hashable:
        m = self._matcher
        # a matcher mode other than "normal" (the watchdog's, where present) changes a state's mask
        if m.ended:
            return ("end",)
        auto, mode = self.grammar.automaton, getattr(m, "mode", "normal")
        # a state id is only meaningful within its generation (see Matcher); read both without the
        # lock when no eviction ran meanwhile, so a guarded call never waits for a worker's rows
        seq = auto.seq
        if not seq & 1:
            key = (mode, m.state, auto.generation)
            if auto.seq == seq:
                return key
        with auto.lock:
            return (mode, m.state, auto.generation)

    def _vocab_width(self) -> int:
        return max(self.vocab.n_ids, int(self._end[-1]) + 1 if self._end.size else 0)

    def _default_width(self) -> int:
        return (self._cfg_width + 31) // 32 * 32 if self._cfg_width else self._vocab_width()

    def _list_width(self) -> int:
        return min(self._cfg_width or self._vocab_width(), self._tok_limit)

    def _no_end_error(self, width: int) -> EnforcerError:
        return EnforcerError(
            f"the value is complete, but none of the end ids {self.end_ids} is below the usable width {width} "
            f"(logits width, at most the tokenizer's {self._tok_limit} ids): nothing could end the generation; "
            "pass extra_end_ids= with an end id the model's head has")

    def _allowed_words(self, width: int, guard: GuardedMatcher | None = None) -> np.ndarray:
        """Packed int32 mask of the current state, ``width`` bits; never all zero.  With ``guard``
        the computation runs under its deadline and rules."""
        words = np.zeros((width + 31) // 32, dtype=np.int32)
        m = self._matcher
        try:
            (m.fill_bitmask if guard is None else guard.fill_bitmask)(words, width)
        except EnforcerError as exc:
            if m.ended or m.is_complete():
                raise self._no_end_error(width) from exc
            raise
        if not words.any():
            raise self._no_end_error(width)
        return words

    def _allowed_ids(self, width: int) -> np.ndarray:
        def build() -> tuple[np.ndarray, int]:
            bits = np.unpackbits(self._allowed_words(width).view(np.uint8), bitorder="little", count=width)
            ids = np.flatnonzero(bits)
            return ids, ids.nbytes + 64

        return self._cache.get(("ids", self._state_key(), width), build)

    def _allowed_list(self, width: int) -> list[int]:
        """The allowed ids as the Python list the sampler needs, cached per state (building a list
        of ~100k ints every step costs milliseconds)."""
        return self._cache.get(("list", self._state_key(), width),
                               lambda: (self._allowed_ids(width).tolist(), 40 * self._allowed_ids(width).size + 64))

    def _end_tokens(self, width: int, ids: np.ndarray | None = None) -> frozenset[int]:
        """The end tokens among the allowed ``ids`` (default: the state's own), cached per state."""
        def build() -> tuple[frozenset[int], int]:
            found = self._find_end_tokens(self._allowed_ids(width) if ids is None else ids)
            return found, 64 * len(found) + 256

        return self._cache.get(("ends", self._state_key(), width), build)

    def _find_end_tokens(self, ids: np.ndarray) -> frozenset[int]:
        is_end = np.isin(ids, self._end)
        found = set(ids[is_end].tolist())
        m = self._matcher
        if not m.ended:
            tables = attached(self.vocab, "_exl2_filter_tables", lambda: VocabTables(self.vocab))
            text = ids[~is_end]
            text = text[text < self.vocab.n_ids]
            auto = self.grammar.automaton
            with auto.lock:  # one generation of state ids throughout
                if plain_safe(auto, m.state, plain_safe_states(self.grammar)):
                    text = text[~tables.plain[text]]
                found.update(complete_tokens(auto, m.state, text, tables).tolist())
        return frozenset(found)

    def _mask_tensor(self, width: int, device: torch.device) -> torch.Tensor | None:
        """Bool tensor, True = excluded, ``width`` long on ``device``; None when nothing is."""
        if not self._active:
            k = self._trigger_progress()
            bad = self._trigger_bad_ids(k)
            bad = bad[bad < width]
            if bad.size == 0:
                return None
            return self._cache.get(("free-mask", self._trigger_bytes, k, width, str(device)),
                                   lambda: excluded_mask(bad, width, device))

        def build() -> tuple[torch.Tensor, int]:
            usable = min(width, self._tok_limit)
            return excluded_mask_from_words(self._allowed_words(usable), usable, width, device), width

        return self._cache.get(("mask", self._state_key(), width, str(device)), build)

    # -- two-phase use: free text until the trigger ---------------------------------------

    def _watch(self, tid: int) -> None:
        """Feed one token of free text; switch the grammar on when the trigger completes."""
        if self._trigger_id is not None:
            if tid == self._trigger_id:
                self._activate(b"", tid)
            return
        trig = cast(bytes, self._trigger_bytes)  # no trigger id: the trigger is these bytes
        piece = self.vocab.token_bytes[tid] if 0 <= tid < self.vocab.n_ids else None
        text = self._tail + (piece or b"")
        at = text.find(trig)
        if at < 0:
            self._tail = text[max(0, len(text) - (len(trig) - 1)):]
            return
        self._activate(text[at + len(trig):], tid)

    def _activate(self, rest: bytes, tid: int) -> None:
        self._active = True
        self._matcher.reset()
        if rest:
            auto = self.grammar.automaton
            with auto.lock:  # no eviction between the walk and the push
                sid = auto.walk(auto.start, rest)
                if sid < 0:
                    raise TokenRejected(tid, f"completes the trigger, but the bytes after it, {rest!r}, "
                                        "cannot start the value")
                # Matcher has no "accept these bytes" call: record the state they lead to
                self._matcher.push_state(sid)
            self._rest = rest

    def _trigger_progress(self) -> int:
        """Length of the longest end of the free text that is a proper prefix of the trigger."""
        trig, tail = self._trigger_bytes or b"", self._tail
        return next((k for k in range(min(len(trig) - 1, len(tail)), 0, -1) if tail.endswith(trig[:k])), 0)

    def _trigger_bad_ids(self, k: int) -> np.ndarray:
        """Ids that would complete the trigger (``k`` bytes of it already written) followed by
        bytes that cannot start the value."""
        trig = self._trigger_bytes
        if trig is None:
            return np.zeros(0, dtype=np.int64)

        def build() -> tuple[np.ndarray, int]:
            head, auto, n = trig[:k], self.grammar.automaton, len(trig)
            bad = []
            for i, piece in enumerate(self.vocab.token_bytes):
                if piece:
                    text = head + piece
                    at = text.find(trig)
                    if at >= 0 and len(text) > at + n and auto.walk(auto.start, text[at + n:]) < 0:
                        bad.append(i)
            arr = np.asarray(bad, dtype=np.int64)
            return arr, arr.nbytes + 64

        return self._cache.get(("trigger-bad", trig, k), build)

    def _free_ids(self, width: int) -> np.ndarray:
        k = self._trigger_progress()

        def build() -> tuple[np.ndarray, int]:
            ids = np.setdiff1d(np.arange(width, dtype=np.int64), self._trigger_bad_ids(k))
            return ids, ids.nbytes

        return self._cache.get(("free-ids", self._trigger_bytes, self._trigger_id, k, width), build)


class JsonSchemaFilter(_EnforcerFilter):
    """Constrain the output to one JSON value valid against ``schema`` (dict, bool or JSON text).

    ``options`` (:class:`~exl2_enforcer.compile.schema.compiler.SchemaOptions`) chooses whitespace, nesting depth,
    strict objects...; ``extra_end_ids`` adds end ids to those of the model's configs;
    ``trigger`` starts the constraint only after that text (or token id); ``vocab`` reuses a
    prebuilt :class:`~exl2_enforcer.tokens.vocabulary.TokenVocabulary` instead of reading the tokenizer.
    """

    def __init__(self, model: Any, tokenizer: Any, schema: Any, *, options: SchemaOptions | None = None,
                 extra_end_ids: Iterable[int] = (), trigger: str | int | None = None,
                 vocab: TokenVocabulary | None = None, policy: GuardPolicy | None = None,
                 job_id: object = None) -> None:
        super().__init__(model, tokenizer, lambda v: compile_json_schema(schema, v, options),
                         extra_end_ids=extra_end_ids, trigger=trigger, vocab=vocab, policy=policy, job_id=job_id)
        #: the schema as given (the guarded generator validates results against it)
        self.schema = schema


class RegexFilter(_EnforcerFilter):
    """Constrain the whole output to match ``pattern`` (ECMA-262 subset, fully anchored)."""

    def __init__(self, model: Any, tokenizer: Any, pattern: str, *, extra_end_ids: Iterable[int] = (),
                 trigger: str | int | None = None, vocab: TokenVocabulary | None = None,
                 policy: GuardPolicy | None = None, job_id: object = None) -> None:
        super().__init__(model, tokenizer, lambda v: compile_regex_constraint(pattern, v),
                         extra_end_ids=extra_end_ids, trigger=trigger, vocab=vocab, policy=policy, job_id=job_id)


class ChoiceFilter(_EnforcerFilter):
    """Constrain the whole output to be exactly one of ``choices``."""

    def __init__(self, model: Any, tokenizer: Any, choices: Sequence[str], *, extra_end_ids: Iterable[int] = (),
                 trigger: str | int | None = None, vocab: TokenVocabulary | None = None,
                 policy: GuardPolicy | None = None, job_id: object = None) -> None:
        super().__init__(model, tokenizer, lambda v: compile_choice(choices, v),
                         extra_end_ids=extra_end_ids, trigger=trigger, vocab=vocab, policy=policy, job_id=job_id)
