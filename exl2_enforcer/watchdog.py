"""Hang protection: a time- and size-guarded matcher, independent of any inference library.

A slow constraint, a model rambling in a free-text field, or an end-token loop
all look like a hung generator.  :class:`GuardedMatcher` wraps a
:class:`~.matcher.Matcher`, measures every call with a monotonic clock, and
*trips* when a rule of its :class:`GuardPolicy` is broken.  A Python thread
cannot be interrupted, so the engine cooperates: mask computations receive a
deadline, check it between chunks of work, and the guard falls back to a safe
answer (one token of a shortest completion) instead of waiting.

What a trip does is the policy's ``on_trip``:

* ``"salvage"`` (default): only tokens that bring the value strictly closer to
  complete, then an end token -- the output still validates;
* ``"stop"``: only end tokens from now on;
* ``"cancel"``: like stop, and :attr:`GuardedMatcher.cancel_requested` tells the
  generator loop to cancel the job (``generator.cancel(job)``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from exl2_enforcer.errors import EnforcerError
from exl2_enforcer.engine.mask import MaskTimeout, popcount, write_words
from exl2_enforcer.matcher import Matcher

log = logging.getLogger("exl2_enforcer.watchdog")

TRIP_ACTIONS = ("salvage", "stop", "cancel")


@dataclass(frozen=True)
class GuardPolicy:
    """The limits a guarded job runs under; every one can be changed.

    * ``token_deadline_ms`` (50): most time one filter call may spend; a mask
      computation that passes it is cut short and the job trips.
    * ``explosion_threshold`` (32,768) and ``explosion_steps`` (64): trip after
      this many consecutive steps with more allowed tokens than the threshold
      (a model wandering in free text).
    * ``max_string_bytes`` (4,096): trip when one unbounded free-text string
      grows past this many bytes.
    * ``job_deadline_s`` (None): wall-clock limit of the whole job.
    * ``max_tokens`` (None): most tokens for the constrained value; at the limit
      the job trips (so salvage can still close the value).
    * ``end_stall_steps`` (4): trip when the value is complete and end tokens
      were sampled or offered for this many steps without the job ending (a
      model whose configured eos is not the token it emits).
    * ``on_trip`` ("salvage"): "salvage", "stop" or "cancel".
    """

    token_deadline_ms: float = 50.0
    explosion_threshold: int = 32_768
    explosion_steps: int = 64
    max_string_bytes: int = 4_096
    job_deadline_s: float | None = None
    max_tokens: int | None = None
    end_stall_steps: int = 4
    on_trip: str = "salvage"

    def __post_init__(self) -> None:
        if self.on_trip not in TRIP_ACTIONS:
            raise EnforcerError(f"on_trip must be one of {TRIP_ACTIONS}, got {self.on_trip!r}")
        for name in ("token_deadline_ms", "explosion_threshold", "explosion_steps", "max_string_bytes",
                     "end_stall_steps"):
            if getattr(self, name) <= 0:
                raise EnforcerError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class WatchStats:
    """Per-job figures the watchdog records."""

    steps: int = 0
    calls: int = 0
    call_seconds_total: float = 0.0
    call_seconds_max: float = 0.0
    allowed_max: int = 0
    allowed_total: int = 0
    trip_reason: str | None = None
    trip_step: int | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def mean_call_ms(self) -> float:
        """Mean time of one measured call, in milliseconds."""
        return 1e3 * self.call_seconds_total / self.calls if self.calls else 0.0

    def as_dict(self) -> dict:
        """The figures as plain JSON-ready values."""
        return {"steps": self.steps, "calls": self.calls, "mean_call_ms": round(self.mean_call_ms, 4),
                "max_call_ms": round(1e3 * self.call_seconds_max, 4), "allowed_max": self.allowed_max,
                "allowed_mean": round(self.allowed_total / self.steps, 1) if self.steps else 0,
                "trip_reason": self.trip_reason, "trip_step": self.trip_step,
                "elapsed_s": round(time.monotonic() - self.started, 4)}


class GuardedMatcher:
    """A :class:`Matcher` whose every call is timed and checked against a :class:`GuardPolicy`."""

    def __init__(self, matcher: Matcher, policy: GuardPolicy | None = None, job_id: object = None) -> None:
        self.matcher = matcher
        self.policy = policy or GuardPolicy()
        self.job_id = job_id
        self.stats = WatchStats()
        self.cancel_requested = False
        self._wide_steps = 0
        self._string_bytes = 0
        self._end_stall = 0
        self._counts: dict[int, int] = {}

    # -- trips ----------------------------------------------------------------------
    @property
    def tripped(self) -> bool:
        """Whether a rule was broken (the reason is in ``stats.trip_reason``)."""
        return self.stats.trip_reason is not None

    def trip(self, reason: str) -> None:
        """Record the first trip and switch the matcher to the policy's reaction."""
        if self.tripped:
            return
        self.stats.trip_reason = reason
        self.stats.trip_step = self.stats.steps
        action = self.policy.on_trip
        if action == "salvage":
            self.matcher.salvage()
        else:
            self.matcher.stop()
            self.cancel_requested = action == "cancel"
        log.warning("exl2_enforcer trip: job=%s reason=%s action=%s %s", self.job_id, reason, action,
                    self.stats.as_dict())

    def check_job_deadline(self) -> None:
        """Trip when the job ran past its wall-clock deadline (callable between filter calls)."""
        limit = self.policy.job_deadline_s
        if limit is not None and time.monotonic() - self.stats.started > limit:
            self.trip(f"job deadline of {limit:g} s passed")

    # -- measured calls ---------------------------------------------------------------
    def _measure(self, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.call_seconds_total += dt
        self.stats.call_seconds_max = max(self.stats.call_seconds_max, dt)

    def fill_bitmask(self, out: np.ndarray, logits_width: int) -> None:
        """Allowed-token bits for the next step (see :meth:`Matcher.fill_bitmask`), within the deadline."""
        t0 = time.perf_counter()
        try:
            self.check_job_deadline()
            write_words(self._guarded_mask(t0), out, logits_width, f"job {self.job_id}")
        finally:
            self._measure(t0)

    def allowed_ids(self, logits_width: int | None = None) -> np.ndarray:
        """Sorted allowed ids for the next step, within the deadline."""
        t0 = time.perf_counter()
        try:
            self.check_job_deadline()
            ids = self.matcher.grammar.index.unpack(self._guarded_mask(t0))
        finally:
            self._measure(t0)
        return ids if logits_width is None else ids[ids < logits_width]

    def _guarded_mask(self, t0: float) -> np.ndarray:
        m = self.matcher
        deadline = t0 + self.policy.token_deadline_ms / 1e3
        try:
            packed = m.packed_mask(deadline)
        except MaskTimeout:
            self.trip(f"mask computation passed the per-token deadline of {self.policy.token_deadline_ms:g} ms")
            packed = self._safe_mask(deadline)
        self._count_allowed(packed)
        return packed

    def _safe_mask(self, deadline: float) -> np.ndarray:
        """What to allow when the deadline passed: one step of a shortest completion (or the end)."""
        m = self.matcher
        if m.ended or m.mode == "stop" or m.is_accepting():
            return m.grammar.index.end_packed
        return m.grammar.index.pack(np.asarray([m.next_completion_token()]))

    def _count_allowed(self, packed: np.ndarray) -> None:
        n = popcount(packed)
        st = self.stats
        st.allowed_max = max(st.allowed_max, n)
        st.allowed_total += n
        self._wide_steps = self._wide_steps + 1 if n > self.policy.explosion_threshold else 0
        if self._wide_steps >= self.policy.explosion_steps:
            self.trip(f"more than {self.policy.explosion_threshold} tokens allowed for "
                      f"{self._wide_steps} consecutive steps")

    def accept_token(self, token_id: int) -> None:
        """Advance by one sampled token and apply the size rules."""
        t0 = time.perf_counter()
        try:
            m = self.matcher
            was_ended = m.ended
            if was_ended or (m.is_complete() and token_id in m.grammar.vocab.end_ids):
                self._end_stall += 1
            m.accept_token(token_id)
            self.stats.steps += 1
            self._track_string(token_id)
            if self._end_stall >= self.policy.end_stall_steps:
                self.trip(f"value complete but the job did not stop after {self._end_stall} end tokens")
                self.cancel_requested = True  # only the generator can end such a job
            cap = self.policy.max_tokens
            if cap is not None and self.stats.steps >= cap and not m.ended:
                self.trip(f"max_tokens {cap} reached")
            self.check_job_deadline()
        finally:
            self._measure(t0)

    def _track_string(self, token_id: int) -> None:
        m = self.matcher
        with m.grammar.automaton.lock:  # the state id must not be evicted before use
            fast = m.grammar.automaton.slice_budget(m.state) if not m.ended else None
        if fast is not None and fast == ("plain", None):
            self._string_bytes += len(m.grammar.vocab.token_bytes[token_id] or b"")
            if self._string_bytes > self.policy.max_string_bytes:
                self.trip(f"free-text string longer than {self.policy.max_string_bytes} bytes")
        else:
            self._string_bytes = 0
