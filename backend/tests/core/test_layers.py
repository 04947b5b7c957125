"""Architecture rules, checked on every import statement (also those inside functions).

The orchestrator (backend/src/avatar) has four layers; imports point inward only:

- ``domain`` imports nothing of ours but itself (and no framework);
- ``application`` imports only ``domain`` and itself (ports are Protocols it owns);
- ``infrastructure`` (adapters) never imports ``presentation``, the composition root or the tools;
- ``presentation`` (routes, sockets) never imports ``infrastructure``; it gets adapters and use
  cases from the composition root (``avatar.bootstrap``: the typed ``Container``/``Services`` and
  ``running``), which is, with the command line, the only place that wires adapters.

Nothing in ``avatar`` imports the test suite. The model services (services/*) never import the
orchestrator; ``avatar_common`` imports no other service and each service imports only itself and
``avatar_common``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BACKEND = ROOT / "backend" / "src" / "avatar"
SERVICES = ROOT / "services"

#: What each layer may import of ``avatar`` (prefixes); anything else of ours is a violation.
ALLOWED = {
    "domain": ("avatar.domain",),
    "application": ("avatar.domain", "avatar.application"),
    "infrastructure": ("avatar.domain", "avatar.application", "avatar.infrastructure", "avatar.settings"),
    "presentation": (
        "avatar.domain",
        "avatar.application",
        "avatar.presentation",
        "avatar.settings",
        "avatar.bootstrap",
    ),
}
#: Modules of ``avatar`` itself that a layer may import by exact name (the package's version).
PACKAGE_ROOT = "avatar"
FRAMEWORKS = {"fastapi", "starlette", "sqlalchemy", "redis", "minio", "httpx", "prometheus_client", "uvicorn"}
SERVICE_PACKAGES = {"avatar_common", "avatar_asr", "avatar_tts", "avatar_prosody"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _ours(name: str) -> bool:
    return name == PACKAGE_ROOT or name.startswith(PACKAGE_ROOT + ".")


def layer_violations(layer: str, path: Path) -> list[str]:
    """What ``path`` (a module of ``layer``) imports against the rules above."""
    bad = []
    for name in _imports(path):
        top = name.split(".")[0]
        if _ours(name) and name != PACKAGE_ROOT and not name.startswith(ALLOWED[layer]):
            bad.append(f"imports {name}")
        if layer in ("domain", "application") and top in FRAMEWORKS:
            bad.append(f"imports framework {name}")
        if layer in ("domain", "application") and top in SERVICE_PACKAGES:
            bad.append(f"imports the model service package {name}")
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_inward(layer: str) -> None:
    files = sorted((BACKEND / layer).rglob("*.py"))
    assert files, f"no modules in {layer}"
    bad = [f"{f.relative_to(ROOT)} {v}" for f in files for v in layer_violations(layer, f)]
    assert not bad, "\n".join(bad)


def test_nothing_in_the_package_imports_the_test_suite() -> None:
    bad = []
    for f in sorted(BACKEND.rglob("*.py")):
        bad += [f"{f.relative_to(ROOT)} imports {n}" for n in _imports(f) if n.split(".")[0] == "tests"]
    assert not bad, "\n".join(bad)


def test_only_the_composition_root_and_tools_import_adapters() -> None:
    """Outside ``infrastructure`` itself, adapters are imported by ``bootstrap``, ``cli`` and the
    benchmarks (``bench``) only."""
    wiring = {BACKEND / "bootstrap.py", BACKEND / "cli.py"}
    bad = []
    for f in sorted(BACKEND.rglob("*.py")):
        rel = f.relative_to(BACKEND).parts
        if f in wiring or rel[0] in ("infrastructure", "bench"):
            continue
        bad += [
            f"{f.relative_to(ROOT)} imports {n}" for n in _imports(f) if n.startswith("avatar.infrastructure")
        ]
    assert not bad, "\n".join(bad)


def _service_files(package: str) -> list[Path]:
    files = sorted(SERVICES.glob(f"*/src/{package}/**/*.py"))
    assert files, f"no modules in {package}"
    return files


@pytest.mark.parametrize("package", sorted(SERVICE_PACKAGES))
def test_services_import_only_themselves_and_the_common_package(package: str) -> None:
    allowed = {package} if package == "avatar_common" else {package, "avatar_common"}
    bad = []
    for f in _service_files(package):
        for name in _imports(f):
            top = name.split(".")[0]
            if top == "avatar" or (top in SERVICE_PACKAGES and top not in allowed):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("layer", "source", "broken"),
    [
        ("domain", "from avatar.application.ports import x\n", True),
        ("domain", "import sqlalchemy\n", True),
        ("application", "from avatar.infrastructure.database import x\n", True),
        ("application", "def f():\n    from avatar.bootstrap import Container\n", True),
        ("application", "from avatar_common.text import ClauseChunker\n", True),
        ("infrastructure", "from avatar.presentation.app import create_app\n", True),
        ("infrastructure", "from avatar.bootstrap import Container\n", True),
        ("presentation", "from avatar.infrastructure.metrics import x\n", True),
        ("presentation", "from avatar.bootstrap import Services\n", False),
        ("application", "from avatar.domain.models import Session\n", False),
    ],
)
def test_the_rules_detect_violations(tmp_path: Path, layer: str, source: str, broken: bool) -> None:
    module = tmp_path / "m.py"
    module.write_text(source)
    assert bool(layer_violations(layer, module)) is broken
