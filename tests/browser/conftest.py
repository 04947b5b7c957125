"""Fixtures of the browser tests: the production build of the web app."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser.support import CHROMIUM, FRONTEND


@pytest.fixture(scope="module")
def built_app() -> Path:
    """The production build of the web app (rebuilt here when missing or older than its sources)."""
    if shutil.which("node") is None or not CHROMIUM.exists():
        pytest.fail(
            "node and chromium are needed: run `make setup-test` (scripts/setup.sh --with-test-tools)"
        )
    if not (FRONTEND / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=FRONTEND, check=True)
    index = FRONTEND / "dist" / "index.html"
    sources = [FRONTEND / "index.html", *(p for p in (FRONTEND / "src").rglob("*") if p.is_file())]
    if not index.exists() or max(p.stat().st_mtime for p in sources) > index.stat().st_mtime:
        subprocess.run(["npm", "run", "build"], cwd=FRONTEND, check=True, capture_output=True)
    return FRONTEND / "dist"
