"""Paths for the browser-side tests; the loopback helpers come from tests.support.net."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.net import free_port, serve_in_thread, wait_for_port

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

__all__ = ["ARTIFACTS", "CHROMIUM", "FRONTEND", "REPO", "free_port", "serve_in_thread", "wait_for_port"]
