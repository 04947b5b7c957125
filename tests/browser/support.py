"""Paths for the browser-side tests; the loopback helpers come from tests.support.net."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from tests.support.net import free_port, serve_in_thread, wait_for_port

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "FRONTEND",
    "REPO",
    "free_port",
    "run_browser_script",
    "serve_in_thread",
    "wait_for_port",
]


async def run_browser_script(script: str, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Run one of ``frontend/e2e/*.mjs`` (Playwright + Debian's Chromium) and return the JSON line
    it prints last, asserting it reports ``ok``.

    Awaited, never blocked on: the server under test usually runs in the same event loop.
    """
    full_env = {**os.environ, "AVATAR_ARTIFACTS": str(ARTIFACTS), "CHROMIUM": str(CHROMIUM), **env}
    proc = await asyncio.create_subprocess_exec(
        "node",
        f"e2e/{script}",
        cwd=FRONTEND,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = stdout.decode().strip().splitlines()
    assert lines, f"the browser script printed nothing; stderr:\n{stderr.decode()[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["ok"], f"{result.get('error')}\nsteps: {result['steps']}\nconsole: {result['console']}"
    return result
