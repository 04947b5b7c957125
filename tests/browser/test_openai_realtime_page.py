"""The OpenAI Realtime endpoint from a page in Debian's Chromium (frontend/e2e/realtime.mjs): the
browser's subprotocol authentication (``realtime`` + ``openai-insecure-api-key.KEY``, what the
``openai`` npm package sends from a browser), a typed item and a spoken reply, over the instant
engines (docs/realtime.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from avatar.bootstrap import build_instant_container
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import CHROMIUM, run_browser_script
from tests.e2e.harness import running_server, server_key
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.browser


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
