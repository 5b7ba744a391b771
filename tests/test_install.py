"""Installing without a C compiler still succeeds, as README.md says.

The native walks (engine/_walk.c) are an optional extension.  README's install is a strict
editable one; setuptools lists an optional extension that failed to build among its outputs
and the strict install then fails copying it, unless setup.py's build command leaves it out.
The test builds the strict editable wheel of a copy of the package with ``CC=false`` (a
compiler that always fails) through setuptools' PEP 660 hook, offline, as pip would, and
also asserts that setuptools finds nothing deprecated in the project's metadata.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
setuptools = pytest.importorskip("setuptools")
# pyproject.toml's [build-system] floor (ext-modules in [tool.setuptools], an SPDX license); pip builds with it
NEW_ENOUGH = tuple(int(p) for p in setuptools.__version__.split(".")[:2]) >= (77, 0)


@pytest.mark.skipif(not NEW_ENOUGH, reason="setuptools older than the build-system floor 77")
def test_strict_editable_install_without_a_compiler(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "exl2_enforcer", src / "exl2_enforcer",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    dist = tmp_path / "dist"
    dist.mkdir()
    hook = ("import sys, setuptools.build_meta as b;"
            " print(b.build_editable(sys.argv[1], {'editable_mode': 'strict'}))")
    run = subprocess.run([sys.executable, "-c", hook, str(dist)], cwd=src, env={**os.environ, "CC": "false"},
                         capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert 'building extension "exl2_enforcer.engine._walk" failed' in out  # the compiler really was refused
    assert "SetuptoolsDeprecationWarning" not in out, out[out.find("SetuptoolsDeprecationWarning"):][:600]
    wheel = dist / run.stdout.split()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".pth") for n in names)  # the editable install's link to the source
    assert not any("_walk" in n and n.endswith((".so", ".pyd")) for n in names)
