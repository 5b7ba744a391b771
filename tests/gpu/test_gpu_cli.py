"""``exl2-enforcer generate`` end to end on a CUDA machine: a tiny random-weight model, real exllamav2.

Skipped where CUDA is missing (the command then exits 3, which tests/test_cli.py checks on CPU).
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_generate_writes_one_valid_result_per_prompt(tmp_path, exl2_model_dir, capsys):
    from exl2_enforcer.cli.app import main

    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "required": ["ok", "n"], "properties": {
        "ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}}), encoding="utf-8")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(f"Question {i}: answer as JSON.") for i in range(4)), encoding="utf-8")
    out = tmp_path / "r.jsonl"
    code = main(["generate", "--model", str(exl2_model_dir("mini")), "--schema", str(schema),
                 "--prompts", str(prompts), "--max-new-tokens", "64", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["index"] for r in rows) == [0, 1, 2, 3]
    assert all(r["valid"] for r in rows) and code == 0, rows
