"""The web app's controls in Debian's Chromium against the real orchestrator app with scripted
engines (tests/fakes.py): push-to-talk, the stop button, a server error, reconnect with session
resume and a typed turn (frontend/e2e/controls.mjs). Quick; the real-model run is test_web_app.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.browser.support import run_browser_script
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.audio import SpeechClip
from tests.support.auth import bearer, owner_sign_in

pytestmark = pytest.mark.browser

REPLY = (
    "[happy] Hello! It is lovely to hear from you today. Let me tell you a rather long story about "
    "the weather, the sea and the little boats that sail on it every single morning."
)


@pytest_asyncio.fixture(scope="module")
async def fake_server(built_app: Path) -> AsyncIterator[tuple[str, str, str]]:
    settings = Settings(environment="test")
    settings.server.frontend_dist = built_app
    # utterances end only on end_of_utterance (push-to-talk), never by length
    container = fake_container(
        settings,
        recognizer=FakeRecognizer(("hello there",), utterance_ms=600_000),
        chat_model=FakeChatModel((REPLY, "[neutral] I am fine, thank you.")),
    )
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as base:
            link, key = await owner_sign_in(container, base)
            yield base, link, key
    finally:
        await container.queue.stop()


async def test_controls_in_the_browser(fake_server: tuple[str, str, str], librivox: list[SpeechClip]) -> None:
    base, link, key = fake_server
    env = {
        "AVATAR_URL": base,
        "AVATAR_SIGN_IN_URL": link,
        "AVATAR_WAV": str(librivox[0].path),
    }
    result = await run_browser_script("controls.mjs", env, timeout_s=300)

    assert "hello there" in result["pttTranscript"]
    # the web app asked for binary audio frames: microphone and reply audio went binary
    assert result["binaryFramesSent"] > 0 and result["binaryFramesReceived"] > 0
    assert result["playedAfterStop"] == 0  # nothing plays after the stop button
    assert result["stopDisabled"]
    assert "not understand" in result["errorText"]
    assert result["sessionAfterReconnect"] == result["sessionId"]
    assert len(result["turns"]) == 2
    assert "How are you?" in result["turns"][1] and "I am fine, thank you." in result["turns"][1]
    assert result["ratedTurnId"]
    assert result["console"] == []

    # the server recorded the interruption and only the part that was heard
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        turns = (await http.get(f"/api/v1/sessions/{result['sessionId']}/turns")).json()["turns"]
    first = turns[0]
    assert first["interrupted"] is True
    heard = first["ai_response"]
    assert heard and len(heard) < len(REPLY.removeprefix("[happy] "))
    assert REPLY.removeprefix("[happy] ").startswith(heard.rstrip("."))

    # the thumbs up was stored: the reply is in the admin's fine-tuning download
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        export = await http.get("/api/v1/admin/export/finetune", params={"rating": "up"})
    assert export.status_code == 200 and export.headers["x-export-lines"] == "1"
    assert json.loads(export.text)["messages"][-1]["content"] == "I am fine, thank you."
