"""Run ExLlamaV2 (0.3.2) jobs under the watchdog: deadlines, trips, cancellation, per-job failures.

Usage::

    from exl2_enforcer.contrib.exllamav2.guarded import GuardedGenerator
    from exl2_enforcer.watchdog import GuardPolicy

    gg = GuardedGenerator(generator, policy=GuardPolicy(token_deadline_ms=50, job_deadline_s=30))
    gg.submit("Answer in JSON: ...", schema, max_new_tokens=512)
    for result in gg.run():
        print(result.end_reason, result.valid, result.json)

or, for a script, :func:`generate_json` with a deadline for the whole batch.

:class:`GuardedGenerator` steps the wrapped ``ExLlamaV2DynamicGenerator`` exactly as
``iterate()`` does and, between steps, looks at every job it enqueued:

* a job past its deadline (``policy.job_deadline_s`` from the step that started it: prefill
  counts, waiting in the queue does not; or the batch deadline, which also covers queued jobs)
  is tripped even while no filter call happens; a job that has not sampled yet, or whose
  policy says "cancel", is cancelled at once; a salvaging/stopping job gets ``grace_s``
  seconds more to close its value, then is cancelled;
* a job whose filter asks for it (``cancel_requested``: a "cancel" trip, an end-token stall,
  a failure) is cancelled with ``generator.cancel(job)``;
* a filter's pending background work is removed from the generator's queue and drained
  (``background_drop()``) before its job is cancelled and when its job ends, because
  exllamav2's ``cancel()`` neither waits for nor drops it, and a finished job's last
  ``feed()`` queues work that would otherwise run after the job is gone.

Guarded filters never raise (see :mod:`exl2_enforcer.contrib.exllamav2`); an exception that
still escapes ``generator.iterate()`` is charged to the job found in its traceback (or, if
none, to every job in the running batch), and ``run()`` never raises it.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

import torch
from exllamav2.generator import ExLlamaV2DynamicJob
from jsonschema import Draft202012Validator, validators

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.contrib.exllamav2.filter import JsonSchemaFilter
from exl2_enforcer.watchdog import DEFAULT_POOL, GuardPolicy, WorkerPool

__all__ = ["END_REASONS", "STATUSES", "GuardedGenerator", "GuardedResult", "generate_json", "validate_bounded"]

log = logging.getLogger(__name__)

#: every ``GuardedResult.end_reason``
END_REASONS = ("completed", "salvaged", "stopped", "cancelled", "max_tokens", "not_started", "error")
#: every ``GuardedResult.status``
STATUSES = ("completed", "salvaged", "cut", "unverified", "failed")


@dataclass
class GuardedResult:
    """What one guarded job produced and why it ended.

    * ``text``: the generated text (exact token bytes, end tokens dropped, decoded as UTF-8);
    * ``complete``: whether the constrained value is complete; ``json``: the parsed value
      when complete, else None; ``valid``: whether it validates against the schema
      (jsonschema, the schema's draft, 2020-12 by default, with that draft's format checker);
      for a filter without a schema, whether the value is complete;
    * ``end_reason``: one of :data:`END_REASONS`: "completed" (no trip), "salvaged" (tripped,
      closed by salvage), "stopped" (tripped with the "stop" action, or ended by a stop
      condition with the value incomplete), "cancelled" (the watchdog cancelled the job, or its
      policy's action is "cancel"), "max_tokens" (the job's ``max_new_tokens`` ran out first),
      "not_started" (the batch deadline passed while the job was still compiling or queued:
      with an unpaged generator jobs run one at a time), "error" (the filter failed, the schema
      did not compile in time, or the job did not fit the generator's cache: ``error`` says);
    * ``status`` (one of :data:`STATUSES`) sums it up at a glance: "completed" (the model wrote
      the whole value and it validates), "salvaged" (valid, but the watchdog closed it),
      "cut" (no valid value), "unverified" (complete, but validation could not run to the end:
      ``validation_error``), "failed" (``error``);
    * ``trip_reason``, ``eos_reason`` (exllamav2's, when the job ended by itself) and ``stats``
      (the watchdog's figures plus ``max_protocol_call_ms``, ``new_tokens``, ``elapsed_s``: since
      the job started, 0 if it never left the queue, and ``queued_s``: time in the queue).
    """

    job_id: object
    text: str
    json: Any
    valid: bool
    end_reason: str
    complete: bool = False
    trip_reason: str | None = None
    error: str | None = None
    eos_reason: str | None = None
    stats: dict = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    #: the job's position in enqueue order within its GuardedGenerator
    index: int = 0
    #: why jsonschema could not give a verdict (e.g. a schema that refers to itself forever)
    validation_error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the job gave a valid value (completed or salvaged: see ``status``)."""
        return self.valid and self.end_reason in ("completed", "salvaged")

    @property
    def status(self) -> str:
        """One of :data:`STATUSES`: who finished the value, and whether there is one."""
        if self.end_reason == "error":
            return "failed"
        if self.valid and self.end_reason in ("completed", "salvaged"):
            return self.end_reason
        return "unverified" if self.complete and self.validation_error else "cut"

    @property
    def completed(self) -> bool:
        """Whether the model itself wrote the whole value, untouched by the watchdog, and it validates."""
        return self.status == "completed"

    @property
    def salvaged(self) -> bool:
        """Whether the value is valid but was closed by the watchdog's salvage."""
        return self.status == "salvaged"


@dataclass
class _Job:
    """What the guarded generator keeps about one job it enqueued (or is compiling for)."""

    job_id: object
    job: Any
    filter: Any
    validator: Any
    enqueued: float
    prompt_len: int
    order: int
    started: float | None = None
    trip_reason: str | None = None
    error: str | None = None
    #: the filter being built on a worker (``submit``), and what turns it into a job
    compiling: Future | None = None
    make_job: Callable[[Any], Any] | None = None


def _validator(schema: Any) -> Any:
    """The schema's draft validator (2020-12 unless ``$schema`` names another) with its format checker."""
    if schema is None:
        return None
    if isinstance(schema, (str, bytes)):
        schema = json.loads(schema)
    cls = validators.validator_for(schema, default=Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_bounded(validator: Any, value: Any) -> tuple[bool, str | None]:
    """``(valid, why no verdict)``: jsonschema's verdict, or False and the reason when it cannot
    give one (a schema that refers to itself without consuming the value recurses forever:
    ``RecursionError``; a broken schema or format checker).  Never raises."""
    try:
        return bool(validator.is_valid(value)), None
    except RecursionError:
        return False, ("validation recursed without end (RecursionError): the schema refers to itself "
                       "without consuming the value")
    except Exception as exc:  # noqa: BLE001 - a result must come back whatever the validator does
        return False, f"validation failed: {type(exc).__name__}: {exc}"


def _prompt_ids(prompt: Any, tokenizer: Any, add_bos: bool) -> torch.Tensor:
    """A (1, n) id tensor from text (encoded with ``tokenizer``), a list of ids or a tensor."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_bos=add_bos)
    ids = prompt if isinstance(prompt, torch.Tensor) else torch.tensor(list(prompt), dtype=torch.long)
    return ids.view(1, -1).long()


def _fit_error(exc: BaseException, generator: Any, prompt_len: int, max_new_tokens: int | None) -> str:
    """A clear message for a job the generator refused at enqueue (most often: its cache is too small)."""
    total = getattr(generator, "max_total_tokens", None)
    need = prompt_len + (max_new_tokens or 0)
    if total is not None and "pages" in str(exc):
        paged = getattr(generator, "paged", True)
        return (f"the job does not fit the generator's cache: prompt {prompt_len} + max_new_tokens "
                f"{max_new_tokens} = {need} tokens, the cache holds {total}"
                f"{'' if paged else ' (unpaged: one page of max_seq_len)'}; lower max_new_tokens or "
                f"raise the cache's max_seq_len ({type(exc).__name__}: {exc})")
    return f"the generator refused the job at enqueue ({type(exc).__name__}: {exc})"


class GuardedGenerator:
    """An ``ExLlamaV2DynamicGenerator`` whose jobs run under a :class:`GuardPolicy`.

    ``policy`` is the default for filters built by :meth:`submit` and for unguarded filters
    given to :meth:`enqueue`; ``grace_s`` is how long a job tripped by a deadline may keep
    salvaging (or emitting its end token) before it is cancelled; ``options`` are the
    :class:`SchemaOptions` of filters built by :meth:`submit`; ``compile_timeout_s`` (60) bounds
    the compile a :meth:`submit` starts on a worker thread (past it the job fails alone);
    ``clock`` (default ``time.monotonic``) measures every deadline (tests inject a fake one).
    """

    def __init__(self, generator: Any, policy: GuardPolicy | None = None, *, grace_s: float = 1.0,
                 options: SchemaOptions | None = None, compile_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, pool: WorkerPool | None = None) -> None:
        for name, value in (("grace_s", grace_s), ("compile_timeout_s", compile_timeout_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                    or value == float("inf"):
                raise ValueError(f"GuardedGenerator {name} must be a finite number >= 0, got {value!r}")
        self.generator = generator
        self.policy = policy or GuardPolicy()
        self.grace_s = grace_s
        self.options = options
        self.compile_timeout_s = compile_timeout_s
        self.clock = clock
        self.pool = pool or DEFAULT_POOL
        #: ``clock()`` value after which every job is tripped (set by :meth:`stream`/:meth:`run`)
        self.batch_deadline: float | None = None
        self._jobs: dict[int, _Job] = {}  # by enqueue order: every job without a result yet
        self._by_job: dict[int, _Job] = {}  # by id() of the exllamav2 job, once enqueued
        self._ready: list[GuardedResult] = []  # results decided outside a step
        self._compiles: dict[str, _Job] = {}  # the first job submitted per schema and options
        self._count = 0

    # ------------------------------------------------------------------ jobs in

    def enqueue(self, job: Any, schema_filter: Any, *, schema: Any = None, job_id: object = None) -> object:
        """Enqueue an ``ExLlamaV2DynamicJob`` whose ``filters`` hold ``schema_filter`` (an
        exl2_enforcer filter; guarded with this generator's policy if it is not already).
        ``schema`` (default: the filter's own) validates the result.  Returns the job id:
        ``job_id``, else the job's identifier, else its position in enqueue order.  A job the
        generator refuses (it does not fit the cache, say) gets an "error" result; this raises
        only for bad arguments."""
        if not any(f is schema_filter for f in job.filters):
            raise ValueError("schema_filter must be one of the job's filters")
        jid = job_id if job_id is not None else job.identifier if job.identifier is not None else self._count
        validator = _validator(schema if schema is not None else getattr(schema_filter, "schema", None))
        rec = _Job(jid, None, None, validator, self.clock(), 0, self._count)
        self._count += 1
        self._jobs[rec.order] = rec
        self._admit(rec, job, schema_filter)
        return jid

    def submit(self, prompt: Any, schema: Any, *, max_new_tokens: int = 512, gen_settings: Any = None,
               seed: int | None = None, policy: GuardPolicy | None = None, options: SchemaOptions | None = None,
               job_id: object = None, add_bos: bool = True, **job_kwargs: Any) -> object:
        """Build and enqueue a job for ``prompt`` (text, or token ids) constrained to ``schema``:
        a guarded :class:`JsonSchemaFilter` whose end ids are also the job's ``stop_conditions``.
        The schema compiles on a worker thread (bounded by ``compile_timeout_s``); the job enters
        the generator once it has.  A schema that fails to compile gives an "error" result.
        Other keyword arguments go to ``ExLlamaV2DynamicJob``.  Returns the job id (``job_id``,
        else the position in enqueue order)."""
        gen = self.generator
        ids = _prompt_ids(prompt, gen.tokenizer, add_bos)
        jid = job_id if job_id is not None else self._count
        options, policy = options or self.options, policy or self.policy
        rec = _Job(jid, None, None, None, self.clock(), int(ids.shape[-1]), self._count)
        self._count += 1

        key = f"{json.dumps(schema, sort_keys=True, default=str)}|{options!r}"
        first = self._compiles.setdefault(key, rec)

        def build_filter() -> Any:
            if first is not rec and first.compiling is not None:
                wait([first.compiling])  # the same schema compiles once; later filters hit the cache
            return JsonSchemaFilter(gen.model, gen.tokenizer, schema, options=options, policy=policy), \
                _validator(schema)

        def make_job(f: Any) -> Any:
            return ExLlamaV2DynamicJob(input_ids=ids, max_new_tokens=max_new_tokens, gen_settings=gen_settings,
                                       seed=seed, filters=[f], stop_conditions=f.end_ids, identifier=jid,
                                       **job_kwargs)

        rec.compiling, rec.make_job = self.pool.submit(build_filter), make_job
        self._jobs[rec.order] = rec
        return jid

    def _admit(self, rec: _Job, job: Any, f: Any) -> None:
        """Hand a built job to the generator (or record why it could not be)."""
        rec.job, rec.filter = job, f
        rec.prompt_len = int(job.sequences[0].input_ids.torch().shape[-1])
        if f.guard is None:
            f.guard_with(self.policy)
        f.guard_clock = self.clock
        self._drain(f)  # a filter reused from an earlier job may still have work pending
        try:
            self.generator.enqueue(job)
        except Exception as exc:  # noqa: BLE001 - this job fails alone
            rec.error = _fit_error(exc, self.generator, rec.prompt_len, getattr(job, "max_new_tokens", None))
            self._jobs.pop(rec.order, None)
            self._ready.append(self._result(rec, "error", None))
            log.error("exl2_enforcer job failed: job=%s error=%s", rec.job_id, rec.error)
            return
        self._by_job[id(job)] = rec
        f.arm(rec.job_id)

    def _collect_compiles(self, done: list[GuardedResult]) -> None:
        """Admit the jobs whose filters finished compiling; fail those that failed or ran too long."""
        now = self.clock()
        for rec in [r for r in self._jobs.values() if r.compiling is not None]:
            fut, make_job = rec.compiling, rec.make_job
            assert fut is not None and make_job is not None  # set together by submit()
            if not fut.done():
                if now - rec.enqueued > self.compile_timeout_s:
                    rec.compiling = None
                    fut.cancel()
                    rec.error = f"compiling the schema took longer than compile_timeout_s={self.compile_timeout_s:g} s"
                    self._fail(rec, done)
                continue
            rec.compiling = None
            exc = fut.exception()
            if exc is not None:
                rec.error = f"the schema did not compile: {type(exc).__name__}: {exc}"
                self._fail(rec, done)
                continue
            f, rec.validator = fut.result()
            try:
                job = make_job(f)
            except Exception as e:  # noqa: BLE001 - bad job arguments: this job fails alone
                rec.error = f"could not build the job: {type(e).__name__}: {e}"
                self._fail(rec, done)
                continue
            self._admit(rec, job, f)
        done.extend(self._ready)
        self._ready.clear()

    def _fail(self, rec: _Job, done: list[GuardedResult]) -> None:
        self._jobs.pop(rec.order, None)
        log.error("exl2_enforcer job failed: job=%s error=%s", rec.job_id, rec.error)
        done.append(self._result(rec, "error", None))

    @property
    def pending(self) -> int:
        """How many submitted or enqueued jobs have no result yet."""
        return len(self._jobs) + len(self._ready)

    # ------------------------------------------------------------------ stepping

    def iterate(self) -> list[GuardedResult]:
        """One ``generator.iterate()`` with the watchdog applied before and after it; returns
        the results of the jobs that ended in this step (often none).  Never raises for a job."""
        done: list[GuardedResult] = []
        self._collect_compiles(done)
        self._police(done)
        if self.generator.num_remaining_jobs():
            t0 = self.clock()
            try:
                events = self.generator.iterate()
            except Exception as exc:  # noqa: BLE001 - charged to a job below, never re-raised
                events = []
                self._recover(exc, done)
            for event in events:
                self._on_event(event, t0, done)
        self._police(done)
        return done

    def stream(self, deadline_s: float | None = None) -> Iterator[GuardedResult]:
        """Step until every job enqueued here has a result, yielding each as its job ends.
        ``deadline_s``: a deadline for the whole batch, in seconds from now."""
        if deadline_s is not None:
            self.batch_deadline = self.clock() + deadline_s
        try:
            while self._jobs or self._ready:
                yield from self.iterate()
                if self._jobs and not self.generator.num_remaining_jobs():
                    compiling = [r.compiling for r in self._jobs.values() if r.compiling is not None]
                    if compiling:
                        wait(compiling, timeout=0.01, return_when=FIRST_COMPLETED)
                    else:
                        yield from self._orphans()
        finally:
            self.batch_deadline = None

    def run(self, deadline_s: float | None = None) -> list[GuardedResult]:
        """Like :meth:`stream`, collected in enqueue order."""
        return sorted(self.stream(deadline_s), key=lambda r: r.index)

    # ------------------------------------------------------------------ watchdog

    def _police(self, done: list[GuardedResult]) -> None:
        """Apply cancel requests and deadlines to every job not finished yet."""
        now = self.clock()
        for rec in list(self._jobs.values()):
            f = rec.filter
            if f is None:
                self._deadline_before_start(rec, now, done)
            elif f.error is not None:
                self._cancel(rec, "error", done)
            elif f.cancel_requested:
                self._cancel(rec, "cancelled", done)
            else:
                self._apply_deadline(rec, now, done)

    def _deadline_before_start(self, rec: _Job, now: float, done: list[GuardedResult]) -> None:
        """A job still compiling at the batch deadline never starts."""
        if self.batch_deadline is not None and now > self.batch_deadline:
            rec.compiling = None
            rec.trip_reason = "batch deadline passed before the job started"
            self._jobs.pop(rec.order, None)
            done.append(self._result(rec, "not_started", None))

    def _overdue(self, rec: _Job, now: float) -> tuple[str, float] | None:
        """``(reason, seconds past the deadline)`` once a job or batch deadline has passed."""
        limit = rec.filter.policy.job_deadline_s
        if limit is not None and rec.started is not None and now - rec.started > limit:
            return f"job deadline of {limit:g} s passed", now - rec.started - limit
        if self.batch_deadline is not None and now > self.batch_deadline:
            return "batch deadline passed", now - self.batch_deadline
        return None

    def _apply_deadline(self, rec: _Job, now: float, done: list[GuardedResult]) -> None:
        over = self._overdue(rec, now)
        if over is None:
            return
        reason, late = over
        f = rec.filter
        if rec.started is None:  # still in the generator's queue (an unpaged generator runs one job at a time)
            rec.trip_reason = "batch deadline passed before the job started"
            self._cancel(rec, "not_started", done)
            return
        if not f.tripped:
            self._drain(f)  # the trip changes the matcher's mode: no mask may be computing meanwhile
            f.guard.trip(reason)
        started = getattr(rec.job, "new_tokens", 0) > 0  # before the first sample begin() resets the guard
        if not started or f.policy.on_trip == "cancel" or late > self.grace_s:
            rec.trip_reason = f.trip_reason or reason
            self._cancel(rec, "cancelled", done)

    def _cancel(self, rec: _Job, end_reason: str, done: list[GuardedResult]) -> None:
        """Cancel the job in the generator (after dropping its filter's pending work) and report it."""
        self._forget(rec)
        try:
            self.generator.cancel(rec.job)
        except Exception as exc:  # noqa: BLE001 - the job is reported either way
            log.error("exl2_enforcer job cancel failed: job=%s %s: %s", rec.job_id, type(exc).__name__, exc)
        result = self._result(rec, end_reason, None)
        if end_reason == "error":
            log.error("exl2_enforcer job failed: job=%s error=%s %s", rec.job_id, result.error, result.stats)
        else:
            log.warning("exl2_enforcer job %s: job=%s reason=%s %s", end_reason, rec.job_id, result.trip_reason,
                        result.stats)
        done.append(result)

    def _forget(self, rec: _Job) -> None:
        """Stop tracking the job and make its filter idle: unqueue and drain its background work."""
        self._jobs.pop(rec.order, None)
        self._by_job.pop(id(rec.job), None)
        queue = getattr(self.generator, "filter_queue", None)
        if queue:
            queue[:] = [entry for entry in queue if entry[0] is not rec.filter]
        self._drain(rec.filter)

    @staticmethod
    def _drain(f: Any) -> None:
        """Wait for and discard the filter's background result (bounded: a guarded call returns
        within its deadline; the adapter's version never raises)."""
        f.background_drop()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: dict, step_began: float, done: list[GuardedResult]) -> None:
        rec = self._by_job.get(id(event.get("job")))
        if rec is None:
            return  # a job not enqueued through this wrapper
        if event.get("stage") == "started":
            # the job's clock starts with the step that took it from the queue (its prefill counts)
            rec.started = step_began
            rec.filter.arm(rec.job_id, step_began)
            return
        if not event.get("eos") or event.get("stage") != "streaming":
            return
        self._forget(rec)
        result = self._result(rec, None, event.get("eos_reason"))
        if result.end_reason in ("cancelled", "error"):
            log.warning("exl2_enforcer job ended: job=%s end=%s reason=%s %s", rec.job_id, result.end_reason,
                        result.trip_reason or result.error, result.stats)
        done.append(result)

    def _recover(self, exc: Exception, done: list[GuardedResult]) -> None:
        """An exception escaped ``generator.iterate()``: fail the job it came from and clean up
        the jobs whose end the aborted step could not report."""
        culprits = self._blame(exc)
        active = list(getattr(self.generator, "active_jobs", []))
        if not culprits:  # nothing in the traceback: the running batch's state is unknown
            culprits = [self._by_job[id(j)] for j in active if id(j) in self._by_job]
        if not culprits:  # nor any running job of ours: every step would fail again
            culprits = [r for r in self._jobs.values() if r.job is not None]
        message = f"{type(exc).__name__}: {exc}"
        log.error("exl2_enforcer: generator.iterate() raised %s; failing jobs %s", message,
                  [r.job_id for r in culprits], exc_info=exc)
        for rec in culprits:
            rec.error = message
            self._cancel(rec, "error", done)
        for job in active:  # ended in the aborted step: its eos result was lost with the step
            lost = self._by_job.get(id(job))
            if lost is not None and getattr(job, "is_finished", False):
                self._forget(lost)
                try:
                    self.generator.cancel(job)  # frees its pages; iterate_gen did not get to it
                except Exception:  # noqa: BLE001
                    pass
                done.append(self._result(lost, None, "unknown"))

    def _blame(self, exc: BaseException) -> list[_Job]:
        """The tracked job whose job or filter object is ``self`` in a frame of the traceback."""
        by_filter = {id(r.filter): r for r in self._by_job.values()}
        found: _Job | None = None
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            owner = frame.f_locals.get("self")
            hit = self._by_job.get(id(owner)) or by_filter.get(id(owner))
            if hit is not None:
                found = hit  # the innermost one wins
        return [found] if found is not None else []

    def _orphans(self) -> Iterator[GuardedResult]:
        """Tracked jobs the generator no longer has (e.g. cleared from outside): report them."""
        for rec in list(self._jobs.values()):
            if rec.job is None:
                continue
            self._forget(rec)
            rec.error = rec.error or "the job left the generator without a result"
            yield self._result(rec, "error", None)

    # ------------------------------------------------------------------ results

    def _result(self, rec: _Job, end_reason: str | None, eos_reason: str | None) -> GuardedResult:
        """The result of a job that ended (``end_reason`` None: decide from its state).  Never raises."""
        try:
            return self._build_result(rec, end_reason, eos_reason)
        except Exception as exc:  # noqa: BLE001 - run() must return every job's result
            log.error("exl2_enforcer: result of job %s failed: %s: %s", rec.job_id, type(exc).__name__, exc,
                      exc_info=exc)
            return GuardedResult(rec.job_id, "", None, False, "error", error=rec.error or
                                 f"building the result failed: {type(exc).__name__}: {exc}", index=rec.order)

    def _build_result(self, rec: _Job, end_reason: str | None, eos_reason: str | None) -> GuardedResult:
        f = rec.filter
        now = self.clock()
        timing = {"new_tokens": 0, "elapsed_s": round(now - rec.started, 4) if rec.started is not None else 0.0,
                  "queued_s": round((rec.started or now) - rec.enqueued, 4)}
        if f is None or rec.job is None:  # never reached the generator
            return GuardedResult(rec.job_id, "", None, False, end_reason or "error", trip_reason=rec.trip_reason,
                                 error=rec.error, stats=timing, index=rec.order)
        m = f.matcher
        tokens = self._new_tokens(rec)
        end = set(f.end_ids)
        table = f.vocab.token_bytes
        data = b"".join(table[t] or b"" for t in tokens if t not in end and 0 <= t < len(table))
        g = f.guard
        settled = g is None or (g.wait_idle(0.0) or g.position_known) and not g.cut
        complete = settled and f.is_active and (m.complete_value or (not m.ended and m.is_complete()))
        value, parsed, why = None, False, None
        if complete:
            try:
                value, parsed = json.loads(f.value_bytes.decode("utf-8")), True
            except RecursionError:
                complete, why = False, "the value nests too deeply for Python's json module"
            except ValueError:
                complete = False
        valid = False
        if parsed:
            valid, why = validate_bounded(rec.validator, value) if rec.validator is not None else (True, None)
        if rec.validator is None and getattr(f, "schema", None) is None:
            value, valid = None, complete  # a regex or choice filter: the grammar is the check
        error = rec.error or (None if f.error is None else f"{type(f.error).__name__}: {f.error}")
        if end_reason is None:
            end_reason = self._end_reason(f, complete, eos_reason, error)
        stats = dict(f.stats.as_dict()) if f.stats is not None else {}
        stats.update(timing, max_protocol_call_ms=round(f.max_call_ms, 4), new_tokens=len(tokens))
        return GuardedResult(rec.job_id, data.decode("utf-8", errors="replace"), value, bool(valid), end_reason,
                             complete, rec.trip_reason or f.trip_reason, error, eos_reason, stats, tokens, rec.order,
                             why)

    @staticmethod
    def _end_reason(f: Any, complete: bool, eos_reason: str | None, error: str | None) -> str:
        if error is not None:
            return "error"
        if f.tripped and f.policy.on_trip == "cancel":
            return "cancelled"
        if complete:
            return "completed" if not f.tripped else "salvaged" if f.policy.on_trip == "salvage" else "stopped"
        return "max_tokens" if eos_reason == "max_new_tokens" else "stopped"

    @staticmethod
    def _new_tokens(rec: _Job) -> list[int]:
        ids = rec.job.sequences[0].sequence_ids.torch()
        return [int(t) for t in ids[0, rec.prompt_len:].tolist()]


def generate_json(generator: Any, tokenizer: Any, prompts: Sequence[str], schema: Any, *,
                  policy: GuardPolicy | None = None, batch_deadline_s: float | None = None,
                  max_new_tokens: int = 512, gen_settings: Any = None, seed: int | None = None,
                  options: SchemaOptions | None = None, grace_s: float = 1.0,
                  add_bos: bool = True, compile_timeout_s: float = 60.0,
                  clock: Callable[[], float] = time.monotonic) -> list[GuardedResult]:
    """Generate one JSON value per prompt with ``generator`` (an ``ExLlamaV2DynamicGenerator``),
    all under ``policy``, and return a :class:`GuardedResult` per prompt, in order.

    Jobs still running at ``batch_deadline_s`` (seconds from the call) are tripped: cancelled
    at once if their policy says "cancel" or they have not sampled yet, otherwise salvaged or
    stopped within ``grace_s`` more seconds, then cancelled.  Jobs that had not started by then
    (an unpaged generator runs one job at a time) end "not_started" with no value: every prompt
    gets a result, not necessarily a value.  ``seed`` seeds job ``i`` with ``seed + i``.  Raises
    only for bad arguments, never for a job.
    """
    if isinstance(prompts, (str, bytes)):  # a str is a Sequence[str]: one job per character
        raise TypeError(f"generate_json: prompts must be a list of prompts, got a {type(prompts).__name__}; "
                        "for one prompt pass [prompt]")
    gg = GuardedGenerator(generator, policy, grace_s=grace_s, options=options, compile_timeout_s=compile_timeout_s,
                          clock=clock)
    for i, prompt in enumerate(prompts):
        gg.submit(tokenizer.encode(prompt, add_bos=add_bos), schema, max_new_tokens=max_new_tokens,
                  gen_settings=gen_settings, seed=None if seed is None else seed + i, job_id=i)
    return gg.run(batch_deadline_s)
