"""The OBS pages in Debian's Chromium (frontend/e2e/live.mjs) against the real app over the instant
engines, fed by the stand-in Twitch chat: the overlay shows chat and replies on a transparent page,
hiding the streamer's chat is pushed live, and the stage plays the replies (docs/live.md)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from avatar.bootstrap import Services, build_instant_container
from avatar.infrastructure.secrets import live_keys
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import ARTIFACTS, CHROMIUM, run_browser_script
from tests.e2e.harness import running_server
from tests.support.audio import SpeechClip
from tests.support.live_standins import TwitchStandIn

pytestmark = pytest.mark.browser


async def test_overlay_and_stage_pages(tmp_path: Path, librivox: list[SpeechClip]) -> None:
    if shutil.which("node") is None or not CHROMIUM.exists():
        pytest.fail("node and chromium are needed: run `make setup-test`")
    async with TwitchStandIn() as twitch:
        settings = Settings(_env_file=None, environment="test")
        settings.data_dir = tmp_path
        settings.live.twitch.channel = "host"
        settings.live.twitch.url = twitch.ws_url
        settings.live.pause_s = 0.0
        app = create_app(settings, build_instant_container(settings))
        async with running_server(app) as base:
            services: Services = app.state.services
            assert services.live is not None
            await twitch.wait_joins(1)
            await twitch.say("host", "host", "Welcome to the stream!", user_id="1", badges="broadcaster/1")
            await twitch.say(
                "host", "mina", "안녕하세요! 오늘 기분 어때요?", user_id="2", display_name="미나"
            )
            await twitch.say("host", "sam", "cheer50 Sing for us!", user_id="3", display_name="Sam", bits=50)
            for _ in range(200):
                if len(services.live.speeches) >= 2:  # Sam and 미나 answered
                    break
                await asyncio.sleep(0.05)
            read, operator = live_keys(settings)
            env = {
                "AVATAR_URL": base,
                "AVATAR_WAV": str(librivox[0].path),
                "AVATAR_LIVE_READ": read,
                "AVATAR_LIVE_OPERATOR": operator,
            }
            result = await run_browser_script("live.mjs", env, timeout_s=180)

    assert result["background"] == "rgba(0, 0, 0, 0)"  # transparent for OBS
    texts = [line["text"] for line in result["lines"]]
    assert any("Welcome to the stream!" in t for t in texts)
    assert any("미나" in t and "안녕하세요" in t for t in texts)
    assert any("Sam" in t and "+50" in t for t in texts)
    assert any("streamer" in line["cls"] for line in result["lines"])
    assert any("reply" in line["cls"] for line in result["lines"])
    assert result["hideStatus"] == 200
    assert result["linesAfterHide"] == len(result["lines"]) - 1
    assert result["played"] and result["played"][0] == services.live.speeches[0].id
    assert services.live.speeches[0].text in result["caption"]
    assert result["face"] == services.live.speeches[0].emotion.value
    assert (ARTIFACTS / "live-overlay.png").exists() and (ARTIFACTS / "live-stage.png").exists()
