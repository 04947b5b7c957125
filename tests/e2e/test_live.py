"""Live mode end to end on the embedded stack (real SmolLM2 via llama.cpp, Piper, PostgreSQL, a
filesystem object store) behind a real uvicorn server, fed by the stand-in Twitch IRC server over
WebSocket and the stand-in Chzzk Open API with its Socket.IO session server: chat arrives (spam, a
flood, the streamer on both platforms, a cheer, a donation, a burst), the overlay shows the right
lines, the avatar answers a chosen message aloud (WAV on the stage), the reply reaches the overlay,
and a dropped chat connection reconnects (docs/live.md)."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from avatar.bootstrap import Container, build_container
from avatar.infrastructure.secrets import live_keys
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import running_server
from tests.e2e.test_conversation import e2e_settings
from tests.support.live_standins import ChzzkStandIn, TwitchStandIn, running_chzzk

pytestmark = pytest.mark.slow

CHANNEL = "streamer"


def live_settings(tmp: Path, database_url: str, llm_url: str, twitch_url: str, chzzk_url: str) -> Settings:
    settings = e2e_settings(tmp, database_url, llm_url)
    settings.llm.max_tokens = 24
    settings.llm.embedded_first_token_timeout_s = 60.0  # the CI machine's cores are shared
    settings.live.twitch.channel = CHANNEL
    settings.live.twitch.url = twitch_url
    settings.live.chzzk.channel_id = "chan1"
    settings.live.chzzk.client_id = "cid"
    settings.live.chzzk.client_secret = SecretStr("csecret")
    settings.live.chzzk.api_url = chzzk_url
    settings.live.pause_s = 0.1
    settings.live.language = "en"
    return settings


Stack = tuple[str, Settings, TwitchStandIn, ChzzkStandIn, Container]


@pytest_asyncio.fixture(scope="module")
async def live_stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[Stack]:
    chzzk = ChzzkStandIn()
    async with TwitchStandIn() as twitch, running_chzzk(chzzk) as chzzk_url:
        settings = live_settings(
            tmp_path_factory.mktemp("live"), module_database_url, llama_server, twitch.ws_url, chzzk_url
        )
        container = await build_container(settings)
        try:
            async with running_server(create_app(settings, container)) as base:
                yield base, settings, twitch, chzzk, container
        finally:
            await container.aclose()


async def _eventually(http: httpx.AsyncClient, check: Any, *, within_s: float = 60.0, **get: Any) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        body = (await http.get(**get)).json()
        if check(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {within_s} s: {body}")
        await asyncio.sleep(0.1)


async def test_live_chat_overlay_stage_and_reconnect(live_stack: Stack) -> None:
    base, settings, twitch, chzzk, _container = live_stack
    read, operator = live_keys(settings)
    op = {"Authorization": f"Bearer {operator}"}
    await twitch.wait_joins(1, within_s=30)
    await chzzk.wait_subscriptions(2, within_s=30)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        # Keys: the OBS URL key reads, only the operator changes; no key, wrong key refused.
        assert (await http.get("/api/v1/overlay/state")).status_code == 401
        assert (await http.get("/api/v1/overlay/state", params={"key": "nope"})).status_code == 403
        assert (await http.post("/api/v1/overlay/clear", params={"key": read})).status_code == 401
        refused = await http.post("/api/v1/overlay/clear", headers={"Authorization": f"Bearer {read}"})
        assert refused.status_code == 403
        page = await http.get("/overlay", params={"key": read})
        assert page.status_code == 200 and "EventSource" in page.text
        assert (await http.get("/stage", params={"key": read})).status_code == 200
        bad = await http.post("/api/v1/overlay/streamer-chat", json={"show": "maybe"}, headers=op)
        assert bad.status_code == 422

        await twitch.say(
            CHANNEL, "alice", "Hello! What is your favourite colour?", user_id="1", display_name="Alice"
        )
        await twitch.say(CHANNEL, "spammer", "cheap followers at https://spam.example", user_id="2")
        for i in range(5):
            await twitch.say(CHANNEL, "bob", f"bob says number {i}", user_id="3", display_name="Bob")
        await twitch.say(
            CHANNEL, CHANNEL, "Welcome everyone to the stream", user_id="9", badges="broadcaster/1"
        )
        await twitch.say(
            CHANNEL, "carol", "cheer100 Please sing a song!", user_id="4", display_name="Carol", bits=100
        )
        # A burst at 10+ messages/s: every line still reaches the overlay.
        for i in range(20):
            await twitch.say(CHANNEL, f"viewer{i}", f"burst line {i} hello", user_id=f"v{i}")
            await asyncio.sleep(0.05)
        await chzzk.chat("v77", "치즈팬", "아바타 안녕! 오늘 뭐 해?")
        await chzzk.chat("chan1", "방장", "방장입니다", role="streamer")
        await chzzk.donation("v78", "후원자", "노래 불러주세요", 5000)
        sent = 1 + 1 + 5 + 1 + 1 + 20 + 3

        state = await _eventually(
            http,
            lambda b: len([m for m in b["messages"] if m["kind"] == "chat"]) >= sent,
            url="/api/v1/overlay/state",
            params={"key": read},
        )
        chats = [m for m in state["messages"] if m["kind"] == "chat"]
        assert all(m["platform"] in ("twitch", "chzzk") and m["at"] for m in chats)
        streamer = [(m["platform"], m["text"]) for m in chats if m["is_streamer"]]
        assert streamer == [("twitch", "Welcome everyone to the stream"), ("chzzk", "방장입니다")]
        assert next(m for m in chats if m["user"] == "Carol")["amount"] == 100
        assert next(m for m in chats if m["user"] == "후원자")["amount"] == 5000
        assert next(m for m in chats if m["user"] == "치즈팬")["platform"] == "chzzk"

        hidden = (await http.post("/api/v1/overlay/streamer-chat", json={"show": False}, headers=op)).json()
        assert not any(m["is_streamer"] for m in hidden["messages"])

        # The avatar answers a message that passed the filters, aloud, and the reply reaches the overlay.
        state = await _eventually(
            http,
            lambda b: any(m["kind"] == "reply" for m in b["messages"]),
            within_s=240,
            url="/api/v1/overlay/state",
            params={"key": read},
        )
        reply = next(m for m in state["messages"] if m["kind"] == "reply")
        assert reply["text"] and reply["emotion"] and reply["user"] == settings.live.avatar_name
        async with http.stream("GET", "/api/v1/live/stage/events", params={"key": read, "since": "0"}) as sse:
            event: dict[str, Any] = {}
            async for line in sse.aiter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    break
        assert event["text"] == reply["text"]
        answerable = {"Alice", "Carol", "Bob", "치즈팬", "후원자"} | {f"viewer{i}" for i in range(20)}
        assert event["to_user"] in answerable
        audio = await http.get(event["audio_url"])
        assert audio.status_code == 200
        with wave.open(io.BytesIO(audio.content)) as wav:
            assert wav.getnframes() / wav.getframerate() > 0.3

        metrics = (await http.get("/api/v1/metrics")).text
        for reason in ("link", "flood", "streamer"):
            assert f'live_chat_dropped_total{{reason="{reason}"}}' in metrics
        assert 'live_chat_received_total{platform="twitch"}' in metrics

        # A dropped chat connection comes back by itself.
        await twitch.drop_all()
        await twitch.wait_joins(2, within_s=30)
        await twitch.say(CHANNEL, "dave", "I am back after the drop", user_id="5", display_name="Dave")
        await _eventually(
            http,
            lambda b: any(m["text"] == "I am back after the drop" for m in b["messages"]),
            url="/api/v1/overlay/state",
            params={"key": read},
        )
        status = (await http.get("/api/v1/live/status", headers=op)).json()
        assert status["platforms"] == [
            {"platform": "twitch", "state": "connected", "connects": 2, "running": True},
            {"platform": "chzzk", "state": "connected", "connects": 1, "running": True},
        ]
        cleared = (await http.post("/api/v1/overlay/clear", headers=op)).json()
        assert cleared["messages"] == []
