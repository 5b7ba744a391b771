"""Every code block in README.md and docs/*.md runs here.

* ```python blocks are executed; blocks that import exllamav2 need CUDA and a model, so they run
  only on a CUDA machine (with "/path/to/model" replaced by a tiny model the GPU tests build) and
  are skipped elsewhere.
* ```bash blocks: each ``exl2-enforcer`` line runs as ``python -m exl2_enforcer`` from the
  repository root and must exit 0; install and test-runner lines are what CI itself runs.
* ```json blocks must parse.  ```text blocks are synopses, diagrams and sample output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str, str]]:
    out = []
    for path in DOCS:
        for i, m in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
            out.append((f"{path.relative_to(ROOT)}#{i}", m.group(1), m.group(2)))
    return out


BLOCKS = _blocks()


def test_every_block_has_a_language():
    unlabeled = [name for name, lang, _ in BLOCKS if not lang]
    assert not unlabeled, f"label these code blocks (python, bash, json or text): {unlabeled}"


@pytest.mark.parametrize("name,code", [(n, c) for n, lang, c in BLOCKS if lang == "python"],
                         ids=[n for n, lang, _ in BLOCKS if lang == "python"])
def test_python_block_runs(name, code, monkeypatch, request):
    if "exllamav2" in code:
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("GPU-only block: needs CUDA and a model")
        folder = request.getfixturevalue("exl2_model_dir")("mini")  # a tiny random-weight model
        code = code.replace("/path/to/model", str(folder))
    monkeypatch.chdir(ROOT)
    exec(compile(code, name, "exec"), {"__name__": f"docs_block_{name}"})  # noqa: S102 - docs are ours


README_ENGINE_BLOCKS = [(n, c) for n, lang, c in BLOCKS if lang == "python" and n.startswith("README")
                       and "exllamav2" not in c]


@pytest.mark.parametrize("name,code", README_ENGINE_BLOCKS, ids=[n for n, _ in README_ENGINE_BLOCKS])
def test_readme_engine_blocks_run_from_any_folder(name, code, tmp_path):
    """From a folder that is not the clone, beside a decoy ``exl2_enforcer/`` folder (what the clone's
    parent folder looks like) and a ``shared/``: nothing may depend on the working directory."""
    (tmp_path / "exl2_enforcer").mkdir()
    (tmp_path / "shared").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    schema = str(ROOT / "examples" / "record.schema.json")
    cli = subprocess.run([sys.executable, "-m", "exl2_enforcer", "check", schema], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0 and "supported:  yes" in cli.stdout, cli.stderr[-2000:]


@pytest.mark.parametrize("name,code", [(n, c) for n, lang, c in BLOCKS if lang == "bash"],
                         ids=[n for n, lang, _ in BLOCKS if lang == "bash"])
def test_bash_block_commands_run(name, code):
    ran = 0
    for line in code.splitlines():
        line = line.split("  #")[0].strip()
        if not line.startswith("exl2-enforcer "):
            continue
        args = shlex.split(line)[1:]
        proc = subprocess.run([sys.executable, "-m", "exl2_enforcer", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-2000:])
        ran += 1
    if not ran:
        assert re.search(r"^(pip|python -m pytest|ruff|mypy|python -m tests\.)", code, re.M), \
            f"{name}: nothing to run in this bash block"


@pytest.mark.parametrize("name,code", [(n, c) for n, lang, c in BLOCKS if lang == "json"],
                         ids=[n for n, lang, _ in BLOCKS if lang == "json"])
def test_json_block_parses(name, code):
    decoder, pos, values = json.JSONDecoder(), 0, 0
    while code[pos:].strip():  # one or more JSON values (examples of several outputs)
        pos += len(code[pos:]) - len(code[pos:].lstrip())
        _value, pos = decoder.raw_decode(code, pos)
        values += 1
    assert values
