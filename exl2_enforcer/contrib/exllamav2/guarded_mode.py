"""Guarded mode of the ExLlamaV2 filters: every protocol call through a :class:`GuardedMatcher`.

A mixin of :class:`~exl2_enforcer.contrib.exllamav2.filter._EnforcerFilter`: with a policy, calls are
timed, masks are cut at the per-token deadline with a safe fallback, trip rules apply, and an
exception is recorded (``error``) instead of escaping ``generator.iterate()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, cast

import torch

from exl2_enforcer.contrib.exllamav2.support import excluded_mask_from_words
from exl2_enforcer.errors import TokenRejected
from exl2_enforcer.watchdog import GuardedMatcher, GuardPolicy, WatchStats

if TYPE_CHECKING:
    import numpy as np

    from exl2_enforcer.contrib.exllamav2.support import StateCache
    from exl2_enforcer.errors import EnforcerError
    from exl2_enforcer.grammar import CompiledGrammar
    from exl2_enforcer.matcher import Matcher

log = logging.getLogger(__name__)


class GuardedMode:
    """Guarded-mode methods and queries of the filters (see the module docstring)."""

    if TYPE_CHECKING:
        # state set by the filter's __init__ (and here), and the filter's members these methods use
        policy: GuardPolicy | None
        job_id: object
        guard_clock: Callable[[], float]
        error: BaseException | None
        grammar: CompiledGrammar
        _guard: GuardedMatcher | None
        _clock: float | None
        _prepared: tuple[tuple[Any, ...], torch.Tensor | None] | None
        _call_max_s: float
        _matcher: Matcher
        _active: bool
        _tok_limit: int
        _cache: StateCache

        @property
        def end_ids(self) -> list[int]: ...
        def _plan_start(self, policy: GuardPolicy) -> None: ...
        def _watch(self, tid: int) -> None: ...
        def _mask_tensor(self, width: int, device: torch.device) -> torch.Tensor | None: ...
        def _state_key(self) -> Hashable: ...
        def _allowed_words(self, width: int, guard: GuardedMatcher | None = None) -> np.ndarray: ...
        def _list_width(self) -> int: ...
        def _free_ids(self, width: int) -> np.ndarray: ...
        def _no_end_error(self, width: int) -> EnforcerError: ...
        def _find_end_tokens(self, ids: np.ndarray) -> frozenset[int]: ...
        def _end_tokens(self, width: int, ids: np.ndarray | None = None) -> frozenset[int]: ...

    def guard_with(self, policy: GuardPolicy, job_id: object = None,
                   clock: Callable[[], float] | None = None) -> None:
        """Turn guarded mode on (or change its policy); call it before the job starts.  ``clock``
        (default ``time.monotonic``) measures the job deadline (tests inject a fake one)."""
        self.policy = policy
        if job_id is not None:
            self.job_id = job_id
        if clock is not None:
            self.guard_clock = clock
        self._plan_start(policy)
        self._new_guard()

    def arm(self, job_id: object = None, started: float | None = None) -> None:
        """Called by the guarded generator when it enqueues this filter's job (to name it in log
        lines) and when the job leaves the queue (``started``, a ``time.monotonic()`` value: the
        job deadline counts from there; by default it counts from ``begin()``)."""
        self.job_id, self._clock = job_id, started
        if self._guard is not None:
            self._guard.job_id = job_id
            if started is not None:
                self._guard.stats.started = started

    @property
    def guard(self) -> GuardedMatcher | None:
        """The watchdog of the current job (None when unguarded); a new one per ``begin()``."""
        return self._guard

    @property
    def stats(self) -> WatchStats | None:
        """The watchdog's figures for the current job (None when unguarded)."""
        return None if self._guard is None else self._guard.stats

    @property
    def tripped(self) -> bool:
        """Whether a watchdog rule was broken in the current job."""
        return self._guard is not None and self._guard.tripped

    @property
    def trip_reason(self) -> str | None:
        """Why the watchdog tripped (None if it did not)."""
        return None if self._guard is None else self._guard.stats.trip_reason

    @property
    def cancel_requested(self) -> bool:
        """Whether only the generator can end the job now: a "cancel" trip, an end-token stall,
        or a failure (``error``)."""
        return self.error is not None or (self._guard is not None and self._guard.cancel_requested)

    @property
    def max_call_ms(self) -> float:
        """Longest guarded protocol call of the current job, in milliseconds (all work included)."""
        return 1e3 * self._call_max_s

    def _new_guard(self) -> None:
        started, self._clock = self._clock, None
        self._guard = GuardedMatcher(self._matcher, self.policy, self.job_id,
                                     clock=getattr(self, "guard_clock", time.monotonic))
        if started is not None:
            self._guard.stats.started = started
        self._prepared, self.error, self._call_max_s = None, None, 0.0

    def _shielded(self, call: Callable[[], Any], fallback: Callable[[], Any]) -> Any:
        """One guarded protocol call: timed, and never raising into the generator (a failure is
        recorded in ``error`` and every later call gets the fallback answer)."""
        t0 = time.perf_counter()
        try:
            if self.error is None:
                try:
                    return call()
                except Exception as exc:  # noqa: BLE001 - escaping would stop every job of the batch
                    self.error = exc
                    log.error("exl2_enforcer filter failed: job=%s %s: %s", self.job_id, type(exc).__name__, exc,
                              exc_info=exc)
            return fallback()
        finally:
            self._call_max_s = max(self._call_max_s, time.perf_counter() - t0)

    def _guarded_feed(self, tid: int) -> None:
        if not self._active:
            self._watch(tid)
            return
        try:
            cast(GuardedMatcher, self._guard).accept_token(tid)  # the _guarded_* calls run with a guard
        except TokenRejected as exc:
            raise TokenRejected(tid, f"refused by the guarded exl2_enforcer filter ({exc})") from None

    def _guarded_mask_tensor(self, width: int, device: torch.device) -> torch.Tensor | None:
        """The step's mask under the watchdog.  Computed once per step: ``mask_logits()`` reuses
        what ``prepare_logit_mask()`` made (the guard counts each call as a step).  A mask made
        by a call that tripped (a deadline cut's fallback, a stop) is not the state's: not cached."""
        if not self._active:
            return self._mask_tensor(width, device)
        g, m = self._guard, self._matcher
        if self._prepared is not None and self._prepared[0] == (len(m.history), m.mode, width, str(device)):
            return self._prepared[1]
        key, before, usable = self._state_key(), self._answer_mark(), min(width, self._tok_limit)
        words = self._allowed_words(usable, g)
        if self._answer_mark() != before:  # a trip or a fallback answer: not the state's own mask
            excluded = excluded_mask_from_words(words, usable, width, device)
        else:
            excluded = self._cache.get(("mask", key, width, str(device)),
                                       lambda: (excluded_mask_from_words(words, usable, width, device), width))
        # keyed by the mode after the call: a cut's fallback suits the mode the trip switched to
        self._prepared = ((len(m.history), m.mode, width, str(device)), excluded)
        return excluded

    def _answer_mark(self) -> tuple[bool, int]:
        g = cast(GuardedMatcher, self._guard)
        return g.tripped, g.stats.fallback_calls

    def _guarded_next(self) -> tuple[list[int], set[int]]:
        """The list path under the watchdog.  The Python list the sampler needs (~100k ints on
        a big vocabulary, milliseconds to build) is cached per state, mode and width; an answer
        from a trip or a fallback is not the state's own and is built fresh (it is small)."""
        width = self._list_width()
        if not self._active:
            return self._free_ids(width).tolist(), set()
        g = cast(GuardedMatcher, self._guard)
        key, before = self._state_key(), self._answer_mark()
        packed = g.packed_mask()
        if self._answer_mark() != before:
            ids = self.grammar.index.unpack(packed)
            ids = ids[ids < width]
            if ids.size == 0:
                raise self._no_end_error(width)
            return ids.tolist(), set(self._find_end_tokens(ids))

        def build() -> tuple[tuple[list[int], frozenset[int]], int]:
            ids = self.grammar.index.unpack(packed)
            ids = ids[ids < width]
            if ids.size == 0:
                raise self._no_end_error(width)
            return (ids.tolist(), self._end_tokens(width, ids)), 40 * ids.size + 256

        pass_list, ends = self._cache.get(("list", key, width), build)
        return pass_list, set(ends)

    def _fallback_excluded(self, width: int, device: torch.device) -> torch.Tensor | None:
        """After a failure: only end ids (nothing masked if none fits; the job is cancelled anyway)."""
        ends = [i for i in self.end_ids if i < min(width, self._tok_limit)]
        if not ends:
            return None
        excluded = torch.ones(width, dtype=torch.bool)
        excluded[ends] = False
        return excluded.to(device)

    def _fallback_next(self) -> tuple[list[int], set[int]]:
        ends = [i for i in self.end_ids if i < self._list_width()] or [0]
        return ends, set(ends)
