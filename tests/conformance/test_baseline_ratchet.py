"""The baseline ratchet script (baseline_ratchet.py) on throw-away git repositories."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conformance import baseline_ratchet


def _baseline(outcomes: dict[str, str]) -> dict:
    return {"tests": {k: {"test": k, "valid": True, "outcome": v} for k, v in outcomes.items()}}


def _commit(repo: Path, outcomes: dict[str, str], message: str) -> None:
    path = repo / baseline_ratchet.BASELINE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_baseline(outcomes)), encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=repo, check=True)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def test_lost_passes_lists_only_passes_that_stopped_passing():
    before = _baseline({"a": "pass", "b": "pass", "c": "unsupported", "d": "pass"})
    after = _baseline({"a": "pass", "b": "unsupported", "c": "pass"})
    assert baseline_ratchet.lost_passes(before, after) == ["b", "d"]
    assert baseline_ratchet.lost_passes(after, before) == ["c"]


def test_a_commit_that_lowers_the_bar_fails(repo, capsys):
    _commit(repo, {"x/0/0": "pass", "x/0/1": "pass"}, "first")
    _commit(repo, {"x/0/0": "pass", "x/0/1": "unsupported"}, "lower the bar")
    assert baseline_ratchet.main([], repo=repo) == 1
    assert "x/0/1" in capsys.readouterr().err


def test_a_commit_that_only_gains_passes_is_fine(repo, capsys):
    _commit(repo, {"x/0/0": "pass", "x/0/1": "unsupported"}, "first")
    _commit(repo, {"x/0/0": "pass", "x/0/1": "pass"}, "raise the bar")
    assert baseline_ratchet.main([], repo=repo) == 0
    assert "1 gained" in capsys.readouterr().out


def test_first_commit_and_unknown_revision(repo, capsys):
    _commit(repo, {"x/0/0": "pass"}, "only commit")
    assert baseline_ratchet.main([], repo=repo) == 0
    assert "no previous commit" in capsys.readouterr().out
    assert baseline_ratchet.main(["--against", "no-such-rev"], repo=repo) == 2


def test_uncommitted_regression_is_caught_against_head(repo):
    _commit(repo, {"x/0/0": "pass"}, "first")
    (repo / baseline_ratchet.BASELINE).write_text(json.dumps(_baseline({"x/0/0": "skipped"})), encoding="utf-8")
    assert baseline_ratchet.main(["--against", "HEAD"], repo=repo) == 1
