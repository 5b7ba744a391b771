"""The official JSON-Schema-Test-Suite as a ratchet (drafts 2020-12, 2019-09, 7, 6 and 4; byte and
token level).

Fails when
  (a) any test is answered wrongly: an invalid instance accepted, a valid one refused, the byte and
      token levels (or the token mask and the automaton) disagree, or the engine crashes -- in the
      optional format tests a refused valid string is tolerated (the formats are sound subsets), an
      accepted invalid one is not;
  (b) a test that passes in ``baseline.json`` no longer passes.

New passes beyond the baseline only print a hint: re-write it with
``python -m tests.conformance.harness --write-baseline``.

The suite's data is vendored in ``tests/conformance/suite``; the token level also needs
``../shared/tokenizers/llama3.tokenizer.json.xz`` (skipped without it, a failure under ``CI=true``).
"""

from __future__ import annotations

import time

import pytest

from tests.conformance import harness
from tests.data_sets import missing_data

if not harness.SUITE.is_dir():  # vendored in the repository: absent only in a broken checkout
    pytest.fail(f"the JSON-Schema-Test-Suite is not at {harness.SUITE}", pytrace=False)

TOKENIZER = "llama3"
HAS_TOKENIZER = (harness.TOKENIZERS / f"{TOKENIZER}.tokenizer.json.xz").is_file()
SHOW = 25  # bug reports printed in a failure message


@pytest.fixture(scope="module")
def result() -> harness.Run:
    """One run of every draft (required + optional formats): token level with llama3 when present."""
    t0 = time.perf_counter()
    run = harness.run(tuple(harness.DRAFTS), optional=True, tokenizer=TOKENIZER if HAS_TOKENIZER else None,
                      check_masks=True)
    print(f"\nconformance run: {time.perf_counter() - t0:.1f} s")
    return run


def _fail_with(bugs: list[harness.TestResult], what: str) -> None:
    if bugs:
        counts: dict[str, int] = {}
        for t in bugs:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        reports = "\n".join(harness.bug_report(t) for t in bugs[:SHOW])
        more = f"\n... and {len(bugs) - SHOW} more" if len(bugs) > SHOW else ""
        pytest.fail(f"{len(bugs)} {what} {counts} with options {harness.OPTIONS}:\n{reports}{more}", pytrace=False)


BYTE_LEVEL = (harness.ERROR, harness.ACCEPTED_INVALID, harness.REJECTED_VALID)


def test_byte_level_answers_are_right(result: harness.Run) -> None:
    """No accepted-invalid, rejected-valid or crash at the byte level (automaton.matches)."""
    _fail_with([t for t in result.bugs() if t.outcome in BYTE_LEVEL], "wrong byte-level answers or crashes")


def test_token_level_agrees(result: harness.Run) -> None:
    """Token by token through a Matcher (and its masks), every answer equals the byte level's."""
    if result.token_level is None:
        missing_data(f"tokenizer {TOKENIZER} not found in {harness.TOKENIZERS}: token level not run")
    checked = sum(t.token_checked for t in result.tests)
    assert checked > 0, "the token level checked no instance"
    _fail_with([t for t in result.bugs() if t.outcome not in BYTE_LEVEL],
               "token-level or mask inconsistencies")


def test_ratchet(result: harness.Run) -> None:
    """Every test that passes in baseline.json still passes."""
    baseline = harness.load_baseline()
    if baseline is None:
        pytest.fail(f"{harness.BASELINE} is missing: write it with "
                    "`python -m tests.conformance.harness --write-baseline`")
    ratchet = harness.compare(result, baseline)
    if ratchet.new_passes:
        print(f"\n{len(ratchet.new_passes)} tests pass beyond the baseline (e.g. {ratchet.new_passes[:5]}); "
              "re-write it with `python -m tests.conformance.harness --write-baseline`")
    problems = ratchet.regressions + ratchet.mismatched
    if problems:
        shown = "\n".join(problems[:SHOW])
        more = f"\n... and {len(problems) - SHOW} more" if len(problems) > SHOW else ""
        pytest.fail(f"{len(ratchet.regressions)} baseline passes no longer pass, {len(ratchet.mismatched)} "
                    f"baseline tests not found as recorded (suite changed? re-write the baseline):\n{shown}{more}",
                    pytrace=False)


def test_ratchet_catches_a_lost_pass(result: harness.Run) -> None:
    """The comparison itself: a baseline pass that now fails, and a new pass, are both seen."""
    baseline = harness.to_baseline(result)
    lost = next(k for k, e in baseline["tests"].items() if e["outcome"] == harness.UNSUPPORTED)
    won = next(k for k, e in baseline["tests"].items() if e["outcome"] == harness.PASS)
    baseline["tests"][lost] = {**baseline["tests"][lost], "outcome": harness.PASS}
    baseline["tests"][won] = {**baseline["tests"][won], "outcome": harness.UNSUPPORTED}
    ratchet = harness.compare(result, baseline)
    assert [r.split(" ", 1)[0] for r in ratchet.regressions] == [lost]
    assert ratchet.new_passes == [won] and not ratchet.mismatched
