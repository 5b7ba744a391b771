"""A CPU stand-in for ``ExLlamaV2DynamicGenerator``'s job loop, for tests only.

The real generator needs a loaded model, a KV cache and CUDA.  :class:`JobLoopGenerator`
has none of them; it drives *real* ``ExLlamaV2DynamicJob`` objects (and through them the
real ``ExLlamaV2Sampler`` and filter protocol) through the same per-step sequence as
exllamav2 0.3.2's ``iterate()`` / ``iterate_start_jobs()`` / ``iterate_gen()``:

1. start pending jobs while the batch has room ("started" results);
2. prefill: a prompt takes ``ceil(len / prefill_chunk)`` iterations, each sleeping
   ``prefill_s`` (no filter call happens meanwhile; "prefill" results);
3. generation, for the jobs whose prefill is done: launch the queued background filter work
   (``background_prepare_logit_mask`` / ``background_next`` on a 16-thread pool), "run the
   forward pass" (sleep ``forward_s`` while that work runs), then per job
   ``receive_logits()`` + ``receive_sample()`` on logits from ``logits_fn``, and remove the
   jobs that ended.

``max_seq_len`` models an **unpaged** generator (``paged=False``, what exllamav2 runs without
flash-attn): one page of ``max_seq_len`` tokens, one job at a time; a job whose prompt plus
``max_new_tokens`` does not fit is refused at enqueue by the real job's own check
(``AssertionError: Job requires 2 pages (only 1 available)``).

:meth:`JobLoopGenerator.virtual_clock` gives a clock that advances a fixed step per
``iterate()``: deadlines measured with it are deterministic, whatever the machine's load.

``cancel(job)`` removes a job like the real one: it neither waits for nor drops a
background filter result.  An exception raised by a job or filter propagates out of
``iterate()`` with the step half done, as it does in exllamav2.  Not modelled: the model,
pages, cache reuse, draft models, multi-threaded sampling.  Nothing here says anything about
GPU timing.  It extends the attribute-only ``GeneratorStandIn`` of ``test_exllamav2_filter.py``
(which drives one job by hand) with the queue, the batch and ``cancel()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

#: ``logits_fn(job, width) -> (1, 1, width) float tensor``
LogitsFn = Callable[[Any, int], torch.Tensor]
_POOL: ThreadPoolExecutor | None = None


def shared_pool() -> ThreadPoolExecutor:
    """One 16-thread filter pool for every stand-in generator of the test session (the real
    generator owns one each; tests make many generators and need not pile up idle threads)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="exl2-filter")
    return _POOL


def random_logits(scale: float = 3.0) -> LogitsFn:
    """Seeded random logits per job: ``randn * scale`` from a generator seeded by the job's serial."""
    gens: dict[int, torch.Generator] = {}

    def logits(job: Any, width: int) -> torch.Tensor:
        gen = gens.setdefault(id(job), torch.Generator().manual_seed(1000 + job.serial_number))
        return torch.randn((1, 1, width), generator=gen) * scale

    return logits


def biased_logits(bias: torch.Tensor, scale: float = 3.0) -> LogitsFn:
    """Random logits plus a fixed ``bias`` row (as wide as the logits): a model that favours some tokens."""
    base = random_logits(scale)
    return lambda job, width: base(job, width) + bias[:width].view(1, 1, -1)


class JobLoopGenerator:
    """What ``ExLlamaV2DynamicGenerator`` does per ``iterate()``, minus the model (see module doc)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 8, logits_fn: LogitsFn | None = None,
                 forward_s: float = 0.0, prefill_chunk: int = 2048, prefill_s: float = 0.0,
                 pool: ThreadPoolExecutor | None = None, max_seq_len: int | None = None,
                 forward_fn: Callable[[], None] | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.padded_vocab_size = (model.config.vocab_size + 31) // 32 * 32
        self.paged = max_seq_len is None
        if self.paged:  # pages larger than any sequence: the job's page hashing never runs
            self.page_size, self.max_pages, self.max_total_tokens = 1 << 30, 1, 1 << 30
        else:  # exllamav2's unpaged mode: one page of max_seq_len, batch size 1
            self.page_size, self.max_pages, self.max_total_tokens = max_seq_len, 1, max_seq_len
            max_batch_size = 1
        self.max_batch_size, self.num_draft_tokens = max_batch_size, 0
        self.referenced_pages, self.unreferenced_pages = {}, {}
        self.draft_model, self.use_ngram_draft = None, False
        self.filter_queue: list = []
        self.filter_pool = pool or shared_pool()
        self.pending_jobs: list = []
        self.active_jobs: list = []
        self.job_serial = 0
        self.logits_fn = logits_fn or random_logits()
        self.forward_s, self.prefill_chunk, self.prefill_s = forward_s, prefill_chunk, prefill_s
        #: the "forward pass" (default: sleep ``forward_s``, which releases the GIL as a CUDA wait does)
        self.forward_fn = forward_fn
        self.cancelled: list = []
        self.iterations = 0
        self._prefill_left: dict[int, int] = {}

    def virtual_clock(self, step_s: float = 0.005):
        """A clock (seconds) that advances ``step_s`` per ``iterate()``: deterministic deadlines."""
        return lambda: self.iterations * step_s

    def num_remaining_jobs(self) -> int:
        """Jobs queued or running."""
        return len(self.pending_jobs) + len(self.active_jobs)

    def enqueue(self, job: Any) -> int:
        """Queue a job (``prepare_for_queue`` is the real one); returns its serial number."""
        job.prepare_for_queue(self, self.job_serial)
        self.job_serial += 1
        self.pending_jobs.append(job)
        job.time_enqueue = time.time()
        return job.serial_number

    def cancel(self, job: Any) -> None:
        """Remove the job, as exllamav2 does: pending background filter work is left alone."""
        if job in self.pending_jobs:
            self.pending_jobs.remove(job)
        elif job in self.active_jobs:
            self.active_jobs.remove(job)
        self.cancelled.append(job)

    def iterate(self) -> list[dict]:
        """One step: start jobs, one round of prefill, one generated token per ready job."""
        self.iterations += 1
        results: list[dict] = []
        self._start_jobs(results)
        for job in self.active_jobs:
            self._prefill(job, results)
        self._generate(results)
        return results

    def _start_jobs(self, results: list[dict]) -> None:
        while self.pending_jobs and len(self.active_jobs) < self.max_batch_size:
            job = self.pending_jobs.pop(0)
            self.active_jobs.append(job)
            n = len(job.sequences[0].sequence_ids) - 1
            self._prefill_left[id(job)] = -(-n // self.prefill_chunk)
            job.time_first_prefill = time.time()
            results.append({"job": job, "stage": "started", "eos": False, "serial": job.serial_number})

    def _prefill(self, job: Any, results: list[dict]) -> None:
        left = self._prefill_left.get(id(job), 0)
        if job.is_prefill_done():
            return
        if self.prefill_s:
            time.sleep(self.prefill_s)
        self._prefill_left[id(job)] = left - 1
        if left <= 1:
            for seq in job.sequences:
                seq.kv_position = len(seq.sequence_ids) - 1  # the prompt is "in the cache"
        results.append({"job": job, "stage": "prefill", "eos": False, "serial": job.serial_number})

    def _generate(self, results: list[dict]) -> None:
        batch = [job for job in self.active_jobs if job.is_prefill_done()]
        if not batch:
            return
        for job in batch:
            if job.time_first_token is None:
                job.time_first_token = time.time()
        # iterate_gen launches the queued filter work once the forward pass is scheduled
        for f, use_mask in self.filter_queue:
            (f.background_prepare_logit_mask if use_mask else f.background_next)(self.filter_pool)
        self.filter_queue.clear()
        if self.forward_fn is not None:
            self.forward_fn()
        elif self.forward_s:
            time.sleep(self.forward_s)
        completed = []
        for job in batch:
            logits = self.logits_fn(job, self.padded_vocab_size)
            eos, _ = job.receive_sample(logits, *job.receive_logits(logits), results, True)
            if eos:
                completed.append(job)
        for job in completed:
            self.active_jobs.remove(job)
