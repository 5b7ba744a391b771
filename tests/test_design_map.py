"""docs/design.md's module map and the package tree stay in step: every module file of the
package is listed once, every listed module exists, and every line says what it is for."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
ENTRY = re.compile(r"^- `(exl2_enforcer/[\w/]+\.py)` — (\S.*)$", re.M)


def _map_section() -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index("### Module map")
    end = text.index("\n## ", start)
    return text[start:end]


def test_every_module_is_mapped_once_and_every_mapped_module_exists():
    entries = ENTRY.findall(_map_section())
    mapped = [path for path, _ in entries]
    assert len(mapped) == len(set(mapped)), sorted(p for p in mapped if mapped.count(p) > 1)
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "exl2_enforcer").rglob("*.py")
            if "__pycache__" not in p.parts}
    assert sorted(tree - set(mapped)) == [], "modules missing from docs/design.md's module map"
    assert sorted(set(mapped) - tree) == [], "docs/design.md maps modules that do not exist"


def test_every_map_line_describes_its_module():
    for path, what in ENTRY.findall(_map_section()):
        assert len(what.split()) >= 2, (path, what)
