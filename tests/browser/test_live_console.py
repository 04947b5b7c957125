"""The director console (the web app's "Live" tab) in Debian's Chromium (frontend/e2e/console.mjs)
against the real app over the instant engines, fed by the stand-in Twitch chat, signed in as the
admin through the one-time link: the chat with its verdicts, answering a held-back message, the
reply on the overlay state, ratings from the console and the history (docs/live.md)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from avatar.bootstrap import Services, build_instant_container
from avatar.domain.feedback import Rating
from avatar.infrastructure.secrets import live_keys
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import ARTIFACTS, CHROMIUM, run_browser_script
from tests.e2e.harness import running_server
from tests.support.audio import SpeechClip
from tests.support.auth import owner_sign_in
from tests.support.live_standins import TwitchStandIn

pytestmark = pytest.mark.browser


async def test_director_console(tmp_path: Path, built_app: Path, librivox: list[SpeechClip]) -> None:
    if shutil.which("node") is None or not CHROMIUM.exists():
        pytest.fail("node and chromium are needed: run `make setup-test`")
    async with TwitchStandIn() as twitch:
        settings = Settings(_env_file=None, environment="test")
        settings.data_dir = tmp_path
        settings.server.frontend_dist = built_app
        settings.live.twitch.channel = "host"
        settings.live.twitch.url = twitch.ws_url
        settings.live.pause_s = 0.0
        container = build_instant_container(settings)
        app = create_app(settings, container)
        async with running_server(app) as base:
            services: Services = app.state.services
            live = services.live
            assert live is not None
            await twitch.wait_joins(1)
            link, _key = await owner_sign_in(container, base)
            read, _operator = live_keys(settings)

            async def chat_once_paused() -> None:
                # The console pauses the AI first, so nothing is answered before the director picks.
                for _ in range(6000):  # at most 5 minutes, the browser script's own limit
                    if live.paused:
                        break
                    await asyncio.sleep(0.05)
                await twitch.say(
                    "host", "mina", "안녕하세요! 오늘 기분 어때요?", user_id="2", display_name="미나"
                )
                await twitch.say("host", "spammer", "free followers at www.spam.example", user_id="3")

            env = {
                "AVATAR_URL": base,
                "AVATAR_WAV": str(librivox[0].path),
                "AVATAR_SIGN_IN_URL": link,
                "AVATAR_LIVE_READ": read,
            }
            result, _ = await asyncio.gather(
                run_browser_script("console.mjs", env, timeout_s=300), chat_once_paused()
            )
            speeches = list(live.speeches)
            async with container.uow() as tx:
                assert speeches[0].turn_id is not None
                rating = await tx.feedback.get(speeches[0].turn_id)

    assert result["minaBefore"] == {"status": "dropped", "reason": "paused"}
    assert result["spamVerdict"] == "link"
    first = speeches[0]
    assert first.to_user == "미나" and result["replyTurnId"] == str(first.turn_id)
    assert first.text in result["replyText"] and first.text in result["overlayReplies"]
    assert [s.text for s in speeches[1:]] == ["Thanks for watching!"] and speeches[1].turn_id is None
    assert result["disconnectedState"] == "stopped"
    # rated up in the console, then down with a comment in the history: the last rating counts
    assert rating is not None and rating.rating is Rating.DOWN and rating.comment == "too formal"
    (line,) = result["exportLines"]
    assert result["exportStatus"] == 200 and line["messages"][-1]["content"] == first.text
    assert result["console"] == []
    for name in ("live-console.png", "live-history-rating.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
