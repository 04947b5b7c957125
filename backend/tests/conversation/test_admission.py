"""Admission (docs/deploy.md, "Admission"): live connections and turns in flight hold the live
slots; sessions parked for a reconnect are bounded by their own limit and age and never hold a
live slot; every refusal says when to retry. Over a real uvicorn server and real WebSocket clients."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import websockets
from pydantic import SecretStr

from avatar.application.conversation import SessionManager
from avatar.bench.live import auth
from avatar.bootstrap import Services
from avatar.infrastructure.session_state import InMemorySessionStateStore
from avatar.presentation.app import create_app
from avatar.settings import Settings
from backend.tests.conversation.test_realtime import tone_pcm
from tests.e2e.harness import Client, create_session, running_server, server_key
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container


def _settings(max_sessions: int, max_parked: int = 100) -> Settings:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr("admission-secret")
    settings.conversation.max_sessions = max_sessions
    settings.conversation.max_parked_sessions = max_parked
    settings.conversation.busy_retry_after_s = 7
    settings.security.reconnect_grace_s = 120
    return settings


async def _visit(base: str) -> dict[str, str]:
    """A visitor opens a session, says one thing and leaves (the socket closes)."""
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "text_input", "text": "hello"})
        await client.until_type("turn_completed")
    return created


def _manager(app: object) -> SessionManager:
    services: Services = app.state.services  # type: ignore[attr-defined]
    return services.sessions


async def _until_parked(manager: SessionManager, parked: int, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s * 100)):  # the server sees the close a moment after the client
        if manager.admission_counts().parked == parked:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {parked} parked sessions, got {manager.admission_counts()}")


async def test_the_sixth_visitor_is_admitted_after_five_left() -> None:
    settings = _settings(max_sessions=5)
    app = create_app(settings, fake_container(settings))
    async with running_server(app) as base:
        for _ in range(5):
            await _visit(base)
        manager = _manager(app)
        await _until_parked(manager, 5)
        counts = manager.admission_counts()
        assert counts.live == 0 and counts.parked == 5
        # The five are parked for their reconnect grace (two minutes) but hold no live slot.
        sixth = await create_session(base)
        async with Client.connect(sixth["ws_url"]) as client:
            assert (await client.until_type("session_state"))["resumed"] is False


async def test_refusals_say_when_to_retry_on_rest_and_websocket() -> None:
    settings = _settings(max_sessions=1)
    app = create_app(settings, fake_container(settings))
    async with running_server(app) as base:
        first, second = await create_session(base), await create_session(base)
        async with Client.connect(first["ws_url"]) as client:
            await client.until_type("session_state")
            async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as http:
                busy = await http.post("/api/v1/sessions")
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "BUSY"
            assert busy.headers["Retry-After"] == "7"
            async with Client.connect(second["ws_url"]) as refused:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.until_type("never")
                error = refused.of("error")[0]
                assert error["code"] == "BUSY" and "7 s" in error["message"]
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
            assert closed.value.rcvd.reason == "busy; retry after 7 s"


async def test_a_reply_in_flight_holds_its_live_slot_after_the_socket_closes() -> None:
    settings = _settings(max_sessions=1)
    slow = FakeChatModel(("[neutral] " + " ".join(["word"] * 20),), token_delay_s=0.05)
    app = create_app(settings, fake_container(settings, chat_model=slow))
    async with running_server(app) as base:
        created = await create_session(base)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await client.send({"type": "text_input", "text": "tell me a long story"})
            await client.until_type("turn_started")
        manager = _manager(app)
        for _ in range(200):
            if manager.admission_counts().live_connections == 0:
                break
            await asyncio.sleep(0.01)
        counts = manager.admission_counts()
        assert counts.live_connections == 0 and counts.turns_in_flight == 1 and counts.live == 1
        async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as http:
            assert (await http.post("/api/v1/sessions")).status_code == 503
        await _until_parked(manager, 1, timeout_s=30)  # the reply finished: the slot is free again
        async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as http:
            assert (await http.post("/api/v1/sessions")).status_code == 201


async def test_the_counts_follow_takeovers_reconnects_and_closes() -> None:
    # The manager keeps its counts as connections come and go (no pass over every session on each
    # connect): a second socket taking a session over, a reconnect and an end must all land right.
    settings = _settings(max_sessions=5)
    settings.conversation.max_sessions_per_user = 2
    app = create_app(settings, fake_container(settings))
    async with running_server(app) as base:
        manager = _manager(app)
        one, two = await create_session(base), await create_session(base)
        async with Client.connect(one["ws_url"]) as first:
            await first.until_type("session_state")
            async with Client.connect(one["ws_url"]) as takeover:  # the same session, a new socket
                await takeover.until_type("session_state")
                counts = manager.admission_counts()
                assert (counts.live_connections, counts.live, counts.parked) == (1, 1, 0)
                async with Client.connect(two["ws_url"]) as other:
                    await other.until_type("session_state")
                    assert manager.admission_counts().live_connections == 2
                    async with httpx.AsyncClient(base_url=base, headers=auth(await server_key(base))) as http:
                        third = await http.post("/api/v1/sessions")  # the user's two are connected
                    assert third.status_code == 503 and third.json()["error"]["code"] == "USER_BUSY"
        await _until_parked(manager, 2)
        counts = manager.admission_counts()
        assert (counts.live_connections, counts.live, counts.turns_in_flight) == (0, 0, 0)
        async with Client.connect(two["ws_url"]) as back:  # a reconnect takes its slot again
            assert (await back.until_type("session_state"))["resumed"] is True
            counts = manager.admission_counts()
            assert (counts.live_connections, counts.live, counts.parked) == (1, 1, 1)
        await _until_parked(manager, 2)
        await manager.close(uuid.UUID(two["session_id"]))
        counts = manager.admission_counts()
        assert (counts.live_connections, counts.live, counts.parked) == (0, 0, 1)


async def test_parked_sessions_are_bounded_and_the_evicted_still_resume() -> None:
    settings = _settings(max_sessions=5, max_parked=2)
    store = InMemorySessionStateStore()
    app = create_app(settings, fake_container(settings, session_state=store))
    async with running_server(app) as base:
        visitors = [await _visit(base) for _ in range(3)]
        manager = _manager(app)
        await _until_parked(manager, 2)
        oldest = visitors[0]
        assert not manager.is_live(uuid.UUID(oldest["session_id"]))
        # Evicted from memory only: its state is kept, so its reconnect resumes the conversation.
        async with Client.connect(oldest["ws_url"]) as client:
            state = await client.until_type("session_state")
            assert state["resumed"] is True and state["turns"] == 1


def test_parked_limit_and_age_are_validated() -> None:
    with pytest.raises(ValueError, match="max_parked_sessions"):
        Settings(environment="test", conversation={"max_parked_sessions": -1})
    with pytest.raises(ValueError, match="max_sessions"):
        Settings(environment="test", conversation={"max_sessions": -1})  # 0: sized by the model


async def test_a_parked_session_gives_back_its_recognizer_stream_and_gets_one_on_return() -> None:
    settings = _settings(max_sessions=5)
    recognizer = FakeRecognizer(utterance_ms=300)
    app = create_app(settings, fake_container(settings, recognizer=recognizer))
    async with running_server(app) as base:
        created = await _visit(base)
        await _until_parked(_manager(app), 1)
        for _ in range(200):
            if recognizer.streams[0].closed:
                break
            await asyncio.sleep(0.01)
        assert len(recognizer.streams) == 1 and recognizer.streams[0].closed
        async with Client.connect(created["ws_url"]) as client:
            assert (await client.until_type("session_state"))["resumed"] is True
            assert len(recognizer.streams) == 2 and not recognizer.streams[1].closed
            await client.send_audio(tone_pcm(400))  # heard by the new stream
            assert (await client.until_type("transcription_final"))["text"]
