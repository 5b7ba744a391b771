"""The adapter's import-time check (contrib/requirements.py): one clear ImportError
paragraph instead of exllamav2's CUDA build traceback, and --help of the example without CUDA."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from exl2_enforcer.contrib import requirements

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_extension(monkeypatch):
    """exllamav2 0.3.2 installed, its extension neither loaded nor prebuilt."""
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.3.2")
    monkeypatch.delitem(sys.modules, "exllamav2.ext", raising=False)
    real_find_spec = requirements.importlib.util.find_spec
    monkeypatch.setattr(requirements.importlib.util, "find_spec",
                        lambda name, *a: None if name == "exllamav2_ext" else real_find_spec(name, *a))


def test_not_installed(monkeypatch):
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(ImportError, match=r"needs exllamav2 0\.3\.x, which is not installed.*\[exllamav2\]"):
        requirements.require_exllamav2()


@pytest.mark.parametrize("version", ["0.2.8", "0.4.0", "1.0.0"])
def test_other_exllamav2_versions_are_refused(monkeypatch, version):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version)
    with pytest.raises(ImportError, match=rf"exllamav2 {version} is installed"):
        requirements.require_exllamav2()


def test_cpu_torch_without_prebuilt_extension(monkeypatch, no_extension):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    problem = requirements.exllamav2_problem()
    assert problem is not None and "no CUDA or ROCm support" in problem and "\n" not in problem


def test_cuda_torch_without_cuda_home(monkeypatch, no_extension):
    torch = pytest.importorskip("torch")
    import torch.utils.cpp_extension as cpp

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(cpp, "CUDA_HOME", None)
    monkeypatch.setattr(cpp, "ROCM_HOME", None)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert "set CUDA_HOME" in (requirements.exllamav2_problem() or "")
    monkeypatch.setenv("CUDA_HOME", "/usr/local/cuda")
    assert requirements.exllamav2_problem() is None  # exllamav2 may try its build


def test_loaded_extension_needs_no_build(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.3.2")
    monkeypatch.setitem(sys.modules, "exllamav2.ext", object())
    assert requirements.exllamav2_problem() is None


def test_adapter_import_fails_cleanly_or_works():
    """In a fresh process: either the adapter imports (CUDA machine), or one ImportError paragraph
    and exllamav2 was never imported (so its JIT build printed nothing)."""
    code = ("import sys\n"
            "try:\n    import exl2_enforcer.contrib.exllamav2\n    print('imported')\n"
            "except ImportError as e:\n    print('ImportError:', e)\n"
            "print('exllamav2 imported:', 'exllamav2' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "Traceback" not in text and "CUDA_HOME environment variable is not set" not in text
    if "ImportError:" in out.stdout:
        assert out.stdout.count("\n") == 2 and "exl2_enforcer.contrib.exllamav2 needs" in out.stdout
        assert "exllamav2 imported: False" in out.stdout
    else:
        assert "imported" in out.stdout


def test_example_help_works_without_cuda():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "exllamav2_batch.py"), "--help"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert "--model" in out.stdout and "Traceback" not in out.stderr
