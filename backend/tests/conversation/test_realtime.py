"""REST + WebSocket over a real uvicorn server and a real ``websockets`` client, with fake engines:
the protocol, admission control, reconnect and every kind of bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import websockets
from pydantic import SecretStr

from avatar.application.conversation import issue_token
from avatar.infrastructure.metrics import PrometheusConversationMetrics
from avatar.infrastructure.session_state import InMemorySessionStateStore
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.auth import bearer, make_user

SECRET = "test-secret"


def tone_pcm(ms: int, sr: int = 16000) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


def _settings(max_sessions: int = 50) -> Settings:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr(SECRET)
    settings.conversation.max_sessions = max_sessions
    settings.conversation.max_frame_bytes = 64 * 1024
    settings.security.reconnect_grace_s = 30
    return settings


@pytest_asyncio.fixture(scope="module")
async def served() -> AsyncIterator[tuple[str, str]]:
    settings = _settings()
    container = fake_container(
        settings,
        recognizer=FakeRecognizer(utterance_ms=500),
        chat_model=FakeChatModel(("[happy] Hello! Nice to meet you.",)),
    )
    await container.queue.start()
    _user, api_key = await make_user(container)
    async with running_server(create_app(settings, container)) as url:
        yield url, api_key


@pytest.fixture(scope="module")
def base(served: tuple[str, str]) -> str:
    return served[0]


@pytest.fixture(scope="module")
def key(served: tuple[str, str]) -> str:
    return served[1]


def ws(base: str, created: dict[str, str]) -> str:
    return str(created["ws_url"])


async def test_rest_and_a_typed_turn(base: str, key: str) -> None:
    created = await create_session(base, key)
    assert created["ws_url"].startswith("ws://127.0.0.1:") and created["token"] in created["ws_url"]
    async with Client.connect(created["ws_url"]) as client:
        state = await client.until_type("session_state")
        assert state["resumed"] is False and state["protocol_version"] == 1
        await client.send({"type": "text_input", "text": "hi"})
        done = await client.until_type("turn_completed")
        assert done["text"] == "Hello! Nice to meet you." and client.of("audio_chunk")
        audio = client.of("audio_chunk")[0]
        assert len(base64.b64decode(audio["data"])) > 0 and audio["mode"] == "fast"
        await client.send({"type": "ping", "t": 5})
        assert (await client.until_type("pong"))["t"] == 5
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        sid = created["session_id"]
        for _ in range(100):  # writes are asynchronous: wait until the reply is recorded
            turns = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"]
            if turns and turns[0]["ai_response"] and turns[0]["audio"]:
                break
            await asyncio.sleep(0.05)
        (turn,) = turns
        assert turn["user_input"] == "hi" and turn["transcription"]["text"] == "hi"
        assert turn["audio"][0]["mode"] == "fast" and "synthesized/fast/" in turn["audio"][0]["url"]
        assert (await http.get(f"/api/v1/sessions/{sid}")).json()["session_id"] == sid
        listed = (await http.get("/api/v1/sessions")).json()["sessions"]
        assert sid in [s["session_id"] for s in listed]
        missing = await http.get(f"/api/v1/sessions/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "SESSION_NOT_FOUND"
        assert (await http.get("/api/v1/sessions/not-a-uuid")).status_code == 422


async def test_bad_messages_get_error_events_and_the_session_goes_on(base: str, key: str) -> None:
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        cases = [
            ("{not json", "INVALID_JSON"),
            (json.dumps([1, 2]), "INVALID_MESSAGE"),
            (json.dumps({"type": "dance"}), "UNKNOWN_MESSAGE_TYPE"),
            (json.dumps({"type": "audio_chunk", "data": "@@not base64@@", "sr": 16000}), "INVALID_AUDIO"),
            (
                json.dumps({"type": "audio_chunk", "data": base64.b64encode(b"abc").decode(), "sr": 16000}),
                "INVALID_AUDIO",
            ),
            (
                json.dumps({"type": "audio_chunk", "data": base64.b64encode(b"abcd").decode(), "sr": 12345}),
                "UNSUPPORTED_SAMPLE_RATE",
            ),
            (json.dumps({"type": "set_tts_mode", "mode": "ultra"}), "INVALID_MESSAGE"),
            (json.dumps({"type": "text_input", "text": ""}), "INVALID_MESSAGE"),
        ]
        for raw, code in cases:
            await client.ws.send(raw)
            error = await client.until_type("error")
            assert error["code"] == code, raw
            assert error["message"] and error["trace_id"]
        await client.send({"type": "ping", "t": 1})
        assert (await client.until_type("pong"))["t"] == 1


async def test_audio_flood_is_refused(base: str, key: str) -> None:
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        second = tone_pcm(1000)
        for _ in range(20):  # 20 s of audio at once
            await client.send_audio(second)
        error = await client.until(lambda m: m["type"] == "error")
        assert error["code"] == "AUDIO_FLOOD"


async def test_oversized_frame_closes_with_1009_and_others_are_unaffected(base: str, key: str) -> None:
    bystander = await create_session(base, key)
    created = await create_session(base, key)
    async with Client.connect(bystander["ws_url"]) as other:
        await other.until_type("session_state")
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await client.ws.send(b"\x00" * (128 * 1024))
            error = await client.until_type("error")
            assert error["code"] == "FRAME_TOO_LARGE"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await other.send({"type": "text_input", "text": "still there?"})
        assert (await other.until_type("turn_completed"))["interrupted"] is False


@pytest.mark.parametrize("case", ["no-token", "foreign", "expired", "unknown", "not-uuid"])
async def test_refused_connections_say_why(base: str, key: str, case: str) -> None:
    created = await create_session(base, key)
    other = await create_session(base, key)
    sid = created["session_id"]
    root = base.replace("http", "ws")
    expired = issue_token(SECRET, uuid.UUID(sid), time.time() - 100, 10)
    url, code = {
        "no-token": (f"{root}/ws/{sid}", 4401),
        "foreign": (f"{root}/ws/{sid}?token={other['token']}", 4401),
        "expired": (f"{root}/ws/{sid}?token={expired}", 4401),
        "unknown": (f"{root}/ws/{(u := uuid.uuid4())}?token={issue_token(SECRET, u, time.time(), 60)}", 4404),
        "not-uuid": (f"{root}/ws/abc?token=x", 4404),
    }[case]
    async with websockets.connect(url) as conn:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await conn.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    assert closed.value.rcvd.reason


async def test_reconnect_resumes_the_session() -> None:
    settings = _settings(max_sessions=1)
    state_store = InMemorySessionStateStore()
    container = fake_container(settings, session_state=state_store)
    _user, key = await make_user(container)
    async with running_server(create_app(settings, container)) as base:
        created = await create_session(base, key)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await client.send({"type": "text_input", "text": "remember me"})
            await client.until_type("turn_completed")
            # full while connected: a new session is refused (a parked one would not count)
            async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
                busy = await http.post("/api/v1/sessions")
                assert busy.status_code == 503 and busy.json()["error"]["code"] == "BUSY"
        async with Client.connect(created["ws_url"]) as client:
            state = await client.until_type("session_state")
            assert state["resumed"] is True and state["turns"] == 1
            # a second connection to the same session takes over; the first is closed with 4409
            async with Client.connect(created["ws_url"]) as newer:
                assert (await newer.until_type("session_state"))["resumed"] is True
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await client.until_type("never")
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4409
                await newer.send({"type": "text_input", "text": "what did I say?"})
                await newer.until_type("turn_completed")
        stored = await state_store.load(uuid.UUID(created["session_id"]))
        assert stored is not None and stored.accepts(created["token"]) and stored.extra["turn_count"] == "2"
        brain_history = container.chat_model.calls[-1]  # type: ignore[attr-defined]
        assert any("remember me" in m.content for m in brain_history)


def _shed_total(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("conversation_audio_shed_chunks_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_client_that_stops_reading_loses_only_reply_audio() -> None:
    # A long reply (~60 ms of fake audio per character: about a minute of speech) to a client that
    # stops reading once it starts: the server's socket backs up, its outbox passes the limit and
    # sheds audio, but every control message still arrives, in order, after the client reads again.
    words = [f"word{i}," if i % 12 == 11 else f"word{i}" for i in range(160)]
    reply = "[happy] " + " ".join(words) + "."
    settings = _settings()
    # the real Prometheus adapter, so the shed counter is read back from /api/v1/metrics
    container = fake_container(
        settings, chat_model=FakeChatModel((reply,)), metrics=PrometheusConversationMetrics()
    )
    _user, key = await make_user(container)
    app = create_app(settings, container)
    async with running_server(app) as base:
        app.state.services.sessions.deps.config.outbox_limit = 40
        async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
            shed_before = _shed_total((await http.get("/api/v1/metrics")).text)
        created = await create_session(base, key)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        async with websockets.connect(created["ws_url"], sock=sock, max_size=None, max_queue=2) as conn:
            client = Client(conn)
            await client.until_type("session_state")
            await client.send({"type": "text_input", "text": "tell me a long story"})
            started = await client.until_type("turn_started")
            await asyncio.sleep(4.0)  # not reading: the reply is produced meanwhile
            done = await client.until_type("turn_completed")
        async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
            shed_after = _shed_total((await http.get("/api/v1/metrics")).text)
    turn_id = started["turn_id"]
    assert done["turn_id"] == turn_id and done["interrupted"] is False
    tokens = "".join(m["token"] for m in client.of("llm_token"))
    assert tokens.strip() == reply.removeprefix("[happy] ")  # every token arrived
    notices = [m for m in client.of("notice") if m["code"] == "AUDIO_SHED"]
    assert len(notices) == 1 and notices[0]["turn_id"] == turn_id
    seqs = [m["seq"] for m in client.of("audio_chunk")]
    assert seqs == sorted(seqs) and len(seqs) < seqs[-1] + 1  # in order, with chunks missing
    assert shed_after - shed_before == seqs[-1] + 1 - len(seqs)
    kinds = [m["type"] for m in client.messages]
    assert kinds.index("turn_completed") > kinds.index("notice")
    assert kinds.count("session_state") >= 3  # connect, speaking, listening: none lost
