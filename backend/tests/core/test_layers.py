"""Architecture rule: imports point inward only (domain <- application <- infrastructure/presentation),
and the model services never import the orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BACKEND = ROOT / "backend" / "src" / "avatar"

ALLOWED = {
    "domain": ("avatar.domain",),
    "application": ("avatar.domain", "avatar.application"),
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_inner_layers_import_only_inward(layer: str) -> None:
    files = sorted((BACKEND / layer).rglob("*.py"))
    assert files, f"no modules in {layer}"
    bad = []
    for f in files:
        for name in _imports(f):
            if name.startswith("avatar") and not name.startswith(ALLOWED[layer]):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
            if layer == "domain" and name.split(".")[0] in {
                "fastapi",
                "sqlalchemy",
                "redis",
                "minio",
                "httpx",
            }:
                bad.append(f"{f.relative_to(ROOT)} imports framework {name}")
    assert not bad, "\n".join(bad)


def test_services_never_import_the_orchestrator() -> None:
    bad = []
    for f in sorted((ROOT / "services").rglob("src/**/*.py")):
        bad += [f"{f.relative_to(ROOT)} imports {n}" for n in _imports(f) if n.split(".")[0] == "avatar"]
    assert not bad, "\n".join(bad)


def test_the_rule_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from avatar.infrastructure.database import x\n")
    assert "avatar.infrastructure.database" in _imports(bad)
