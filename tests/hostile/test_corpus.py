"""The bad-input corpus (issue 15, item 6) against the real app over fakes: a real uvicorn server
and real ``websockets``/``httpx`` clients. Every case asserts the documented answer
(docs/protocol.md, Limits and errors) and then that a spoken turn is still answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
import websockets
from pydantic import SecretStr

from avatar.bench.live import api_user, auth, free_port, server_config
from avatar.domain.errors import DependencyError
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.presentation.app import create_app
from avatar.presentation.ws_protocol import uvicorn_ws_options
from avatar.settings import Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, server_key
from tests.fakes import FakeChatModel, FakeDatabase, FakeRecognizer, FakeSynthesizer, fake_container
from tests.hostile.corpus import REST_CASES, UPLOAD_CASES, WS_CASES, tone_pcm

SECRET = "hostile-corpus-secret"
#: No answer may echo a hostile input back at length.
MAX_MESSAGE_CHARS = 400


def corpus_settings(data_dir: Path | None = None) -> Settings:
    settings = Settings(_env_file=None, environment="test")
    if data_dir is not None:
        settings.data_dir = data_dir
    settings.security.secret_key = SecretStr(SECRET)
    settings.conversation.max_sessions = 1000
    # the corpus opens hundreds of sessions as one user from one address within a minute
    settings.conversation.max_sessions_per_user = 1000
    settings.conversation.session_creations_per_user_per_minute = 100_000
    settings.conversation.session_creations_per_address_per_minute = 100_000
    settings.conversation.max_frame_bytes = 256 * 1024
    settings.security.reconnect_grace_s = 5
    return settings


@contextlib.asynccontextmanager
async def corpus_server(settings: Settings, **overrides: Any) -> AsyncIterator[str]:
    parts: dict[str, Any] = {
        "recognizer": FakeRecognizer(utterance_ms=500),
        "chat_model": FakeChatModel(("[happy] Hello! Nice to meet you.",)),
        **overrides,
    }
    container = fake_container(settings, **parts)
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base
    finally:
        await container.queue.stop()


@pytest_asyncio.fixture(scope="module")
async def base() -> AsyncIterator[str]:
    async with corpus_server(corpus_settings()) as url:
        yield url


async def spoken_turn(client: Client) -> dict[str, Any]:
    """Speak one 500 ms utterance (the fake recognizer's endpoint) into the socket; returns the
    ``turn_completed`` of the reply."""
    speech = tone_pcm(500)
    for start in range(0, len(speech), 3200):
        await client.send_audio(speech[start : start + 3200], 16000, timestamp=start / 32)
    final = await client.until_type("transcription_final", timeout_s=20)
    assert final["text"] == "hello there"
    done = await client.until_type("turn_completed", timeout_s=20)
    assert done["text"] and done["interrupted"] is False
    return done


async def still_answers(base: str) -> None:
    """A new session on the same server answers a spoken turn."""
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await spoken_turn(client)


def assert_error(error: dict[str, Any], code: str) -> None:
    assert error["code"] == code, error
    assert error["message"] and len(error["message"]) <= MAX_MESSAGE_CHARS, error
    assert uuid.UUID(error["trace_id"])


# --- WebSocket frames on an open socket -----------------------------------------------------------


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_websocket_frame(base: str, name: str) -> None:
    case = WS_CASES[name]
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.ws.send(case.frame)
        assert_error(await client.until_type("error", timeout_s=10), case.code)
        await client.send({"type": "ping", "t": 7})
        assert (await client.until_type("pong", timeout_s=10))["t"] == 7
        await spoken_turn(client)  # the same socket and session go on


# --- frames and handshakes that end the socket -------------------------------------------------------


def _ws_root(base: str) -> str:
    return base.replace("http", "ws")


@pytest.mark.parametrize("version", ["999", "0", "2", "abc", "", "1.0", "1" * 5000])
async def test_unsupported_protocol_version_is_refused_with_4400(base: str, version: str) -> None:
    created = await create_session(base)
    url = f"{_ws_root(base)}/ws/{created['session_id']}?token={created['token']}&v={version}"
    async with websockets.connect(url) as ws:
        error = await asyncio.wait_for(ws.recv(), 5)
        assert_error(json.loads(error), "UNSUPPORTED_PROTOCOL_VERSION")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    async with Client.connect(created["ws_url"]) as client:  # v=1: the same session answers
        await client.until_type("session_state")
        await spoken_turn(client)


_AUTH_FRAMES: dict[str, str | bytes] = {
    "NaN": '{"type":"auth","token":NaN}',
    "nested-100000": "[" * 100_000 + "]" * 100_000,
    "binary": b"\x00\x01",
    "not-auth": '{"type":"ping","t":1}',
    "token-NUL": '{"type":"auth","token":"a\\u0000b"}',
    "token-600-chars": '{"type":"auth","token":"' + "t" * 600 + '"}',
    "token-number": '{"type":"auth","token":5}',
    "5000-digit-int": '{"type":"auth","token":' + "9" * 5000 + "}",
}


@pytest.mark.parametrize("name", list(_AUTH_FRAMES))
async def test_a_bad_first_auth_frame_closes_with_4401(base: str, name: str) -> None:
    created = await create_session(base)
    async with websockets.connect(f"{_ws_root(base)}/ws/{created['session_id']}?v=1") as ws:
        await ws.send(_AUTH_FRAMES[name])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await spoken_turn(client)


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_an_oversized_frame_closes_with_1009(base: str, kind: str) -> None:
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        big = 300 * 1024
        await client.ws.send(b"\x00" * big if kind == "binary" else '{"type":"ping","x":"' + "x" * big + '"}')
        assert_error(await client.until_type("error"), "FRAME_TOO_LARGE")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await spoken_turn(client)


def _upgrade(port: int, path: str, extra: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("header-9-KB", 431, "HEADERS_TOO_LARGE"),
        ("header-1-MB", 431, "HEADERS_TOO_LARGE"),
        ("200-headers", 431, "HEADERS_TOO_LARGE"),
        ("protocol-header-9-KB", 431, "HEADERS_TOO_LARGE"),
    ],
)
async def test_an_oversized_handshake_is_answered_at_once(
    base: str, name: str, status: int, code: str
) -> None:
    created = await create_session(base)
    port = int(base.rsplit(":", 1)[1])
    extra = {
        "header-9-KB": "X-Big: " + "a" * 9000 + "\r\n",
        "header-1-MB": "X-Big: " + "a" * 1_000_000 + "\r\n",
        "200-headers": "".join(f"X-H{i}: v\r\n" for i in range(200)),
        "protocol-header-9-KB": "Sec-WebSocket-Protocol: avatar.v1, avatar.token." + "t" * 9000 + "\r\n",
    }[name]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(_upgrade(port, f"/ws/{created['session_id']}?v=1", extra))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # the server closes after answering
    finally:
        writer.close()
    assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert_error(json.loads(body)["error"], code)
    await still_answers(base)


# --- REST ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REST_CASES))
async def test_rest_request(base: str, name: str) -> None:
    case = REST_CASES[name]
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=auth(await server_key(base))) as http:
        headers = {"content-type": case.content_type} if case.body is not None else {}
        response = await http.request(case.method, case.path, content=case.body, headers=headers)
    assert response.status_code == case.status, response.text[:300]
    body = response.json()
    assert set(body) == {"error"}, body
    assert_error(body["error"], case.code)
    await still_answers(base)


@pytest.mark.parametrize("name", list(UPLOAD_CASES))
async def test_voice_profile_upload(base: str, name: str) -> None:
    case = UPLOAD_CASES[name]
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=auth(await server_key(base))) as http:
        response = await http.post(
            "/api/v1/voice-profiles",
            files={"audio": (case.filename, case.audio, "application/octet-stream")},
            data=case.form,
        )
    assert response.status_code == case.status, response.text[:300]
    error = response.json()["error"]
    assert_error(error, case.code)
    for leak in ("Errno", "errno", "FFmpeg", "Traceback", "Error:"):
        assert leak not in error["message"], error
    await still_answers(base)


# --- errors on the server's side carry no internals ------------------------------------------------


class _BrokenDatabase(FakeDatabase):
    """Every unit of work fails the way a dependency's own error text would leak internals."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    def __call__(self) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (DependencyError('duplicate key value violates unique constraint "sessions_pkey"'), 503, None),
        (
            FileNotFoundError(2, "No such file or directory", "/var/lib/avatar/secret.key"),
            500,
            "INTERNAL_ERROR",
        ),
        (RuntimeError("asyncpg.exceptions.InternalServerError: relation turns_fk"), 500, "INTERNAL_ERROR"),
    ],
)
async def test_server_side_errors_keep_their_internals_in_the_log(
    exc: Exception, status: int, code: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    async with corpus_server(corpus_settings(), uow=_BrokenDatabase(exc)) as url:
        with caplog.at_level(logging.WARNING):
            # the broken database also fails the key lookup: that error must be as clean
            async with httpx.AsyncClient(base_url=url, headers=auth("avk_" + "x" * 43)) as http:
                response = await http.get("/api/v1/sessions")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == (code or "DEPENDENCY_UNAVAILABLE")
    for leak in ("sessions_pkey", "constraint", "secret.key", "FileNotFoundError", "asyncpg", "turns_fk"):
        assert leak not in error["message"], error
    assert error["trace_id"] in error["message"]
    logged = [r for r in caplog.records if error["trace_id"] in r.getMessage()]
    assert logged, "the details must be logged under the trace id the client sees"


# --- NUL produced by the engines is dropped before storage: the turn is stored in PostgreSQL ------------


async def test_nul_from_the_recognizer_and_the_model_is_stored_without_it(
    tmp_path: Path, module_database_url: str
) -> None:
    settings = corpus_settings(tmp_path)
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(module_database_url)
    async with contextlib.AsyncExitStack() as stack:
        uow = await build_unit_of_work_factory(settings, stack)
        stack.push_async_callback(uow.aclose)
        async with corpus_server(
            settings,
            uow=uow,
            recognizer=FakeRecognizer(("hello\x00 there",), utterance_ms=500),
            chat_model=FakeChatModel(("[happy] Hi\x00 you!",)),
        ) as url:
            created = await create_session(url)
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                speech = tone_pcm(500)
                for start in range(0, len(speech), 3200):
                    await client.send_audio(speech[start : start + 3200])
                done = await client.until_type("turn_completed", timeout_s=20)
                assert not client.of("error"), client.of("error")
            sid = created["session_id"]
            async with httpx.AsyncClient(base_url=url, headers=auth(await server_key(url))) as http:
                turns: list[dict[str, Any]] = []
                for _ in range(100):
                    turns = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"]
                    if turns and turns[0]["ai_response"] and turns[0]["transcription"]:
                        break
                    await asyncio.sleep(0.05)
            (turn,) = turns
            assert turn["turn_id"] == done["turn_id"]
            assert turn["user_input"] == "hello there" and turn["transcription"]["text"] == "hello there"
            assert "\x00" not in turn["ai_response"] and turn["ai_response"]


# --- the WebSocket settings ``avatar up`` serves with ---------------------------------------------------


async def test_the_served_frame_limits_answer_large_frames_clearly(tmp_path: Path) -> None:
    """With ``uvicorn_ws_options`` (``avatar up``): a frame over the limit gets ``FRAME_TOO_LARGE``
    then 1009; one far over it is closed with 1009 by the protocol library, unread."""
    settings = corpus_settings(tmp_path)
    settings.conversation.max_frame_bytes = 64 * 1024
    container = fake_container(settings, recognizer=FakeRecognizer(utterance_ms=500))
    port = free_port()
    config = server_config(create_app(settings, container), port)
    for name, value in uvicorn_ws_options(settings.conversation.max_frame_bytes).items():
        setattr(config, name, value)
    server = uvicorn.Server(config)
    await container.queue.start()
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the server stopped during start-up")
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        key = await api_user(container)
        for size, error_first in ((100 * 1024, True), (1024 * 1024, False)):
            created = await create_session(url, key)
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await client.ws.send(b"\x00" * size)
                if error_first:
                    assert_error(await client.until_type("error"), "FRAME_TOO_LARGE")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await client.until_type("error", timeout_s=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            assert closed.value.rcvd.reason
        created = await create_session(url, key)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await spoken_turn(client)
    finally:
        server.should_exit = True
        await task
        await container.queue.stop()


async def test_a_failing_engine_is_reported_over_the_socket_without_its_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with corpus_server(corpus_settings(), fast_tts=FakeSynthesizer(fail=True)) as url:
        created = await create_session(url)
        with caplog.at_level(logging.WARNING):
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await client.send({"type": "text_input", "text": "hi"})
                error = await client.until_type("error", timeout_s=20)
    assert error["code"] == "TTS_FAILED"
    assert "fake synthesizer failure" not in error["message"] and error["trace_id"] in error["message"]
    assert any(
        error["trace_id"] in r.getMessage() and "fake synthesizer failure" in r.getMessage()
        for r in caplog.records
    )
