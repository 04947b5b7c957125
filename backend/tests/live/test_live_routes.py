"""The live routes and service over the instant engine set (no models) behind a real uvicorn server,
fed by the stand-in Twitch IRC server: keys, live pushes, pause, ban and start-up errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from avatar.bootstrap import Services, build_instant_container, build_services
from avatar.infrastructure.secrets import LIVE_KEYS_FILE, SecretsError, live_keys, secrets_dir
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import running_server
from tests.support.live_standins import TwitchStandIn


def settings_for(tmp: Path, twitch_url: str | None = None) -> Settings:
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp
    if twitch_url:
        settings.live.twitch.channel = "host"
        settings.live.twitch.url = twitch_url
        settings.live.pause_s = 0.0
    return settings


async def test_live_routes_answer_404_when_no_platform_is_set(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    async with running_server(create_app(settings, build_instant_container(settings))) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            response = await http.get("/api/v1/overlay/state", params={"key": "x"})
            assert response.status_code == 404
            assert "AVATAR_LIVE__TWITCH__CHANNEL" in response.json()["error"]["message"]
            assert (await http.get("/overlay")).status_code == 404


async def _next_state(lines: Any) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            state: dict[str, Any] = json.loads(line[6:])
            return state
    raise AssertionError("the event stream ended")


async def test_overlay_push_pause_ban_and_stage(tmp_path: Path) -> None:
    async with TwitchStandIn() as twitch:
        settings = settings_for(tmp_path, twitch.tcp_url)
        app = create_app(settings, build_instant_container(settings))
        async with running_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
            services: Services = app.state.services
            live = services.live
            assert live is not None
            read, operator = live_keys(settings)
            op = {"Authorization": f"Bearer {operator}"}
            await twitch.wait_joins(1)

            # The overlay page gets every change pushed.
            async with http.stream("GET", "/api/v1/overlay/events", params={"key": read}) as sse:
                lines = sse.aiter_lines()
                assert (await _next_state(lines))["messages"] == []
                await twitch.say("host", "amy", "hello there avatar", user_id="11", display_name="Amy")
                pushed = await _next_state(lines)
                assert pushed["messages"][0]["user"] == "Amy"

            # Paused: still on the overlay, never answered.
            paused = await http.post("/api/v1/live/pause", json={"paused": True}, headers=op)
            assert paused.json()["paused"] is True
            await twitch.say("host", "ben", "are you there?", user_id="12", display_name="Ben")
            # Banned: same.
            ban = await http.post(
                "/api/v1/live/ban", json={"platform": "twitch", "user_id": "13"}, headers=op
            )
            assert ban.status_code == 204
            assert (
                await http.post("/api/v1/live/pause", json={"paused": False}, headers=op)
            ).status_code == 200
            await twitch.say("host", "cat", "please answer me", user_id="13", display_name="Cat")
            await twitch.say("host", "dan", "a question for you", user_id="14", display_name="Dan")
            for _ in range(200):
                if len(live.speeches) >= 2:
                    break
                await asyncio.sleep(0.05)
            answered = [s.to_user for s in live.speeches]
            assert answered == ["Amy", "Dan"]
            state = (await http.get("/api/v1/overlay/state", params={"key": read})).json()
            assert [m["user"] for m in state["messages"] if m["kind"] == "chat"] == [
                "Amy",
                "Ben",
                "Cat",
                "Dan",
            ]
            replies = [m for m in state["messages"] if m["kind"] == "reply"]
            assert len(replies) == 2 and all(m["emotion"] for m in replies)
            audio = await http.get(f"/api/v1/live/speech/{live.speeches[-1].id}.wav", params={"key": read})
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            # A reconnecting stage page gets what it missed after the last event it saw.
            first, second = live.speeches[0], live.speeches[1]
            headers = {"Last-Event-ID": str(first.id)}
            async with http.stream(
                "GET", "/api/v1/live/stage/events", params={"key": read}, headers=headers
            ) as sse:
                event_lines = sse.aiter_lines()
                assert (await _next_state(event_lines))["id"] == second.id
            missing = await http.get("/api/v1/live/speech/999.wav", params={"key": read})
            assert missing.status_code == 404
            assert (
                await http.post("/api/v1/live/ban", json={"platform": "twitch"}, headers=op)
            ).status_code == 422
            odd = await http.post("/api/v1/live/ban", json={"platform": "irc", "user_id": "1"}, headers=op)
            assert odd.status_code == 422
            # The stage's turns are stored in one live session.
            assert live.session_id is not None
            async with app.state.container.uow() as tx:
                turns = await tx.turns.list_for_session(live.session_id)
            assert [t.turn_number for t in turns] == [1, 2]
            assert "Amy" in turns[0].user_input and "address them by name" in turns[0].user_input


def test_a_damaged_live_key_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    read, operator = live_keys(settings)
    assert read != operator and len(operator) >= 32
    assert live_keys(settings) == (read, operator)  # reused
    (secrets_dir(settings) / LIVE_KEYS_FILE).write_text('{"read": "same", "operator": "same"}')
    with pytest.raises(SecretsError, match="delete it"):
        live_keys(settings)


def test_a_missing_profanity_list_fails_start_up(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "irc://127.0.0.1:6667")
    settings.live.profanity_file = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=r"nope\.txt"):
        build_services(build_instant_container(settings))


def test_live_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ws://, wss:// or irc://"):
        Settings(_env_file=None, live={"twitch": {"channel": "x", "url": "http://x"}})
    with pytest.raises(ValueError, match="CLIENT_ID"):
        Settings(_env_file=None, live={"chzzk": {"channel_id": "c"}})


def test_each_configured_platform_gets_its_client() -> None:
    from avatar.infrastructure.live.chzzk import ChzzkChat
    from avatar.infrastructure.live.sources import build_chat_sources
    from avatar.infrastructure.live.twitch import TwitchChat

    settings = Settings(
        _env_file=None,
        live={
            "twitch": {"channel": "#SomeOne"},
            "chzzk": {"channel_id": "c1", "client_id": "id", "client_secret": "s", "refresh_token": "r"},
        },
    )
    twitch, chzzk = build_chat_sources(settings)
    assert isinstance(twitch, TwitchChat) and twitch.channel == "someone"
    assert twitch.url == "wss://irc-ws.chat.twitch.tv:443"
    assert isinstance(chzzk, ChzzkChat) and chzzk.api_url == "https://openapi.chzzk.naver.com"
    assert build_chat_sources(Settings(_env_file=None)) == []
    assert not Settings(_env_file=None).live.enabled()
