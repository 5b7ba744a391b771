"""Where the test data sets live, and what a missing one does.

The JSON-Schema-Test-Suite subset is in the repository (``tests/conformance/suite``); the real
tokenizers are large and live in ``../shared/tokenizers`` beside the project root.  Locally a
missing data set skips the tests that need it; under ``CI=true`` it fails them, so a CI run
cannot pass by skipping half the suite.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_TOKENIZERS = ROOT.parent / "shared" / "tokenizers"
CONFORMANCE_SUITE = ROOT / "tests" / "conformance" / "suite"


def in_ci() -> bool:
    """Whether this run is CI (the ``CI`` environment variable is ``true``, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_data(message: str) -> None:
    """Skip the current test for a missing data set, or fail it under ``CI=true``; never returns."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: missing test data fails instead of skipping)", pytrace=False)
    pytest.skip(message)


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; otherwise :func:`missing_data` naming ``what``."""
    if not path.is_file():
        missing_data(f"{what}: {path} is absent")
    return path
