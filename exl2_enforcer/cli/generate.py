"""``exl2-enforcer generate``: a timeout-guarded batch of JSON generations with ExLlamaV2.

Loads a model folder with the real ``ExLlamaV2DynamicGenerator`` (CUDA required), runs one job per
prompt under a :class:`~exl2_enforcer.watchdog.GuardPolicy`, shows progress on stderr and writes one
JSON line per prompt: the text, the parsed value, whether it validates, why the job ended, and the
watchdog's figures.  Imports exllamav2 only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from exl2_enforcer.cli.common import (
    PROG,
    CliError,
    ExitCode,
    read_json_file,
    schema_option_parser,
    schema_options,
)
from exl2_enforcer.contrib.requirements import exllamav2_problem
from exl2_enforcer.watchdog import TRIP_ACTIONS, GuardPolicy


def add_parser(sub: Any) -> None:
    """Register ``generate`` on the command line's sub-parsers."""
    p = sub.add_parser("generate", parents=[schema_option_parser()],
                       help="generate JSON for prompts with ExLlamaV2, under a watchdog (CUDA)",
                       description="Run one guarded ExLlamaV2 job per prompt and write one result per line.")
    p.add_argument("--model", required=True, metavar="DIR", help="ExLlamaV2 model folder (EXL2 or FP16)")
    p.add_argument("--schema", required=True, metavar="SCHEMA.json", help="the JSON Schema every answer follows")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    src.add_argument("--prompts", metavar="FILE.jsonl",
                     help='one prompt per line: a JSON string or an object with a "prompt" key')
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N",
                   help="new tokens per job (default 512); the watchdog trips at three quarters of it, so that "
                        "salvage can still close the value")
    p.add_argument("--token-deadline-ms", type=float, default=GuardPolicy.token_deadline_ms, metavar="MS",
                   help=f"per-token deadline for filter work (default {GuardPolicy.token_deadline_ms:g})")
    p.add_argument("--job-timeout", type=float, default=None, metavar="S",
                   help="wall-clock limit per job, in seconds (default: none)")
    p.add_argument("--batch-timeout", type=float, default=None, metavar="S",
                   help="wall-clock limit for the whole batch, in seconds (default: none)")
    p.add_argument("--on-trip", choices=TRIP_ACTIONS, default="salvage", help="reaction to a trip (default salvage)")
    p.add_argument("--max-seq-len", type=int, default=4096, metavar="N", help="cache length (default 4096)")
    p.add_argument("--paged", choices=("auto", "yes", "no"), default="auto",
                   help="paged attention (needs flash-attn >= 2.5.7; several jobs at once). 'auto' (default) "
                        "falls back to unpaged, one job at a time, when flash-attn is missing")
    p.add_argument("--out", metavar="results.jsonl", help="write results here (default: stdout)")
    p.set_defaults(func=cmd_generate)


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts from ``--prompt`` or a JSON-lines file."""
    if args.prompt:
        return list(args.prompt)
    path = Path(args.prompts)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise CliError(f"{path}:{n}: not JSON ({e.msg})") from None
        text = item.get("prompt") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise CliError(f'{path}:{n}: expected a JSON string or an object with a "prompt" string')
        prompts.append(text)
    if not prompts:
        raise CliError(f"{path}: no prompts")
    return prompts


def _require_cuda() -> None:
    try:
        import torch
    except ImportError:
        raise CliError("generate needs torch with CUDA; torch is not installed", ExitCode.NO_CUDA) from None
    if not torch.cuda.is_available():
        raise CliError("generate needs a CUDA GPU (torch.cuda.is_available() is False); "
                            "'check' and 'bench' work without one", ExitCode.NO_CUDA)


def paged_attention_problem() -> str | None:
    """Why exllamav2 cannot run paged attention here (flash-attn missing or too old), else None."""
    try:
        from exllamav2.attn import assert_paged_attn

        assert_paged_attn()
    except Exception as e:  # noqa: BLE001 - exllamav2 says it with an AssertionError
        return str(e) or type(e).__name__
    return None


def choose_paged(mode: str, err: TextIO) -> bool:
    """Whether to build a paged generator for ``--paged mode``; says on ``err`` when it falls back.
    Raises :class:`CliError` for ``--paged yes`` without paged attention."""
    if mode == "no":
        return False
    problem = paged_attention_problem()
    if problem is None:
        return True
    if mode == "yes":
        raise CliError(f"--paged yes: {problem}; install flash-attn >= 2.5.7 or use --paged auto/no", ExitCode.USAGE)
    err.write(f"exl2-enforcer: paged attention unavailable ({problem}); running unpaged: one job at a time, "
              "each job's prompt + --max-new-tokens must fit --max-seq-len\n")
    return False


def _load_generator(args: argparse.Namespace) -> tuple[Any, Any]:
    """(generator, tokenizer) for the model folder, with exllamav2's own CUDA extension."""
    problem = exllamav2_problem()  # before importing exllamav2: a failed CUDA build prints a long traceback
    if problem is not None:
        raise CliError(problem, ExitCode.NO_CUDA)
    try:
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import ExLlamaV2DynamicGenerator
    except Exception as e:  # noqa: BLE001 - missing package, or its CUDA extension failed to build
        raise CliError(f"cannot import exllamav2 ({type(e).__name__}: {e}); "
                       'install it with pip install -e ".[exllamav2]"', ExitCode.NO_CUDA) from None
    if not Path(args.model).is_dir():
        raise CliError(f"--model {args.model}: not a folder")
    config = ExLlamaV2Config(args.model)
    model = ExLlamaV2(config)
    cache = ExLlamaV2Cache(model, max_seq_len=args.max_seq_len, lazy=True)
    model.load_autosplit(cache)
    tokenizer = ExLlamaV2Tokenizer(config)
    paged = choose_paged(getattr(args, "paged", "auto"), sys.stderr)
    return ExLlamaV2DynamicGenerator(model=model, cache=cache, tokenizer=tokenizer, paged=paged), tokenizer


def _record(result: Any, prompt: str) -> dict:
    return {"index": result.index, "prompt": prompt, "text": result.text, "json": result.json,
            "valid": result.valid, "status": result.status, "end_reason": result.end_reason,
            "trip_reason": result.trip_reason,
            "error": result.error, "stats": result.stats}


def _report_progress(done: int, total: int, result: Any, t0: float, err: TextIO) -> None:
    # one plain line per finished job: readable in a log file, unlike a redrawn bar
    verdict = "valid" if result.valid else "INVALID"
    err.write(f"{PROG}: {done}/{total} done: job {result.index} {result.status} ({result.end_reason}, {verdict}) "
              f"after {time.monotonic() - t0:.1f} s\n")
    err.flush()


def cmd_generate(args: argparse.Namespace) -> int:
    """Run the batch; exit 0 when every result is valid, 1 when some are not."""
    schema, _ = read_json_file(args.schema, "schema")
    prompts = read_prompts(args)
    # trip at 3/4 of the budget so salvage has room to close the value before the hard cut
    policy = GuardPolicy(token_deadline_ms=args.token_deadline_ms, job_deadline_s=args.job_timeout,
                         on_trip=args.on_trip, max_tokens=max(1, args.max_new_tokens * 3 // 4))
    _require_cuda()
    generator, tokenizer = _load_generator(args)
    from exl2_enforcer.contrib.exllamav2.guarded import GuardedGenerator

    gg = GuardedGenerator(generator, policy, options=schema_options(args))
    for prompt in prompts:
        gg.submit(tokenizer.encode(prompt, add_bos=True), schema, max_new_tokens=args.max_new_tokens)
    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    except OSError as e:
        raise CliError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None
    t0, done, all_valid = time.monotonic(), 0, True
    try:
        for result in gg.stream(args.batch_timeout):
            done += 1
            all_valid &= bool(result.valid)
            out.write(json.dumps(_record(result, prompts[result.index]), ensure_ascii=False) + "\n")
            out.flush()
            _report_progress(done, len(prompts), result, t0, sys.stderr)
    finally:
        if out is not sys.stdout:
            out.close()
    return ExitCode.OK if all_valid else ExitCode.FAILED
