"""House rules of the package, checked on its source: every exception type lives in errors.py,
loggers are named after their module, and the facade exports what it promises."""

from __future__ import annotations

import ast
from pathlib import Path

import exl2_enforcer
from exl2_enforcer import errors

PACKAGE = Path(exl2_enforcer.__file__).resolve().parent


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))
            if "__pycache__" not in p.parts]


def _is_exception_class(node: ast.ClassDef) -> bool:
    names = {b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "" for b in node.bases}
    return any(n.endswith(("Error", "Exception", "Timeout", "Rejected")) for n in names)


def test_every_exception_class_is_defined_in_errors_py():
    elsewhere = [f"{p.relative_to(PACKAGE)}: {node.name}" for p, tree in _modules() if p.name != "errors.py"
                 for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and _is_exception_class(node)]
    assert elsewhere == [], "define exception types in exl2_enforcer/errors.py"
    for name in ("EnforcerError", "SchemaError", "RegexError", "VocabularyError", "TokenRejected", "BitmaskError",
                 "MaskTimeout", "UnknownFormatError"):
        assert issubclass(getattr(errors, name), errors.EnforcerError), name
        assert getattr(exl2_enforcer, name) is getattr(errors, name), f"{name} is not exported by the facade"


def test_loggers_are_named_after_their_module():
    bad = []
    for p, tree in _modules():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and not (len(node.args) == 1 and isinstance(node.args[0], ast.Name)
                             and node.args[0].id == "__name__")):
                bad.append(f"{p.relative_to(PACKAGE)}:{node.lineno}")
    assert bad == [], "use logging.getLogger(__name__)"


def test_facade_exports_exist():
    missing = [name for name in exl2_enforcer.__all__ if not hasattr(exl2_enforcer, name)]
    assert missing == []
