"""The import contract: the lab engine imports nothing from Django or the apps, and the apps
depend one way only (visualizer on lessons, never back)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> top-level packages of this project it must never import
FORBIDDEN = {
    "core/engine": ("django", "channels", "celery", "lessons", "visualizer", "core.settings", "core.redis",
                    "core.celery", "core.asgi", "core.urls"),
    "lessons": ("visualizer",),
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_it_must_not(package: str) -> None:
    banned = FORBIDDEN[package]
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imports(path)
        if any(module == b or module.startswith(b + ".") for b in banned)
    ]
    assert not found, "\n".join(found)


def test_the_contract_sees_imports_where_they_are():
    # The checker itself: it finds a known import of each kind, so an empty result means something.
    engine_lab = imports(ROOT / "core" / "engine" / "lab.py")
    assert any(module == "core.engine.commands" for _, module in engine_lab)
    services = imports(ROOT / "visualizer" / "services.py")
    assert any(module == "lessons.models" for _, module in services)
