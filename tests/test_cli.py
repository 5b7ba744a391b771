"""The ``exl2-enforcer`` command line: check, bench, risk analysis, peers and user errors.

Most tests call ``main([...])`` in-process; two run ``python -m exl2_enforcer`` as a
subprocess.  Everything uses the packaged mini vocabulary unless a test says otherwise.
Tests assert behaviour, never timings.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exl2_enforcer.cli.app import main
from exl2_enforcer.cli.risk import analyse_schema
from exl2_enforcer.tokens.vocabulary import default_vocabulary

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
FC_SCHEMA = str(EXAMPLES / "function_call.schema.json")
FC_INSTANCE = str(EXAMPLES / "function_call.instance.json")
REC_SCHEMA = str(EXAMPLES / "record.schema.json")
REC_INSTANCE = str(EXAMPLES / "record.instance.json")
MINI_XZ = ROOT / "exl2_enforcer" / "data" / "mini_llama3.tokenizer.json.xz"
BENCH_KEYS = {"accepted", "rejected_at", "steps", "compile_ms", "cold", "warm", "retained_bytes", "native_walks",
              "peers"}
STAT_KEYS = {"mean_us", "p50_us", "p99_us", "max_us"}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, dict, str]:
    """Like :func:`run` with ``--json``; stdout must be exactly one JSON object."""
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out), err


def write(tmp_path: Path, name: str, value: object) -> str:
    """Write ``value`` as indented JSON and return the path."""
    path = tmp_path / name
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def kinds_at(risks: list[dict]) -> set[tuple[str, str]]:
    """``{(pointer, kind)}`` of a risk list."""
    return {(r["pointer"], r["kind"]) for r in risks}


# ----------------------------------------------------------------------------- check

def _plain_json_content(piece: bytes | None) -> bool:
    """RFC 8259: a string may hold any complete UTF-8 text except '"', '\\' and U+0000..U+001F."""
    try:
        text = piece.decode("utf-8") if piece else None
    except UnicodeDecodeError:
        return False
    return bool(text) and not any(ch in '"\\' or ord(ch) < 0x20 for ch in text)


def test_check_function_call_example(capsys):
    code, out, err = run(capsys, "check", FC_SCHEMA)
    assert code == 0 and err == ""
    assert "supported:  yes" in out
    assert "/properties/reason  [free_text]" in out
    vocab = default_vocabulary()
    plain = sum(_plain_json_content(vocab.token_bytes[i]) for i in range(vocab.n_ids))
    text = sum(vocab.token_bytes[i] is not None for i in range(vocab.n_ids))
    assert f"every one of the {plain:,} plain-content tokens of this vocabulary ({plain / text:.0%}" in out
    assert "attendees/items/format  [costly_format]" in out


def test_check_json_keys_and_risks(capsys):
    code, report, _ = run_json(capsys, "check", REC_SCHEMA)
    assert code == 0
    assert set(report) == {"supported", "error", "pointer", "compile_ms", "risks"}
    assert report["supported"] is True and report["error"] is None and report["compile_ms"] > 0
    assert all(set(r) == {"pointer", "kind", "detail", "fix"} for r in report["risks"])
    assert {("/properties/summary", "free_text"), ("/properties/tags", "unbounded_array")} <= kinds_at(report["risks"])
    # bounded strings, enums, patterns and numbers are no risk
    assert not any(r["pointer"].startswith("/properties/address") for r in report["risks"])


def test_check_unknown_format_is_free_text(tmp_path, capsys):
    """A format the spec does not define is an annotation (the compiler warns): the string is still
    free text, while an enforced format is not."""
    schema = write(tmp_path, "s.json", {"type": "object", "properties": {
        "phone": {"type": "string", "format": "phone"}, "id": {"type": "string", "format": "uuid"}}})
    code, report, _ = run_json(capsys, "check", schema)
    assert code == 0
    kinds = kinds_at(report["risks"])
    assert ("/properties/phone", "free_text") in kinds
    assert not any(pointer == "/properties/id" for pointer, _kind in kinds)


def test_check_unsupported_schema(tmp_path, capsys):
    schema = write(tmp_path, "s.json", {"type": "object", "properties": {"x": {"not": {"const": [3]}}}})
    code, out, err = run(capsys, "check", schema)
    assert code == 2
    assert "supported:  no" in out and "/properties/x/not" in out and "--lenient" in out
    assert err.count("\n") == 1 and "/properties/x/not" in err and "Traceback" not in err
    code, report, _ = run_json(capsys, "check", schema)
    assert code == 2
    assert report["supported"] is False and report["pointer"] == "/properties/x/not/const"
    assert "'not'" in report["error"] and report["risks"] == []


def test_check_lenient_reports_ignored_keyword(tmp_path, capsys):
    not_three = {"type": "integer", "not": {"const": [3]}}
    schema = write(tmp_path, "s.json", {"type": "object", "properties": {"x": not_three}})
    code, report, _ = run_json(capsys, "check", schema, "--lenient")
    assert code == 0 and report["supported"]
    assert ("/properties/x/not", "ignored_keyword") in kinds_at(report["risks"])


def test_check_options_change_the_language(tmp_path, capsys):
    # a recursive schema needs depth: --max-depth 1 leaves too little for the nested $ref
    tree = {"$defs": {"n": {"type": "object", "properties": {"kids": {"type": "array", "maxItems": 2,
            "items": {"$ref": "#/$defs/n"}}}, "required": ["kids"]}}, "$ref": "#/$defs/n"}
    schema = write(tmp_path, "tree.json", tree)
    code, report, _ = run_json(capsys, "check", schema)
    assert code == 0 and ("/$defs/n/properties/kids/items/$ref", "recursion") in kinds_at(report["risks"])
    for flags in (["--any-order"], ["--compact"], ["--max-whitespace", "3"], ["--max-depth", "4"]):
        assert run(capsys, "check", schema, *flags)[0] == 0


# ----------------------------------------------------------------------------- risks

def test_risk_kinds_and_pointers():
    vocab = default_vocabulary()
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^.{0,100}$"},
            "color": {"enum": [f"c{i}" for i in range(150)]},
            "meta": {"description": "anything"},
            "map": {"type": "object", "additionalProperties": {"type": "integer"}},
            "deep": {"type": "array", "maxItems": 1, "items": {"type": "array", "maxItems": 1, "items": {
                "type": "array", "maxItems": 1, "items": {"type": "array", "maxItems": 1, "items": {
                    "type": "array", "maxItems": 1, "items": {"type": "array", "maxItems": 1,
                                                              "items": {"type": "integer"}}}}}}},
            "short": {"type": "string", "maxLength": 20},
            "choice": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "integer"}]},
        },
    }
    got = {(r.pointer, r.kind) for r in analyse_schema(schema, vocab)}
    assert ("/properties/code/pattern", "costly_pattern") in got
    assert ("/properties/color/enum", "huge_enum") in got
    assert ("/properties/meta", "any_value") in got
    assert ("/properties/map/additionalProperties", "open_object") in got
    assert any(k == "deep_nesting" and p.startswith("/properties/deep/items") for p, k in got)
    assert not any(p.startswith(("/properties/short", "/properties/choice")) for p, _ in got)


def test_risk_shallow_merges_combinators():
    vocab = default_vocabulary()
    assert analyse_schema({"allOf": [{"type": "string"}, {"maxLength": 10}]}, vocab) == []
    assert analyse_schema({"type": "string", "anyOf": [{"maxLength": 5}, {"enum": ["a"]}]}, vocab) == []
    ref = {"properties": {"a": {"$ref": "#/$defs/s", "maxLength": 3}}, "$defs": {"s": {"type": "string"}}}
    assert analyse_schema(ref, vocab) == []


def test_risk_walks_conditionals_and_names_real_places():
    """check found nothing in then/else, dependentSchemas or patternProperties (a required free-text
    field inside `then` of the if/then/else discriminator form: "risks: none found"), kept only the
    last if/then of an allOf, and named a parent's property through the branch that merged it
    (/anyOf/0/properties/a, a place the schema does not have)."""
    vocab = default_vocabulary()
    schema = {"type": "object", "required": ["kind"],
              "properties": {"kind": {"enum": ["a", "b"]}, "note": {"type": "string"}},
              "if": {"properties": {"kind": {"const": "a"}}},
              "then": {"properties": {"text": {"type": "string"}}, "required": ["text"]},
              "else": {"properties": {"list": {"type": "array", "items": {"type": "integer"}}}},
              "dependentSchemas": {"note": {"properties": {"why": {"type": "string"}}}},
              "patternProperties": {"^x_": {"type": "string"}}}
    got = {(r.pointer, r.kind) for r in analyse_schema(schema, vocab)}
    assert got == {("/then/properties/text", "free_text"), ("/else/properties/list", "unbounded_array"),
                   ("/dependentSchemas/note/properties/why", "free_text"), ("/properties/note", "free_text"),
                   ("/patternProperties/^x_", "free_text")}, got
    all_of = {"type": "object", "properties": {"kind": {"enum": ["f", "u"]}}, "allOf": [
        {"if": {"properties": {"kind": {"const": "f"}}}, "then": {"properties": {"path": {"type": "string"}}}},
        {"if": {"properties": {"kind": {"const": "u"}}}, "then": {"properties": {"url": {"type": "string"}}}}]}
    got = {(r.pointer, r.kind) for r in analyse_schema(all_of, vocab)}
    assert got == {("/allOf/0/then/properties/path", "free_text"), ("/allOf/1/then/properties/url", "free_text")}
    parent = {"type": "object", "properties": {"a": {"type": "string"}},
              "anyOf": [{"required": ["a"]}, {"properties": {"b": {"type": "string"}}}]}
    got = {(r.pointer, r.kind) for r in analyse_schema(parent, vocab)}
    assert got == {("/properties/a", "free_text"), ("/anyOf/1/properties/b", "free_text")}


# ----------------------------------------------------------------------------- bench

def test_bench_function_call_json(capsys):
    code, report, err = run_json(capsys, "bench", FC_SCHEMA, "--instance", FC_INSTANCE)
    assert code == 0 and err == ""
    assert set(report) == BENCH_KEYS
    assert 0 < report["retained_bytes"] <= 256 << 20
    assert report["accepted"] is True and report["rejected_at"] is None
    assert report["steps"] > 100  # one mask per token plus the final one
    assert report["compile_ms"] > 0
    assert set(report["cold"]) == STAT_KEYS and set(report["warm"]) == STAT_KEYS
    assert report["peers"] == {}


def test_bench_text_report(capsys):
    code, out, err = run(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE)
    assert code == 0 and err == ""
    assert "accepted:   yes" in out and "validates:  yes" in out
    assert "exl2_enforcer cold" in out and "exl2_enforcer warm" in out


def test_bench_refuses_keys_out_of_schema_order(tmp_path, capsys):
    value = json.loads(Path(REC_INSTANCE).read_text(encoding="utf-8"))
    swapped = {"name": value["name"], "id": value["id"], **{k: v for k, v in value.items() if k not in ("id", "name")}}
    inst = write(tmp_path, "swapped.json", swapped)
    code, report, err = run_json(capsys, "bench", REC_SCHEMA, "--instance", inst)
    assert code == 1
    assert report["accepted"] is False
    at = report["rejected_at"]
    assert set(at) == {"index", "token_id", "token_bytes", "text_so_far", "reason"}
    assert at["text_so_far"].startswith('{\n  "') and at["token_id"] is not None
    assert "--any-order" in err and "Traceback" not in err
    code, out, _ = run(capsys, "bench", REC_SCHEMA, "--instance", inst)
    assert code == 1 and "validates:  yes" in out and "NO: token #" in out
    assert run(capsys, "bench", REC_SCHEMA, "--instance", inst, "--any-order")[0] == 0


def test_bench_invalid_instance_refused_is_not_a_failure(tmp_path, capsys):
    value = json.loads(Path(REC_INSTANCE).read_text(encoding="utf-8"))
    value["age"] = 200  # above maximum 130
    code, out, _ = run(capsys, "bench", REC_SCHEMA, "--instance", write(tmp_path, "bad.json", value))
    assert code == 0
    assert "validates:  no" in out and "NO: token #" in out and "refusing it is correct" in out


def test_bench_whitespace_hint(tmp_path, capsys):
    inst = tmp_path / "wide.json"
    inst.write_text('{"name":' + " " * 40 + '"x"}', encoding="utf-8")
    schema = write(tmp_path, "s.json", {"type": "object", "properties": {"name": {"type": "string", "maxLength": 9}}})
    code, _, err = run(capsys, "bench", schema, "--instance", str(inst))
    assert code == 1 and "--max-whitespace" in err
    # the option is the reason, not an engine fault: the message leads with it
    assert "outside these options" in err and "engine refused a valid instance" not in err
    assert run(capsys, "bench", schema, "--instance", str(inst), "--max-whitespace", "64")[0] == 0


def test_bench_extra_keys_hint_and_open_objects(tmp_path, capsys):
    value = json.loads(Path(REC_INSTANCE).read_text(encoding="utf-8"))
    inst = write(tmp_path, "extra.json", {**value, "note": "x"})  # valid: the schema does not forbid extra keys
    code, _, err = run(capsys, "bench", REC_SCHEMA, "--instance", inst)
    assert code == 1 and "--open-objects" in err
    assert run(capsys, "bench", REC_SCHEMA, "--instance", inst, "--open-objects")[0] == 0


def test_bench_compact_refuses_indented_text(capsys):
    code, report, err = run_json(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE, "--compact")
    assert code == 1 and report["rejected_at"]["index"] == 0  # "{\n" is one token
    assert "--max-whitespace" in err


@pytest.mark.parametrize("peer,module", [("xgrammar", "xgrammar"), ("llguidance", "llguidance"),
                                         ("lm-format-enforcer", "lmformatenforcer")])
def test_bench_missing_peer_is_an_error_string(monkeypatch, capsys, peer, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    code, report, _ = run_json(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE, "--peers", peer)
    assert code == 0 and report["accepted"]
    assert isinstance(report["peers"][peer], str) and "not installed" in report["peers"][peer]


PEER_MODULES = {"xgrammar": "xgrammar", "llguidance": "llguidance", "lm-format-enforcer": "lmformatenforcer"}


def test_bench_installed_peers_have_figures(capsys):
    """Every installed peer must time the whole instance or report which valid token it refused: an
    adapter that breaks (any other error string in place of figures) fails here; a peer that is not
    installed must say so."""
    import importlib.util

    code, report, _ = run_json(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE, "--peers", "all")
    assert code == 0 and list(report["peers"]) == list(PEER_MODULES)
    installed = [p for p, module in PEER_MODULES.items() if importlib.util.find_spec(module) is not None]
    if not installed:  # the test extra does not pull the peers; the bench extra does
        pytest.skip("no peer installed: pip install -e '.[bench]' to test the peer adapters")
    for name, fig in report["peers"].items():
        if name not in installed:
            assert isinstance(fig, str) and "not installed" in fig, (name, fig)
            continue
        if isinstance(fig, str) and fig.startswith("refused "):
            # the peer's own wrong answer on a valid instance (lm-format-enforcer 0.11.3 refuses the
            # token after "Zoë"): a finding the bench reports, not a broken adapter
            continue
        assert isinstance(fig, dict), f"{name} adapter failed: {fig}"
        assert set(fig) == {"compile_ms", "cold", "warm"} and set(fig["cold"]) == STAT_KEYS, name
        assert fig["compile_ms"] > 0 and all(fig[p]["max_us"] >= fig[p]["p50_us"] > 0 for p in ("cold", "warm"))


def test_bench_unknown_peer_is_a_usage_error(capsys):
    code, _, err = run(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE, "--peers", "xgrammar,bogus")
    assert code == 2 and "unknown peer 'bogus'" in err and "Traceback" not in err


def test_bench_with_tokenizer_file_folder_and_xz(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tokenizer.json").write_bytes(lzma.decompress(MINI_XZ.read_bytes()))
    (tmp_path / "model" / "tokenizer_config.json").write_text('{"eos_token": "<|eot_id|>"}', encoding="utf-8")
    for tok in (str(MINI_XZ), str(tmp_path / "model" / "tokenizer.json"), str(tmp_path / "model")):
        code, report, _ = run_json(capsys, "bench", REC_SCHEMA, "--instance", REC_INSTANCE, "--tokenizer", tok)
        assert code == 0 and report["accepted"], tok


# ----------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("argv,needle", [
    (["check", "no/such/schema.json"], "no such file"),
    (["bench", REC_SCHEMA, "--instance", "no/such/value.json"], "no such file"),
    (["check", REC_SCHEMA, "--tokenizer", "no/such/tokenizer.json"], "--tokenizer"),
    (["check", str(ROOT / "examples")], "cannot read"),
])
def test_missing_files_are_one_line_errors(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_json_and_unsupported_schema_in_bench(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": ', encoding="utf-8")
    code, _, err = run(capsys, "check", str(bad))
    assert code == 2 and "not valid JSON" in err and "line 1" in err
    unsupported = write(tmp_path, "u.json", {"type": "object", "properties": {"a": {"if": {"const": [1]}, "then": {}}}})
    code, out, err = run(capsys, "bench", unsupported, "--instance", REC_INSTANCE)
    assert code == 2 and out == "" and "/properties/a/if" in err and "Traceback" not in err


def test_generate_without_cuda_says_so(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = run(capsys, "generate", "--model", str(ROOT), "--schema", REC_SCHEMA, "--prompt", "hi")
    assert code == 3 and out == "" and "needs a CUDA GPU" in err and "Traceback" not in err


@pytest.mark.parametrize("mode, flash, paged, says", [
    ("auto", False, False, "running unpaged"), ("auto", True, True, ""), ("no", True, False, ""),
])
def test_generate_falls_back_to_unpaged_without_flash_attn(exl2, monkeypatch, mode, flash, paged, says):
    """exllamav2 0.3.2 refuses paged attention without flash-attn >= 2.5.7 (as on the H200 test
    machine): 'auto' builds an unpaged generator and says so on stderr."""
    import io

    import exllamav2.attn

    from exl2_enforcer.cli.generate import choose_paged

    monkeypatch.setattr(exllamav2.attn, "has_flash_attn_with_paged", flash)
    err = io.StringIO()
    assert choose_paged(mode, err) is paged
    assert (says in err.getvalue()) and (bool(err.getvalue()) == bool(says))
    if says:
        assert "Flash Attention 2.5.7" in err.getvalue() and "one job at a time" in err.getvalue()


def test_generate_paged_yes_without_flash_attn_is_a_clear_error(exl2, monkeypatch):
    import io

    import exllamav2.attn

    from exl2_enforcer.cli.generate import choose_paged
    from exl2_enforcer.errors import CliError

    monkeypatch.setattr(exllamav2.attn, "has_flash_attn_with_paged", False)
    with pytest.raises(CliError, match="--paged yes: Paged attention required Flash Attention"):
        choose_paged("yes", io.StringIO())


@pytest.mark.parametrize("lines,needle", [
    (['"a"', "{not json"], ":2: not JSON"),
    (['{"text": "a"}'], 'object with a "prompt" string'),
    (["", "  "], "no prompts"),
])
def test_generate_prompt_file_errors(tmp_path, capsys, lines, needle):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(lines), encoding="utf-8")
    code, _, err = run(capsys, "generate", "--model", str(ROOT), "--schema", REC_SCHEMA, "--prompts", str(f))
    assert code == 2 and needle in err and err.count("\n") == 1


def test_generate_needs_one_prompt_source(capsys):
    code, _, err = run(capsys, "generate", "--model", str(ROOT), "--schema", REC_SCHEMA)
    assert code == 2 and "--prompt" in err
    code, _, err = run(capsys, "generate", "--model", ".", "--schema", REC_SCHEMA, "--prompt", "a", "--prompts", "x")
    assert code == 2 and "not allowed with" in err


def test_generate_reads_prompts_file(tmp_path):
    import argparse

    from exl2_enforcer.cli.generate import read_prompts

    f = tmp_path / "p.jsonl"
    f.write_text('"first"\n\n{"prompt": "second", "id": 7}\n', encoding="utf-8")
    assert read_prompts(argparse.Namespace(prompt=None, prompts=str(f))) == ["first", "second"]


# ----------------------------------------------------------------------------- subprocess

def _python_m(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "exl2_enforcer", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_python_m_check_example():
    proc = _python_m("check", "examples/function_call.schema.json")
    assert proc.returncode == 0, proc.stderr
    assert "/properties/reason  [free_text]" in proc.stdout and proc.stderr == ""


def test_python_m_missing_file_has_no_traceback():
    proc = _python_m("bench", "examples/nope.json", "--instance", "examples/record.instance.json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def test_commands_share_errors_exit_codes_and_schema_options(capsys, tmp_path):
    """check, bench and generate report a missing schema the same way, with the same exit code,
    and take the same schema options."""
    from exl2_enforcer.cli.common import ExitCode

    missing = str(tmp_path / "nope.json")
    lines = set()
    for argv in (["check", missing], ["bench", missing, "--instance", REC_INSTANCE],
                 ["generate", "--model", str(ROOT), "--schema", missing, "--prompt", "hi"]):
        code, out, err = run(capsys, *argv)
        assert code == ExitCode.USAGE == 2 and out == "" and err.count("\n") == 1, argv
        lines.add(err)
    assert lines == {f"exl2-enforcer: error: schema {missing}: no such file\n"}
    for command in ("check", "bench", "generate"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        for flag in ("--any-order", "--compact", "--max-whitespace", "--open-objects", "--lenient", "--max-depth"):
            assert flag in out, (command, flag)


@pytest.mark.parametrize("value, ok", [("0", True), ("00", True), ("3", True), ("-1", False), ("x", False)])
def test_max_whitespace_takes_non_negative_integers(capsys, value, ok):
    code, _, err = run(capsys, "check", FC_SCHEMA, "--max-whitespace", value)
    assert (code == 0) == ok
    assert ok or "expected a non-negative integer" in err


def test_closed_stdout_stops_quietly(tmp_path):
    """`check --json S | head -c 0`: the reader is gone before the first write; no traceback, code 141."""
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}}), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "exl2_enforcer", "check", "--json", str(schema)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_every_option_is_in_docs_cli_md():
    """docs/cli.md is the reference: --unknown-keywords was in every command's --help but in no
    table of it.  Each long option of the parser (the schema options, check/bench's and
    generate's own) must appear in the document."""
    import argparse

    from exl2_enforcer.cli.app import build_parser

    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = set()
    for name, sub in subs.choices.items():
        for action in sub._actions:
            missing |= {f"{name} {o}" for o in action.option_strings if o.startswith("--") and o != "--help"
                        and not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", doc)}
    assert not missing, f"options missing from docs/cli.md: {sorted(missing)}"
