"""CI check: the conformance baseline may only gain passes, never lose one, across commits.

``test_conformance.py`` holds the engine to ``baseline.json``; this script holds ``baseline.json``
to the previous commit's, so a commit cannot lower the bar with
``python -m tests.conformance.harness --write-baseline`` and pass.

    python -m tests.conformance.baseline_ratchet                  # against the merge base or HEAD~1
    python -m tests.conformance.baseline_ratchet --against v0.1.0 # against any revision

Exit status: 0 when no pass was lost (or there is nothing to compare with: a first commit, a
shallow clone, a baseline that did not exist yet; a note says so), 1 when passes were lost
(each is listed), 2 for bad usage or an unreadable baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASELINE = "tests/conformance/baseline.json"
PASS = "pass"


def lost_passes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Keys of tests marked pass in ``before`` whose outcome in ``after`` is not pass (or missing)."""
    now = after.get("tests", {})
    return sorted(key for key, entry in before.get("tests", {}).items()
                  if entry.get("outcome") == PASS and now.get(key, {}).get("outcome") != PASS)


def _git(repo: Path, *args: str) -> str | None:
    """stdout of a git command in the repository, or None when it fails (no git, no such revision)."""
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def default_revision(repo: Path = REPO) -> str | None:
    """The merge base with the upstream branch when there is one, else ``HEAD~1``; None if neither exists."""
    head = (_git(repo, "rev-parse", "HEAD") or "").strip()
    for upstream in ("@{upstream}", "origin/HEAD", "origin/main"):
        base = (_git(repo, "merge-base", "HEAD", upstream) or "").strip()
        if base and base != head:
            return base
    return "HEAD~1" if _git(repo, "rev-parse", "--verify", "--quiet", "HEAD~1^{commit}") else None


def main(argv: list[str] | None = None, repo: Path = REPO) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.baseline_ratchet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REV", help="git revision to compare with (default: merge base or HEAD~1)")
    args = ap.parse_args(argv)
    rev = args.against or default_revision(repo)
    if rev is None:
        print("baseline ratchet: no previous commit to compare with (first commit or shallow clone); skipped")
        return 0
    old_text = _git(repo, "show", f"{rev}:{BASELINE}")
    if old_text is None:
        if args.against:
            print(f"baseline ratchet: cannot read {BASELINE} at {rev}", file=sys.stderr)
            return 2
        print(f"baseline ratchet: {BASELINE} does not exist at {rev} (or the history is shallow); skipped")
        return 0
    try:
        before = json.loads(old_text)
        after = json.loads((repo / BASELINE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"baseline ratchet: unreadable baseline: {exc}", file=sys.stderr)
        return 2
    lost = lost_passes(before, after)
    if lost:
        print(f"baseline ratchet: {len(lost)} test(s) passed in {BASELINE} at {rev} and no longer do:",
              file=sys.stderr)
        for key in lost:
            print(f"  {key}", file=sys.stderr)
        return 1
    gained = len(lost_passes(after, before))
    print(f"baseline ratchet: no pass lost against {rev} ({gained} gained)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
