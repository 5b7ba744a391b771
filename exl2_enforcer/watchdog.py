"""Hang protection: a time- and size-guarded matcher, independent of any inference library.

A slow constraint, a model rambling in a free-text field or writing digits forever, or an
end-token loop all look like a hung generator.  :class:`GuardedMatcher` wraps a
:class:`~.matcher.Matcher` and gives every call a **hard bound**: engine work that is not
already cached runs on a worker thread (:class:`WorkerPool`) while the caller waits at most
the per-token deadline; past it the call trips and answers from an O(1) fallback that needs
no engine work:

* the next token of a **completion plan** -- a shortest completion of the current DFA state,
  recorded per grammar (:class:`CompletionPlans`) in the background whenever a state's mask
  was computed in time, so that following it only reads finished tables; or, without one,
* the end tokens only (the value is *cut*: ``GuardedMatcher.cut`` is True and it will not
  validate).

The worker's late result is not lost: the next call picks it up and the job goes on
(salvaging).  Besides the wall clock, a deterministic work budget (``token_fuel``: chunks of
mask-walk work per call) trips the same way; tests use it instead of time.

What a trip does is the policy's ``on_trip``:

* ``"salvage"`` (default): only tokens that bring the value strictly closer to complete,
  then an end token -- the output still validates;
* ``"stop"``: only end tokens from now on;
* ``"cancel"``: like stop, and :attr:`GuardedMatcher.cancel_requested` tells the generator
  loop to cancel the job (``generator.cancel(job)``).
"""

from __future__ import annotations

import gc
import logging
import math
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import numpy as np

from exl2_enforcer.bitmask import check_bitmask
from exl2_enforcer.engine.mask import popcount, write_words
from exl2_enforcer.errors import EnforcerError, MaskTimeout, PolicyError, TokenRejected
from exl2_enforcer.lru import attached
from exl2_enforcer.matcher import Matcher

log = logging.getLogger(__name__)

#: what a trip does (GuardPolicy.on_trip)
TripAction = Literal["salvage", "stop", "cancel"]
TRIP_ACTIONS: tuple[str, ...] = get_args(TripAction)
#: ASCII digits, for the runaway-number rule
_DIGITS = frozenset(b"0123456789")


def _check_number(name: str, value: Any, *, integer: bool, optional: bool) -> None:
    if value is None:
        if not optional:
            raise PolicyError(name, "is required (got None)")
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "an int" if integer else "a number"
        raise PolicyError(name, f"must be {want}{' or None' if optional else ''}, got {type(value).__name__} "
                                f"{value!r}")
    if not math.isfinite(value) or value <= 0:
        raise PolicyError(name, f"must be finite and > 0, got {value!r}")


@dataclass(frozen=True)
class GuardPolicy:
    """The limits a guarded job runs under; every one can be changed.

    * ``token_deadline_ms`` (50.0): most wall-clock time one guarded call may take (the
      caller waits no longer; engine work continues on a worker and the call trips).
    * ``token_fuel`` (None: unlimited): most chunks of mask-walk work (with the native walk a
      DFA row built or 4,096 trie nodes; with the numpy walk one trie level or 1,024 nodes of a
      narrow walk) one call may spend; a deterministic cost limit.
    * ``max_string_bytes`` (32,768): trip when one unbounded free-text string grows past this
      many bytes (about 8,000 tokens of English).
    * ``max_number_digits`` (128): trip after this many consecutive ASCII digits (a model
      stuck writing a number).
    * ``explosion_threshold`` (None: off) and ``explosion_steps`` (64): trip after this many
      consecutive steps with more allowed tokens than the threshold.  Off by default: a big
      allowed set is not costly with cached masks, and free text allows most of a vocabulary.
    * ``job_deadline_s`` (None): wall-clock limit of the whole job, in seconds.
    * ``max_tokens`` (None): most tokens for the constrained value; at the limit the job trips
      (so salvage can still close the value).
    * ``end_stall_steps`` (4): trip when the value is complete and end tokens were sampled or
      offered for this many steps without the job ending.
    * ``plan_max_bytes`` (4,096): longest completion plan recorded for the fallback (bytes =
      single-byte tokens); a state farther from complete has no plan and a deadline cut there
      ends the value unfinished.
    * ``on_trip`` ("salvage"): "salvage", "stop" or "cancel".

    Raises :class:`PolicyError` (an :class:`EnforcerError`) naming the field for a wrong type,
    NaN, infinity, zero or a negative value.
    """

    token_deadline_ms: float = 50.0
    token_fuel: int | None = None
    max_string_bytes: int | None = 32_768
    max_number_digits: int | None = 128
    explosion_threshold: int | None = None
    explosion_steps: int = 64
    job_deadline_s: float | None = None
    max_tokens: int | None = None
    end_stall_steps: int = 4
    plan_max_bytes: int = 4_096
    on_trip: TripAction = "salvage"

    _INTS = ("token_fuel", "max_string_bytes", "max_number_digits", "explosion_threshold", "explosion_steps",
             "max_tokens", "end_stall_steps", "plan_max_bytes")
    _OPTIONAL = ("token_fuel", "max_string_bytes", "max_number_digits", "explosion_threshold", "job_deadline_s",
                 "max_tokens")

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "on_trip":
                continue
            _check_number(f.name, getattr(self, f.name), integer=f.name in self._INTS,
                          optional=f.name in self._OPTIONAL)
        if self.on_trip not in TRIP_ACTIONS:
            raise PolicyError("on_trip", f"must be one of {TRIP_ACTIONS}, got {self.on_trip!r}")


@dataclass
class WatchStats:
    """Per-job figures the watchdog records (times in seconds unless the name says ms)."""

    steps: int = 0
    calls: int = 0
    call_seconds_total: float = 0.0
    call_seconds_max: float = 0.0
    allowed_max: int = 0
    allowed_total: int = 0
    #: calls answered by the fallback (plan or end-only) instead of the engine
    fallback_calls: int = 0
    trip_reason: str | None = None
    trip_step: int | None = None
    started: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def mean_call_ms(self) -> float:
        """Mean time of one measured call, in milliseconds."""
        return 1e3 * self.call_seconds_total / self.calls if self.calls else 0.0

    def as_dict(self) -> dict:
        """The figures as plain JSON-ready values."""
        return {"steps": self.steps, "calls": self.calls, "mean_call_ms": round(self.mean_call_ms, 4),
                "max_call_ms": round(1e3 * self.call_seconds_max, 4), "allowed_max": self.allowed_max,
                "allowed_mean": round(self.allowed_total / self.steps, 1) if self.steps else 0,
                "fallback_calls": self.fallback_calls, "trip_reason": self.trip_reason,
                "trip_step": self.trip_step, "elapsed_s": round(self.clock() - self.started, 4)}


# ----------------------------------------------------------------------------- workers


class WorkerPool:
    """Daemon threads that run engine work a caller may stop waiting for.

    A thread is started when none is idle (at most ``max_threads``; beyond that work queues
    and its callers fall back), and ends after ``idle_s`` seconds without work.  Work stuck
    for minutes therefore holds one thread, never the caller.
    """

    def __init__(self, max_threads: int = 64, idle_s: float = 30.0) -> None:
        if max_threads < 1:
            raise EnforcerError(f"WorkerPool max_threads must be >= 1, got {max_threads!r}")
        self.max_threads, self.idle_s = max_threads, idle_s
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` on a worker; returns its future."""
        fut: Future = Future()
        self._tasks.put((fn, fut))
        with self._lock:
            if self._idle == 0 and self._threads < self.max_threads:
                self._threads += 1
                threading.Thread(target=self._loop, name="exl2-enforcer-guard", daemon=True).start()
        return fut

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                fn, fut = self._tasks.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    self._threads -= 1
                return
            with self._lock:
                self._idle -= 1
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                fut.set_exception(exc)


#: the pool every guard uses unless given another
DEFAULT_POOL = WorkerPool()


class WorkBudget(float):
    """A deadline (a ``time.perf_counter()`` value) that also counts the engine's checks.

    The mask engine checks ``time.perf_counter() > deadline`` between chunks of its work;
    Python asks this subclass's ``__lt__`` first, so every check spends one unit of ``fuel``
    and reports the deadline passed once the fuel is gone (or the time is up).
    """

    fuel: int | None
    used: int

    def __new__(cls, deadline: float, fuel: int | None = None) -> WorkBudget:
        obj = super().__new__(cls, deadline)
        obj.fuel, obj.used = fuel, 0
        return obj

    def __lt__(self, other: Any) -> bool:  # ``now > budget`` lands here
        self.used += 1
        if self.fuel is not None and self.used > self.fuel:
            return True
        return float(self) < other

    def __gt__(self, other: Any) -> bool:
        return float(self) > other

    @property
    def exhausted(self) -> bool:
        """Whether the fuel ran out (as opposed to the time)."""
        return self.fuel is not None and self.used > self.fuel


# ----------------------------------------------------------------------------- plans


class CompletionPlans:
    """Per grammar: the next single-byte token of a shortest completion of DFA states.

    ``hops[s] = (token id, next state)``; following hops from a recorded state reaches an
    accepting state, reading only DFA rows that are already computed.  Recorded by
    :meth:`record` on a worker (it may build rows and the completion distances); read by the
    fallback in O(1).  At most ``max_states`` states are kept (oldest dropped with their
    chains intact: a dropped state is simply not planned any more).
    """

    def __init__(self, matcher: Matcher, max_states: int = 1 << 16) -> None:
        self.grammar = matcher.grammar
        self.max_states = max_states
        self.hops: OrderedDict[int, tuple[int, int]] = OrderedDict()
        #: the automaton generation the hops' state ids belong to (an eviction clears them)
        self.generation = matcher.grammar.automaton.generation
        self._lock = threading.Lock()
        self._queued: set[int] = set()
        self._distances: Any = None  # the engine's completion distances, once a record built them

    @staticmethod
    def of(matcher: Matcher) -> CompletionPlans:
        """The plans shared by every guard of ``matcher``'s grammar."""
        return attached(matcher.grammar, "completion_plans", lambda: CompletionPlans(matcher))

    def _sync(self) -> int:
        """Forget the hops of an older automaton generation; returns the current one."""
        gen = self.grammar.automaton.generation
        if gen != self.generation:
            with self._lock:
                if gen != self.generation:
                    self.hops.clear()
                    self.generation = gen
        return gen

    def next_hop(self, sid: int) -> tuple[int, int] | None:
        """``(token id, next state)`` of a recorded plan, else None (O(1), no engine work)."""
        self._sync()
        return self.hops.get(sid)

    def planned(self, sid: int) -> bool:
        """Whether a completion from ``sid`` is known (accepting states need none)."""
        return sid in self.hops or self.grammar.automaton.is_accepting(sid)

    def schedule(self, sid: int, pool: WorkerPool, max_bytes: int) -> None:
        """Record the plan of ``sid`` (an id of the current generation) in the background unless
        known or already queued."""
        gen = self._sync()
        if self.planned(sid):
            return
        with self._lock:
            if sid in self._queued:
                return
            self._queued.add(sid)
        pool.submit(lambda: self.record(sid, max_bytes, generation=gen))

    def record(self, sid: int, max_bytes: int, *, known_rows_only: bool = False,
               generation: int | None = None) -> bool:
        """Compute and keep a shortest completion of ``sid`` (at most ``max_bytes`` long);
        returns whether one is known now.  With ``known_rows_only`` it builds nothing (no DFA
        row, no distances: gives up instead), so it is safe and cheap while a worker holds the
        automaton's lock -- what the fallback tries for a state without a plan."""
        auto = self.grammar.automaton
        seq = auto.seq
        gen = self._sync()
        if generation is not None and generation != gen:  # ``sid`` was of an evicted generation
            with self._lock:
                self._queued.discard(sid)
            return False
        try:
            if known_rows_only:  # never waits for the lock: an eviction meanwhile discards the path
                path = None if seq & 1 else self._path(sid, max_bytes, True)
            else:
                with auto.lock:  # state ids stay in one generation throughout the walk
                    path = self._path(sid, max_bytes, False) if auto.generation == gen else None
        finally:
            with self._lock:
                self._queued.discard(sid)
        if path is None or auto.seq != seq:
            return False
        with self._lock:
            if self.generation != gen:
                return False
            for s, hop in path:
                self.hops[s] = hop
            while len(self.hops) > self.max_states:
                self.hops.popitem(last=False)
        return True

    def _path(self, sid: int, max_bytes: int, known_rows_only: bool) -> list[tuple[int, tuple[int, int]]] | None:
        auto, index = self.grammar.automaton, self.grammar.index
        single = index.single_byte_ids
        path: list[tuple[int, tuple[int, int]]] = []
        s = sid
        if not self.planned(s) and self._distances is None:
            if known_rows_only:
                return None
            self._distances = self.grammar.engine.distances()
        dist = self._distances
        while not self.planned(s):
            if len(path) >= max_bytes:
                return None
            if known_rows_only and not auto.has_row(s):
                return None
            here = dist.of_state(s)
            auto.ensure_rows([s])
            hop = None
            for c, nxt in enumerate(auto.table[s].tolist()):
                tok = int(single[auto.class_rep[c]])
                if nxt >= 0 and tok >= 0 and dist.of_state(nxt) == here - 1:
                    hop = (tok, int(nxt))
                    break
            if hop is None:
                return None
            path.append((s, hop))
            s = hop[1]
        return path




class _MaskMemo:
    """Per grammar: packed masks by (state, mode), so that a cached answer needs no worker."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple[int, int, str], np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    @staticmethod
    def of(matcher: Matcher) -> _MaskMemo:
        return attached(matcher.grammar, "guard_masks", _MaskMemo)

    def get(self, key: tuple[int, int, str]) -> np.ndarray | None:
        """``key``: (automaton generation, state id, matcher mode)."""
        return self.items.get(key)

    def put(self, key: tuple[int, int, str], packed: np.ndarray) -> None:
        with self.lock:
            if key in self.items:
                return
            self.items[key] = packed
            self.nbytes += packed.nbytes
            while self.nbytes > self.max_bytes and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.nbytes -= old.nbytes


# ----------------------------------------------------------------------------- the guard


class GuardedMatcher:
    """A :class:`Matcher` whose every call is bounded and checked against a :class:`GuardPolicy`.

    ``clock`` (default ``time.monotonic``) measures the job deadline and the figures; tests
    inject a fake one.  ``pool`` runs engine work (default :data:`DEFAULT_POOL`).  Each call
    returns within ``token_deadline_ms`` plus the interpreter's switch interval (5 ms by
    default; a worker running pure Python gives the GIL back at that rate).
    """

    def __init__(self, matcher: Matcher, policy: GuardPolicy | None = None, job_id: object = None, *,
                 clock: Callable[[], float] = time.monotonic, pool: WorkerPool | None = None) -> None:
        self.matcher = matcher
        self.policy = policy or GuardPolicy()
        self.job_id = job_id
        self.clock = clock
        self.pool = pool or DEFAULT_POOL
        self.stats = WatchStats(started=clock(), clock=clock)
        self.cancel_requested = False
        #: whether the value was ended unfinished because no safe completion was known in time
        self.cut = False
        self.plans = CompletionPlans.of(matcher)
        self._memo = _MaskMemo.of(matcher)
        # per grammar: whether a state is inside a free-text string (a pure function)
        self._free_states: dict[tuple[int, int], bool] = attached(matcher.grammar, "free_string_states", dict)
        self._busy: Future | None = None  # engine work that outlived its call
        self._busy_polled = False  # a call already waited for it in vain
        self._lost: int | None = None  # a token whose step is still running on a worker
        self._after_lost: list[int] = []  # end tokens fed meanwhile
        self._wide_steps = 0
        self._string_bytes = 0
        self._digits = 0
        self._end_stall = 0
        self.plans.schedule(matcher.state, self.pool, self.policy.plan_max_bytes)

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
        """Trip when the job ran past its deadline (callable between filter calls)."""
        limit = self.policy.job_deadline_s
        if limit is not None and self.clock() - self.stats.started > limit:
            self.trip(f"job deadline of {limit:g} s passed")

    # -- bounded calls ------------------------------------------------------------------
    def _budget(self, t0: float) -> WorkBudget:
        return WorkBudget(t0 + self.policy.token_deadline_ms / 1e3, self.policy.token_fuel)

    def _measure(self, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.call_seconds_total += dt
        self.stats.call_seconds_max = max(self.stats.call_seconds_max, dt)

    def _wait(self, fut: Future, budget: WorkBudget) -> bool:
        """Wait for ``fut`` until the budget's deadline; whether it finished.

        The wait ends two switch intervals early (at most a quarter of the deadline): a worker
        running Python holds the GIL for one interval before this thread may ask for it, and
        until its current bytecode ends after that (measured: up to ~2 intervals)."""
        slack = min(2 * sys.getswitchinterval(), self.policy.token_deadline_ms / 4e3)
        try:
            fut.result(timeout=max(0.0, float(budget) - slack - time.perf_counter()))
        except FutureTimeout:
            return False
        except BaseException:  # noqa: BLE001 - the caller reads the exception from the future
            return True
        return True

    def _deadline_trip(self) -> None:
        self.trip(f"engine work passed the per-token deadline of {self.policy.token_deadline_ms:g} ms")

    def _settle(self, budget: WorkBudget) -> bool:
        """Pick up engine work a former call left running; False while it still runs."""
        fut = self._busy
        if fut is None:
            return True
        # the first call after a cut waits its budget for the late work; later ones only look,
        # so that a job whose engine hangs costs its batch O(1) per step, not a deadline
        if not (fut.done() if self._busy_polled else self._wait(fut, budget)):
            self._busy_polled = True
            return False
        self._busy, self._busy_polled = None, False
        if self._lost is not None:
            lost, self._lost = self._lost, None
            exc = fut.exception()
            if exc is not None:
                raise exc
            self.matcher.accept_token(lost)  # its step is cached now
            for tid in self._after_lost:
                self.matcher.accept_token(tid)
            self._after_lost = []
        return True

    # -- masks ------------------------------------------------------------------------
    def packed_mask(self) -> np.ndarray:
        """The packed mask of the next step (do not modify), within the deadline; rules applied."""
        t0 = time.perf_counter()
        try:
            self.check_job_deadline()
            packed = self._guarded_mask(self._budget(t0))
            self._count_allowed(packed)
            return packed
        finally:
            self._measure(t0)

    def fill_bitmask(self, out: np.ndarray, logits_width: int) -> None:
        """Allowed-token bits for the next step (see :meth:`Matcher.fill_bitmask`), within the deadline."""
        out = check_bitmask(out, logits_width, name="out")
        write_words(self.packed_mask(), out, logits_width, f"job {self.job_id}")

    def allowed_ids(self, logits_width: int | None = None) -> np.ndarray:
        """Sorted allowed ids (int64) for the next step, within the deadline."""
        ids = self.matcher.grammar.index.unpack(self.packed_mask())
        return ids if logits_width is None else ids[ids < logits_width]

    def _guarded_mask(self, budget: WorkBudget) -> np.ndarray:
        m = self.matcher
        if not self._settle(budget):
            return self._fallback_mask()
        if m.ended or m.mode == "stop":
            return m.packed_mask()
        auto = m.grammar.automaton
        gen = auto.generation
        sid = m.state
        key = (gen, sid, m.mode)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        engine, mode, here = m.grammar.engine, m.mode, m.dfa_state

        def work() -> np.ndarray:
            with auto.lock:  # an eviction since the call began: the same state, re-interned
                now = auto.reintern(here)
                return engine.salvage_mask(now, budget) if mode == "salvage" else engine.mask(now, budget)

        fut = self.pool.submit(work)
        if not self._wait(fut, budget):
            self._busy = fut
            self._deadline_trip()
            return self._fallback_mask()
        try:
            packed = fut.result()
        except MaskTimeout:
            if budget.exhausted:
                self.trip(f"mask work passed the per-call fuel of {self.policy.token_fuel} chunks")
            else:
                self._deadline_trip()
            return self._fallback_mask()
        self._memo.put(key, packed)
        if mode == "normal":
            self.plans.schedule(sid, self.pool, self.policy.plan_max_bytes)
        return packed

    def _fallback_mask(self) -> np.ndarray:
        """O(1) answer while the engine is busy: the next token of a known completion plan,
        else only the end tokens (the value is cut when it is not complete)."""
        m = self.matcher
        self.stats.fallback_calls += 1
        index = m.grammar.index
        if self._lost is None and not m.ended:
            if m.is_accepting():
                return index.end_packed
            hop = None
            if m.mode != "stop":
                hop = self.plans.next_hop(m.state)
                if hop is None and self.plans.record(m.state, self.policy.plan_max_bytes, known_rows_only=True):
                    hop = self.plans.next_hop(m.state)
            if hop is not None:
                return index.pack(np.asarray([hop[0]]))
        if not self.cut and not (self._lost is None and (m.ended or m.is_accepting())):
            self.cut = True
            log.warning("exl2_enforcer cut: job=%s no completion known in time; only end tokens now", self.job_id)
            m.stop()
        return index.end_packed

    def _count_allowed(self, packed: np.ndarray) -> None:
        st, threshold = self.stats, self.policy.explosion_threshold
        n = popcount(packed)
        st.allowed_max = max(st.allowed_max, n)
        st.allowed_total += n
        if threshold is None:
            return
        self._wide_steps = self._wide_steps + 1 if n > threshold else 0
        if self._wide_steps >= self.policy.explosion_steps:
            self.trip(f"more than {threshold} tokens allowed for {self._wide_steps} consecutive steps")

    # -- tokens -------------------------------------------------------------------------
    def accept_token(self, token_id: int) -> None:
        """Advance by one sampled token (within the deadline) and apply the size rules.

        Raises :class:`TokenRejected` if the grammar refuses the token."""
        t0 = time.perf_counter()
        try:
            self._advance(token_id, self._budget(t0))
            self.stats.steps += 1
            self._apply_rules(token_id)
            self.check_job_deadline()
        finally:
            self._measure(t0)

    def _advance(self, tid: int, budget: WorkBudget) -> None:
        m = self.matcher
        end = tid in m.grammar.vocab.end_ids
        if not self._settle(budget):
            if self._lost is not None:
                if not end:
                    raise TokenRejected(tid, "only end tokens were offered while the previous token's step ran")
                self._after_lost.append(tid)
                return
            self._note_end(tid, end)
            m.accept_token(tid)  # a plan token or an end token: its row is computed
            return
        self._note_end(tid, end)
        if end or m.ended or m.peek_next_state(tid) is not None:
            m.accept_token(tid)
            return
        fut = self.pool.submit(lambda: m.next_state(tid))
        if not self._wait(fut, budget):
            self._busy, self._lost = fut, tid
            self._deadline_trip()
            return
        fut.result()
        m.accept_token(tid)

    def _note_end(self, tid: int, end: bool) -> None:
        m = self.matcher
        # while a worker runs, is_complete() could wait for the automaton's lock: not asked then
        if m.ended or (end and self._busy is None and m.is_complete()):
            self._end_stall += 1

    def _apply_rules(self, tid: int) -> None:
        p, m = self.policy, self.matcher
        if self._end_stall >= p.end_stall_steps:
            self.trip(f"value complete but the job did not stop after {self._end_stall} end tokens")
            self.cancel_requested = True  # only the generator can end such a job
        if p.max_tokens is not None and self.stats.steps >= p.max_tokens and not m.ended:
            self.trip(f"max_tokens {p.max_tokens} reached")
        piece = m.grammar.vocab.token_bytes[tid] if 0 <= tid < len(m.grammar.vocab.token_bytes) else None
        self._track_digits(piece or b"")
        self._track_string(piece or b"")

    def _track_digits(self, piece: bytes) -> None:
        cap = self.policy.max_number_digits
        if cap is None or not piece:
            return
        run = len(piece) - len(piece.rstrip(b"0123456789"))
        self._digits = self._digits + run if run == len(piece) else run
        if self._digits > cap:
            self.trip(f"more than {cap} consecutive digits")

    def _track_string(self, piece: bytes) -> None:
        cap, m = self.policy.max_string_bytes, self.matcher
        if cap is None or m.ended or self._lost is not None:
            return
        gen = m.grammar.automaton.generation
        key = (gen, m.state)
        free = self._free_states.get(key)
        if free is None:
            free = m.in_free_string()
            if m.grammar.automaton.generation == gen:
                self._free_states[key] = free
        if free:
            self._string_bytes += len(piece)
            if self._string_bytes > cap:
                self.trip(f"free-text string longer than {cap} bytes")
        else:
            self._string_bytes = 0

    # -- results ------------------------------------------------------------------------
    @property
    def position_known(self) -> bool:
        """False while a token's step is still running on a worker (the matcher lags behind)."""
        return self._lost is None

    @property
    def complete_value(self) -> bool:
        """Whether the job ended with a complete value (an end token after it, no cut)."""
        return not self.cut and self._lost is None and self.matcher.complete_value

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for engine work a call left running and pick it up;
        whether the guard is idle now.  Never raises."""
        fut = self._busy
        if fut is None:
            return True
        self._busy_polled = False  # this caller is willing to wait
        try:
            return self._settle(WorkBudget(time.perf_counter() + timeout_s))
        except Exception:  # noqa: BLE001 - a failed late step leaves the value unfinished
            self._busy = None
            return True


def freeze_compiled() -> int:
    """Move every object alive now (models, tokenizers, compiled grammars) out of the cyclic
    garbage collector's reach, so that a full collection does not pause every thread for
    hundreds of milliseconds (see docs/watchdog.md).  Call it after loading and compiling;
    objects created later are collected as usual.  Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
