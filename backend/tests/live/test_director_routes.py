"""The director console's routes (docs/live.md, "Director console") over the instant engine set
behind a real uvicorn server, fed by the stand-in Twitch IRC server: who may call them (operator
key, admin account by API key or web sign-in with CSRF; read key, plain users and nobody refused),
the message list with verdicts, answer/skip, a typed line, connect/disconnect, the avatar state,
and the live replies moving the VTube Studio stand-in's mouth through the avatar hub
(docs/avatar-control.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from avatar.application.avatar.events import ExpressionEvent, MouthEvent, StateEvent
from avatar.application.live.service import SayLine
from avatar.bootstrap import Services, build_instant_container, build_services
from avatar.domain.live import ChatMessage, Platform
from avatar.domain.models import Emotion
from avatar.infrastructure.secrets import live_keys
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import running_server
from tests.support.auth import bearer, make_user
from tests.support.live_standins import TwitchStandIn
from tests.support.vtube_studio import VTubeStudioStandIn


def settings_for(tmp: Path, twitch_url: str, pause_s: float) -> Settings:
    settings = Settings(_env_file=None, environment="test")
    settings.data_dir = tmp
    settings.live.twitch.channel = "host"
    settings.live.twitch.url = twitch_url
    settings.live.pause_s = pause_s
    return settings


async def wait_until(check: Callable[[], Any], within_s: float = 60.0) -> None:
    """Poll ``check`` (sync or async) until it is true; a generous deadline, never a timing claim."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < deadline, "what the test waited for never happened"
        await asyncio.sleep(0.05)


def by_user(queue: dict[str, Any], user: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in queue["messages"] if m["user"] == user]
    assert found, f"{user} is not listed: {queue}"
    return found[-1]


async def test_director_routes_need_the_operator_or_an_admin(tmp_path: Path) -> None:
    async with TwitchStandIn() as twitch:
        settings = settings_for(tmp_path, twitch.tcp_url, 0.0)
        container = build_instant_container(settings)
        app = create_app(settings, container)
        async with running_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
            read, operator = live_keys(settings)
            _admin, admin_key = await make_user(container, "boss", admin=True)
            _user, user_key = await make_user(container, "viewer")
            routes = [
                ("GET", "/api/v1/live/queue", None),
                ("GET", "/api/v1/live/replies", None),
                ("GET", "/api/v1/live/avatar", None),
                ("POST", "/api/v1/live/queue/1/answer", None),
                ("POST", "/api/v1/live/queue/1/skip", None),
                ("POST", "/api/v1/live/say", {"text": "hi"}),
                ("POST", "/api/v1/live/platforms/twitch/connect", None),
                ("POST", "/api/v1/live/platforms/twitch/disconnect", None),
            ]
            for method, path, body in routes:
                nobody = await http.request(method, path, json=body)
                assert nobody.status_code == 401, (path, nobody.text)
                reader = await http.request(method, path, json=body, headers=bearer(read))
                assert reader.status_code == 403, (path, reader.text)
                plain = await http.request(method, path, json=body, headers=bearer(user_key))
                assert plain.status_code == 403, (path, plain.text)
                wrong = await http.request(method, path, json=body, headers=bearer("avk_" + "x" * 40))
                assert wrong.status_code == 401, (path, wrong.text)
            for key in (operator, admin_key):
                ok = await http.get("/api/v1/live/queue", headers=bearer(key))
                assert ok.status_code == 200 and ok.json()["paused"] is False

            # The web app's sign-in (an admin): reads with the cookie; changes need the CSRF token.
            accounts = app.state.services.accounts
            token = await accounts.issue_link(_admin)
            web = httpx.AsyncClient(base_url=base, timeout=20)
            async with web:
                signed = await web.get("/api/v1/auth/link", params={"token": token})
                assert signed.status_code in (200, 303, 307)
                assert (await web.get("/api/v1/live/queue")).status_code == 200
                no_csrf = await web.post("/api/v1/live/say", json={"text": "hello"})
                assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "CSRF_FAILED"
                csrf = {"X-CSRF-Token": web.cookies["avatar_csrf"]}
                said = await web.post("/api/v1/live/say", json={"text": "hello"}, headers=csrf)
                assert said.status_code == 202
            # A plain user's web sign-in is refused too.
            token = await accounts.issue_link(_user)
            async with httpx.AsyncClient(base_url=base, timeout=20) as web:
                await web.get("/api/v1/auth/link", params={"token": token})
                assert (await web.get("/api/v1/live/queue")).status_code == 403


async def test_answer_skip_say_connect_and_the_avatar_follows(tmp_path: Path) -> None:
    vts = VTubeStudioStandIn()
    await vts.start()
    try:
        async with TwitchStandIn() as twitch:
            # A long pause after each reply keeps what the director picks waiting, so skip is seen.
            settings = settings_for(tmp_path, twitch.tcp_url, 600.0)
            settings.vts.enabled = True
            settings.vts.url = vts.url
            settings.vts.token_file = tmp_path / "vts-token.txt"
            container = build_instant_container(settings)
            app = create_app(settings, container)
            async with running_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
                services: Services = app.state.services
                live = services.live
                assert live is not None
                _read, operator = live_keys(settings)
                op = bearer(operator)
                await twitch.wait_joins(1)
                await wait_until(lambda: len(vts.injections) > 5)
                closed_before = [v for _t, v in vts.values("AvatarMouthOpen")]
                assert closed_before and max(closed_before) == 0.0

                async def queue() -> dict[str, Any]:
                    got: dict[str, Any] = (await http.get("/api/v1/live/queue", headers=op)).json()
                    return got

                assert (await http.post("/api/v1/live/pause", json={"paused": True}, headers=op)).json()[
                    "paused"
                ]
                await twitch.say("host", "amy", "hello there avatar", user_id="11", display_name="Amy")
                await twitch.say("host", "spam", "free followers www.spam.example", user_id="12")
                await wait_until(lambda: len(live.inbox.entries()) >= 2)
                listed = await queue()
                amy = by_user(listed, "Amy")
                assert (amy["verdict"], amy["status"], amy["reason"]) == ("paused", "dropped", "paused")
                spam = by_user(listed, "spam")
                assert spam["verdict"] == "link" and spam["platform"] == "twitch"

                # Answer: the director's pick is answered although the AI is paused.
                picked = await http.post(f"/api/v1/live/queue/{amy['id']}/answer", headers=op)
                assert picked.status_code == 202 and picked.json()["status"] == "picked"
                await wait_until(lambda: len(live.speeches) == 1)
                speech = live.speeches[0]
                assert speech.to_user == "Amy" and speech.turn_id is not None

                # The avatar hub followed the reply: the VTube Studio mouth opened.
                await wait_until(lambda: any(v > 0.2 for _t, v in vts.values("AvatarMouthOpen")))
                avatar = (await http.get("/api/v1/live/avatar", headers=op)).json()
                assert avatar["enabled"] is True and avatar["follows_live"] is True
                assert avatar["state"] == "running" and avatar["connected"] is True

                listed = await queue()
                answered = by_user(listed, "Amy")
                assert answered["status"] == "answered" and answered["turn_id"] == str(speech.turn_id)
                again = await http.post(f"/api/v1/live/queue/{amy['id']}/answer", headers=op)
                assert again.status_code == 409
                assert (
                    await http.post(f"/api/v1/live/queue/{amy['id']}/skip", headers=op)
                ).status_code == 409

                # The stage now pauses (600 s): a pick waits, and skip takes it back.
                await twitch.say("host", "ben", "how are you today", user_id="13", display_name="Ben")
                await wait_until(lambda: len(live.inbox.entries()) >= 3)
                ben = by_user(await queue(), "Ben")
                assert (await http.post(f"/api/v1/live/queue/{ben['id']}/answer", headers=op)).json()[
                    "status"
                ] == "picked"
                skipped = await http.post(f"/api/v1/live/queue/{ben['id']}/skip", headers=op)
                assert skipped.status_code == 200
                assert (skipped.json()["status"], skipped.json()["reason"]) == ("dropped", "skipped")
                assert by_user(await queue(), "Ben")["reason"] == "skipped"

                # Bad ids and bodies.
                assert (await http.post("/api/v1/live/queue/99999/answer", headers=op)).status_code == 404
                assert (await http.post("/api/v1/live/queue/abc/answer", headers=op)).status_code == 422
                assert (await http.post("/api/v1/live/queue/-1/skip", headers=op)).status_code == 404
                for body in ({"text": "   "}, {"text": "x" * 501}, {"text": "hi", "emotion": "bored"}, {}):
                    bad = await http.post("/api/v1/live/say", json=body, headers=op)
                    assert bad.status_code == 422, body
                said = await http.post(
                    "/api/v1/live/say", json={"text": "Thanks!", "emotion": "happy"}, headers=op
                )
                assert said.status_code == 202

                # The replies to rate: the live turn takes the operator key.
                replies = (await http.get("/api/v1/live/replies", headers=op)).json()["replies"]
                assert [r["turn_id"] for r in replies] == [str(speech.turn_id)]
                rated = await http.post(
                    f"/api/v1/turns/{speech.turn_id}/feedback", json={"rating": "up"}, headers=op
                )
                assert rated.status_code == 200

                # Disconnect and connect a platform.
                off = await http.post("/api/v1/live/platforms/twitch/disconnect", headers=op)
                assert off.status_code == 200
                (twitch_state,) = off.json()["platforms"]
                assert twitch_state["running"] is False and twitch_state["state"] == "stopped"
                on = await http.post("/api/v1/live/platforms/twitch/connect", headers=op)
                assert on.json()["platforms"][0]["running"] is True
                await twitch.wait_joins(2)
                await twitch.say("host", "cat", "back again here", user_id="14", display_name="Cat")
                await wait_until(lambda: any(e.message.display_name == "Cat" for e in live.inbox.entries()))
                missing = await http.post("/api/v1/live/platforms/chzzk/connect", headers=op)
                assert missing.status_code == 404
                odd = await http.post("/api/v1/live/platforms/irc/connect", headers=op)
                assert odd.status_code == 422
    finally:
        await vts.stop()


async def test_a_typed_line_is_spoken_and_shown(tmp_path: Path) -> None:
    async with TwitchStandIn() as twitch:
        settings = settings_for(tmp_path, twitch.tcp_url, 0.0)
        app = create_app(settings, build_instant_container(settings))
        async with running_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as http:
            services: Services = app.state.services
            live = services.live
            assert live is not None
            read, operator = live_keys(settings)
            said = await http.post(
                "/api/v1/live/say",
                json={"text": " Thanks for the follow! ", "emotion": "happy"},
                headers=bearer(operator),
            )
            assert said.status_code == 202
            await wait_until(lambda: len(live.speeches) == 1)
            speech = live.speeches[0]
            assert (speech.text, speech.emotion.value, speech.turn_id) == (
                "Thanks for the follow!",
                "happy",
                None,
            )
            assert speech.wav[:4] == b"RIFF" and speech.duration_s > 0
            overlay = (await http.get("/api/v1/overlay/state", params={"key": read})).json()
            (line,) = overlay["messages"]
            assert (line["kind"], line["text"], line["emotion"]) == (
                "reply",
                "Thanks for the follow!",
                "happy",
            )


async def test_the_stage_reports_each_reply_to_the_avatar_hub(tmp_path: Path) -> None:
    """Unit level: a live reply and a typed line reach the hub's stage subscribers as a
    conversation's do: thinking, the expression, speaking, mouth frames of the reply's audio."""
    settings = settings_for(tmp_path, "irc://127.0.0.1:9", 0.0)  # the stage is driven by hand
    services = build_services(build_instant_container(settings))
    live = services.live
    assert live is not None
    stage = services.avatar_hub.subscribe_stage()
    message = ChatMessage(
        platform=Platform.TWITCH,
        channel="host",
        user_id="7",
        display_name="Amy",
        text="hello there",
        at=datetime.now(UTC),
    )
    speech = await live.answer(message)
    line = await live.speak_line(SayLine("Thanks!", Emotion.SAD))
    assert speech.turn_id is not None and line.turn_id is None
    assert services.avatar_hub.stage_id == live.session_id

    events: list[Any] = []

    def seen_all() -> bool:
        sad = any(isinstance(e, ExpressionEvent) and e.emotion == "sad" for e in events)
        return sad and any(isinstance(e, MouthEvent) for e in events)

    async def collect() -> None:
        while not seen_all():
            event = await stage.get()
            assert event is not None
            events.append(event)

    await asyncio.wait_for(collect(), 60)
    states = [e.state for e in events if isinstance(e, StateEvent)]
    assert states[:2] == ["thinking", "speaking"]
    expressions = [e for e in events if isinstance(e, ExpressionEvent)]
    assert [e.emotion for e in expressions] == [speech.emotion.value, "sad"]
    assert expressions[0].turn_id == str(speech.turn_id)
    mouths = [e for e in events if isinstance(e, MouthEvent)]
    assert mouths[0].turn_id == str(speech.turn_id)
    assert max(f.open for f in mouths[0].frames) > 0.1  # the reply's sound opens the mouth
    await services.aclose()
