"""What every ``exl2-enforcer`` command shares: the error type, the exit codes, the schema options.

``CliError`` is defined in :mod:`exl2_enforcer.errors` with every other exception and re-exported here.

A command raises :class:`CliError` for anything the user can fix; :func:`run_command` prints
it as one line on stderr (never a traceback) and returns its exit code.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exl2_enforcer.compile.schema.compiler import SchemaOptions
from exl2_enforcer.errors import CliError, EnforcerError

__all__ = ["PROG", "CliError", "ExitCode", "read_json_file", "positive_int", "non_negative_int",
           "schema_option_parser", "schema_options", "run_command"]

PROG = "exl2-enforcer"


class ExitCode(enum.IntEnum):
    """Exit codes of every command (docs/cli.md)."""

    OK = 0
    #: bench: the engine refused an instance that validates; generate: some result is not valid
    FAILED = 1
    #: usage errors, unreadable files, invalid JSON, unsupported schemas
    USAGE = 2
    #: generate: no CUDA GPU, or exllamav2 cannot be imported
    NO_CUDA = 3
    INTERRUPTED = 130
    #: the reader of stdout went away (``| head``): stopped quietly, as a Unix filter does
    BROKEN_PIPE = 141


def read_json_file(path: str, what: str) -> tuple[Any, str]:
    """``(value, text)`` of a JSON file; a missing, unreadable or malformed file is a :class:`CliError`."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a BOM is not part of the value
    except FileNotFoundError:
        raise CliError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{what} {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} {path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def schema_option_parser() -> argparse.ArgumentParser:
    """A parent parser with the schema options every command takes (see :func:`schema_options`)."""
    parent = argparse.ArgumentParser(add_help=False)
    opts = parent.add_argument_group("schema options")
    opts.add_argument("--any-order", action="store_true", help="object members in any order (default: schema order)")
    opts.add_argument("--compact", dest="max_whitespace", action="store_const", const=0,
                      default=SchemaOptions.max_whitespace,
                      help="no whitespace between JSON tokens (= --max-whitespace 0)")
    opts.add_argument("--max-whitespace", type=non_negative_int, default=SchemaOptions.max_whitespace, metavar="N",
                      help=f"longest whitespace run between JSON tokens (default {SchemaOptions.max_whitespace})")
    opts.add_argument("--open-objects", action="store_true",
                      help="objects without additionalProperties take extra keys, as the spec says (default: "
                           "an object that lists properties is closed)")
    opts.add_argument("--lenient", action="store_true", help="ignore unsupported keywords instead of refusing")
    opts.add_argument("--unknown-keywords", choices=["warn", "error"], default="warn",
                      help="a likely misspelled keyword ('requried'): warn (default) or refuse the schema")
    opts.add_argument("--max-depth", type=positive_int, default=SchemaOptions.max_depth, metavar="N",
                      help="deepest nesting of objects and arrays in a value ([[1]] is 2); bounds recursive $ref "
                      f"and free-form values (default {SchemaOptions.max_depth})")
    return parent


def schema_options(args: argparse.Namespace) -> SchemaOptions:
    """SchemaOptions from the flags of :func:`schema_option_parser`."""
    return SchemaOptions(max_whitespace=args.max_whitespace, max_depth=args.max_depth,
                         lenient=args.lenient, unknown_keywords=args.unknown_keywords,
                         property_order="any" if args.any_order else "schema",
                         strict_objects=not args.open_objects)


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command; a :class:`CliError` or an engine error becomes one stderr line and its exit code."""
    try:
        with warnings.catch_warnings():
            # --lenient's warnings come back in the reports (g.warnings, ignored_keyword risks)
            warnings.simplefilter("ignore")
            return func(args)
    except (CliError, EnforcerError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "code", ExitCode.USAGE))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # later flushes (at exit too) would raise again: send what is left of stdout nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE
