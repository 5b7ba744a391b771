"""The ``exl2-enforcer`` command line: ``check`` a schema, ``bench`` the masks of one instance.

Exit codes (:class:`~exl2_enforcer.cli.common.ExitCode`): 0 success; 1 ``bench``: the engine
refused an instance that validates; 2 usage errors, unreadable files, invalid JSON and
unsupported schemas.  User mistakes print one line on stderr, never a traceback.  See docs/cli.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import lzma
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exl2_enforcer import __version__, grammar
from exl2_enforcer.cli.common import (
    PROG,
    CliError,
    ExitCode,
    read_json_file,
    run_command,
    schema_option_parser,
    schema_options,
)
from exl2_enforcer.cli.peers import (
    PEER_NAMES,
    Ours,
    Refusal,
    TokenizerContext,
    encode_for_generation,
    peer_figures,
    stats_us,
    time_passes,
)
from exl2_enforcer.cli.risk import analyse_schema
from exl2_enforcer.compile.schema.compiler import UNSUPPORTED, SchemaOptions
from exl2_enforcer.engine import native
from exl2_enforcer.engine.mask import TokenIndex
from exl2_enforcer.errors import EnforcerError, SchemaError
from exl2_enforcer.matcher import Matcher
from exl2_enforcer.tokens.vocabulary import PACKAGED_VOCABULARY, TokenVocabulary, default_vocabulary


def load_vocabulary(path: str | None) -> TokenVocabulary:
    """The vocabulary of ``--tokenizer`` (file, .xz or model folder), or the packaged one."""
    try:
        return default_vocabulary() if path is None else TokenVocabulary.from_file(path)
    except EnforcerError as exc:
        raise CliError(f"--tokenizer: {exc}") from None


def load_context(path: str | None, vocab: TokenVocabulary) -> TokenizerContext:
    """Everything ``bench`` needs: the tokenizer.json text, a ``tokenizers.Tokenizer``, width, end ids."""
    import tokenizers

    raw = Path(vocab.source).read_bytes()  # the file the vocabulary was read from (packaged or --tokenizer)
    text = (lzma.decompress(raw) if raw[:6] == b"\xfd7zXZ\x00" else raw).decode("utf-8")
    ends = sorted(vocab.end_ids)
    width = max(vocab.n_ids, ends[-1] + 1 if ends else 0, _config_vocab_size(path))
    return TokenizerContext(text, width, ends, tokenizers.Tokenizer.from_str(text), vocab)


def _config_vocab_size(path: str | None) -> int:
    # a model folder's config.json gives the logits width, which may exceed the tokenizer's ids
    cfg = Path(path) / "config.json" if path else None
    if not cfg or not cfg.is_file():
        return 0
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    size = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
    return size if isinstance(size, int) and size > 0 else 0


def _vocab_label(path: str | None, vocab: TokenVocabulary) -> str:
    name = f"packaged {PACKAGED_VOCABULARY}" if path is None else vocab.source
    return f"{name} ({vocab.n_ids:,} ids, end ids {sorted(vocab.end_ids)})"


def _where(pointer: str) -> str:
    return pointer or "/"


# ----------------------------------------------------------------------------- check

def check_report(schema: Any, vocab: TokenVocabulary, options: SchemaOptions) -> tuple[dict[str, Any], list[str]]:
    """``({supported, error, pointer, compile_ms, risks}, compiler warnings)`` for one schema."""
    TokenIndex.for_vocabulary(vocab)  # per vocabulary, not per schema: keep it out of compile_ms
    grammar.GRAMMAR_CACHE.clear()  # a fresh compile, so compile_ms means the same on every run
    t0 = time.perf_counter()
    try:
        g = grammar.compile_json_schema(schema, vocab, options)
    except EnforcerError as exc:
        pointer = getattr(exc, "pointer", "")
        return {"supported": False, "error": str(exc), "pointer": pointer, "compile_ms": None, "risks": []}, []
    compile_ms = round((time.perf_counter() - t0) * 1000, 3)
    risks = [r.as_dict() for r in analyse_schema(schema, vocab, options)]
    risks += _dropped_forms(g.warnings, {(r["pointer"], r["kind"]) for r in risks})
    return {"supported": True, "error": None, "pointer": None, "compile_ms": compile_ms, "risks": risks}, g.warnings


_DROPPED = re.compile(r"keyword '([^']+)' at (\S*) is not supported in this form; ignored")


def _dropped_forms(warns: list[str], seen: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """``ignored_keyword`` risks for the forms ``lenient`` dropped (``not``/``if`` the compiler could
    not rewrite exactly), read from the compiler's warnings."""
    out = []
    for w in warns:
        m = _DROPPED.search(w)
        if m and (m.group(2), "ignored_keyword") not in seen:
            out.append({"pointer": m.group(2), "kind": "ignored_keyword",
                        "detail": f"keyword {m.group(1)!r} is not supported in this form and --lenient ignores it: "
                                  "outputs may not validate",
                        "fix": "rewrite the schema without it (e.g. an enum instead of not), or validate the output "
                               "after generation"})
    return out


def _hint(error: str) -> str | None:
    if any(f"keyword {k!r} is not supported" in error for k in UNSUPPORTED | {"uniqueItems"}) or \
            " is not supported exactly" in error:
        return "--lenient ignores unsupported keywords (outputs may then not validate)"
    if "combining" in error:
        return "keep either pattern or format on this string (each combines with minLength/maxLength)"
    return None


def print_check(report: dict[str, Any], path: str, vocab_label: str, warns: list[str]) -> None:
    """The human-readable check report."""
    print(f"schema:     {path}")
    print(f"vocabulary: {vocab_label}")
    if not report["supported"]:
        print("supported:  no")
        print(f"error:      {report['error']}")
        print(f"pointer:    {_where(report['pointer'])}")
        if hint := _hint(report["error"]):
            print(f"hint:       {hint}")
        return
    print(f"supported:  yes (compiled in {report['compile_ms']:.1f} ms; DFA states and masks are built "
          "lazily, on first use)")
    for w in warns:
        print(f"warning:    {w}")
    risks = report["risks"]
    print(f"risks:      {len(risks) or 'none found'}")
    for r in risks:
        print(f"\n  {_where(r['pointer'])}  [{r['kind']}]")
        print(f"    found: {r['detail']}")
        print(f"    fix:   {r['fix']}")


def cmd_check(args: argparse.Namespace) -> int:
    """``check``: compile, report support and risks; 0 supported, 2 not."""
    schema, _ = read_json_file(args.schema, "schema")
    options = schema_options(args)
    vocab = load_vocabulary(args.tokenizer)
    report, warns = check_report(schema, vocab, options)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_check(report, args.schema, _vocab_label(args.tokenizer, vocab), warns)
    if not report["supported"]:
        print(f"{PROG}: schema not supported: {report['error']}", file=sys.stderr)
        return ExitCode.USAGE
    return ExitCode.OK


# ----------------------------------------------------------------------------- bench

def read_instance(path: str) -> tuple[Any, str]:
    """The instance value and its text as written, minus one trailing newline."""
    value, text = read_json_file(path, "instance")
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text:
        raise CliError(f"instance {path}: empty")
    return value, text


def validation_error(schema: Any, instance: Any) -> str | None:
    """None when ``instance`` validates (formats checked), else jsonschema's best message."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(instance))
    if error is None:
        return None
    return f"{error.message} at {'/' + '/'.join(map(str, error.absolute_path))}"


def describe_refusal(r: Refusal, ids: list[int], vocab: TokenVocabulary) -> dict[str, Any]:
    """The ``rejected_at`` object: index, token id, its bytes, the text before it, why."""
    so_far = b"".join(vocab.token_bytes[i] or b"" for i in ids[: r.index] if 0 <= i < vocab.n_ids)
    piece = vocab.token_bytes[r.token_id] if r.token_id is not None and 0 <= r.token_id < vocab.n_ids else None
    return {"index": r.index, "token_id": r.token_id, "token_bytes": None if piece is None else repr(piece),
            "text_so_far": so_far.decode("utf-8", errors="replace"), "reason": r.reason}


def _accepts(schema: Any, vocab: TokenVocabulary, options: SchemaOptions, ids: list[int]) -> bool:
    try:
        m = Matcher(grammar.compile_json_schema(schema, vocab, options))
    except EnforcerError:
        return False
    return all(m.try_accept(t) for t in ids) and m.is_accepting()


def refusal_hints(schema: Any, vocab: TokenVocabulary, options: SchemaOptions, ids: list[int]) -> list[str]:
    """Options under which the refused instance would be accepted (key order, whitespace)."""
    hints = []
    if options.property_order == "schema" and _accepts(schema, vocab, dataclasses.replace(
            options, property_order="any"), ids):
        hints.append("the instance's keys are not in schema order (the engine writes members in schema order "
                     "by default): pass --any-order, or reorder the keys")
    if options.strict_objects and _accepts(schema, vocab, dataclasses.replace(options, strict_objects=False), ids):
        hints.append("the instance has keys the schema does not list: objects that list properties are closed "
                     "unless additionalProperties allows more; pass --open-objects, or list the keys")
    if _accepts(schema, vocab, dataclasses.replace(options, max_whitespace=10_000), ids):
        hints.append(f"the instance has a whitespace run longer than --max-whitespace {options.max_whitespace}: "
                     "pass a larger --max-whitespace, or indent less")
    return hints


def bench_report(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the --json object, extra facts for the text report)``; raises CliError / SchemaError."""
    schema, _ = read_json_file(args.schema, "schema")
    instance, text = read_instance(args.instance)
    options = schema_options(args)
    vocab = load_vocabulary(args.tokenizer)
    ctx = load_context(args.tokenizer, vocab)
    ids, note = encode_for_generation(ctx.hf, text)
    engine = Ours()
    engine.prepare(ctx)
    seconds, cold, warm = time_passes(engine, schema, options, ids, ctx.end_ids)
    refusal = cold.refusal or warm.refusal
    invalid = validation_error(schema, instance)
    report = {"accepted": refusal is None,
              "rejected_at": None if refusal is None else describe_refusal(refusal, ids, vocab),
              "steps": len(cold.fill_ns), "compile_ms": round(seconds * 1000, 3),
              "cold": stats_us(cold.fill_ns), "warm": stats_us(warm.fill_ns),
              "retained_bytes": grammar.compile_json_schema(schema, vocab, options).retained_bytes(),
              "native_walks": native.enabled,
              "peers": {p: peer_figures(p, ctx, schema, options, ids) for p in args.peers}}
    facts = {"tokens": len(ids), "chars": len(text), "note": note, "invalid": invalid,
             "vocab": _vocab_label(args.tokenizer, vocab), "width": ctx.width,
             "hints": refusal_hints(schema, vocab, options, ids) if refusal and not invalid else []}
    return report, facts


def _row(name: str, compile_ms: float | None, stats: dict[str, float]) -> str:
    c = "" if compile_ms is None else f"{compile_ms:,.1f}"
    return (f"  {name:<26}{c:>11}" + "".join(f"{stats[k]:>10,.1f}" for k in ("mean_us", "p50_us", "p99_us", "max_us")))


def print_bench(report: dict[str, Any], facts: dict[str, Any], args: argparse.Namespace) -> None:
    """The human-readable bench report."""
    print(f"schema:     {args.schema}")
    print(f"instance:   {args.instance} ({facts['chars']:,} characters, {facts['tokens']:,} tokens"
          + (f"; {facts['note']}" if facts["note"] else "") + ")")
    print(f"validates:  {'yes' if not facts['invalid'] else 'no: ' + facts['invalid']} (jsonschema, formats checked)")
    print(f"vocabulary: {facts['vocab']}, logits width {facts['width']:,}")
    print("walks:      " + ("native (C extension)" if report["native_walks"] else
                            "numpy (the C extension is not built or EXL2_ENFORCER_NATIVE=0; cold masks are slower)"))
    r = report["rejected_at"]
    if r is None:
        print(f"accepted:   yes, every token and then an end token ({report['steps']} mask steps per pass)")
    else:
        tok = ("the end token" if r["token_id"] is None
               else f"token #{r['index']} (id {r['token_id']}, {r['token_bytes']})")
        print(f"accepted:   NO: {tok} refused: {r['reason']}")
        print(f"text so far (last 120 characters): {r['text_so_far'][-120:]!r}")
        if facts["invalid"]:
            print("            the instance does not validate, so refusing it is correct")
        for h in facts["hints"]:
            print(f"hint:       {h}")
    print("\nper-token mask time in µs (compile in ms; cold = first matcher after a fresh compile,"
          " warm = a second matcher on the same grammar)")
    if r is not None:
        print(f"  (only the {report['steps']} steps up to the refusal)")
    print(f"  {'engine':<26}{'compile ms':>11}{'mean':>10}{'p50':>10}{'p99':>10}{'max':>10}")
    print(_row("exl2_enforcer cold", report["compile_ms"], report["cold"]))
    print(_row("exl2_enforcer warm", None, report["warm"]))
    for name, fig in report["peers"].items():
        if isinstance(fig, str):
            print(f"  {name:<26}n/a: {fig}")
        else:
            print(_row(f"{name} cold", fig["compile_ms"], fig["cold"]))
            print(_row(f"{name} warm", None, fig["warm"]))
    print(f"\nmemory:     {report['retained_bytes'] / 2**20:,.1f} MiB held by the grammar after both passes "
          f"(DFA states, rows, masks; budget {grammar.DEFAULT_MEMORY_BYTES >> 20} MiB)")


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench``: force the instance through the masks; 1 when a valid instance is refused."""
    try:
        report, facts = bench_report(args)
    except SchemaError as exc:
        raise CliError(f"schema not supported: {exc}") from None
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_bench(report, facts, args)
    r = report["rejected_at"]
    if r is not None and not facts["invalid"]:
        if facts["hints"]:  # an option rules the instance out (e.g. its whitespace): say that first
            print(f"{PROG}: the instance is valid but outside these options at token #{r['index']}: "
                  f"{facts['hints'][0]} (refused: {r['reason']})", file=sys.stderr)
        else:
            print(f"{PROG}: the engine refused a valid instance at token #{r['index']}: {r['reason']}",
                  file=sys.stderr)
        return ExitCode.FAILED
    if r is None and facts["invalid"] and not args.lenient:
        print(f"{PROG}: warning: the engine accepted an instance that jsonschema rejects ({facts['invalid']})",
              file=sys.stderr)
    return ExitCode.OK


# ----------------------------------------------------------------------------- parser

def _peer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    names = list(PEER_NAMES) if names == ["all"] else names
    unknown = [n for n in names if n not in PEER_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer {unknown[0]!r} (known: {', '.join(PEER_NAMES)}, or all)")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``exl2-enforcer``."""
    common = argparse.ArgumentParser(add_help=False, parents=[schema_option_parser()])
    common.add_argument("schema", metavar="SCHEMA.json", help="the JSON Schema file")
    common.add_argument("--tokenizer", metavar="PATH",
                        help="tokenizer.json, tokenizer.json.xz or a model folder (default: the packaged "
                             "Llama-3-derived mini vocabulary)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of the report")

    parser = argparse.ArgumentParser(prog=PROG, description="Check JSON Schemas and time their token masks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check", parents=[common], help="is the schema supported, and what makes it slow",
                           description="Compile a schema and report support, compile time and risks.")
    check.set_defaults(func=cmd_check)
    bench = sub.add_parser("bench", parents=[common], help="time the masks along one instance",
                           description="Force an instance through the masks token by token and time each mask.")
    bench.add_argument("--instance", required=True, metavar="VALUE.json", help="a JSON value, tokenized as written")
    bench.add_argument("--peers", type=_peer_list, default=[], metavar="LIST",
                       help=f"comma list of peers to time too: {', '.join(PEER_NAMES)} (or all)")
    bench.set_defaults(func=cmd_bench)
    from exl2_enforcer.cli.generate import add_parser as add_generate

    add_generate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argparse's own errors included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: keep main() returning a code
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    return run_command(args.func, args)
