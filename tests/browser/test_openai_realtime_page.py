"""The OpenAI Realtime endpoint from JavaScript, over the instant engines (docs/realtime.md): the
``openai`` npm package's own Realtime WebSocket client (frontend/e2e/realtime-sdk.mjs), and a page in
Debian's Chromium (frontend/e2e/realtime.mjs), both authenticating with the browser subprotocols
(``realtime`` + ``openai-insecure-api-key.KEY``); a typed item and a spoken reply each."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from avatar.bootstrap import build_instant_container
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import CHROMIUM, run_browser_script
from tests.e2e.harness import running_server, server_key
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.browser


def _node_has_websocket() -> bool:
    probe = ["node", "-e", "process.stdout.write(typeof WebSocket)"]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout == "function"


async def test_the_openai_npm_client_holds_a_realtime_exchange(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is needed: run `make setup-test`")
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp_path
    app = create_app(settings, build_instant_container(settings))
    async with running_server(app) as base:
        env = {"AVATAR_URL": base, "AVATAR_KEY": await server_key(base)}
        if not _node_has_websocket():  # Node 20 keeps it behind a flag; Node 22 has it by default
            env["NODE_OPTIONS"] = "--experimental-websocket"
        result = await run_browser_script("realtime-sdk.mjs", env, timeout_s=120)
    assert result["protocol"] == "realtime"
    assert result["types"][0] == "session.created" and result["status"] == "completed"
    assert "response.output_audio.delta" in result["types"]
    assert result["transcript"].strip() and result["audioBytes"] > 0


async def test_a_browser_page_holds_a_realtime_exchange(tmp_path: Path, librivox: list[SpeechClip]) -> None:
    if shutil.which("node") is None or not CHROMIUM.exists():
        pytest.fail("node and chromium are needed: run `make setup-test`")
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp_path
    app = create_app(settings, build_instant_container(settings))
    async with running_server(app) as base:
        env = {"AVATAR_URL": base, "AVATAR_WAV": str(librivox[0].path), "AVATAR_KEY": await server_key(base)}
        result = await run_browser_script("realtime.mjs", env, timeout_s=180)
    assert result["protocol"] == "realtime"
    assert result["types"][0] == "session.created" and result["status"] == "completed"
    for kind in ("conversation.item.added", "response.created", "response.output_audio.delta"):
        assert kind in result["types"], kind
    assert result["transcript"].strip() and result["audioBytes"] > 0
