"""``WS /v1/realtime`` over a real uvicorn server with fake engines, driven by the official ``openai``
SDK (and a raw ``websockets`` client for what the SDK would refuse to send): the event mapping, a
text turn, a spoken turn with server VAD, manual commit, cancel and truncation, bad events, and the
handshake's authentication (docs/realtime.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI
from pydantic import SecretStr
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from avatar.bootstrap import Container
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, FakeSynthesizer, fake_container
from tests.support.auth import bearer, make_user

REPLY = "[happy] Hello there, it is good to hear from you today, my friend."
TIMEOUT_S = 30.0


def tone_24k(ms: int) -> bytes:
    n = 24 * ms
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / 24000)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


class Served:
    def __init__(self, base: str, key: str, container: Container, chat: FakeChatModel) -> None:
        self.base, self.key, self.container, self.chat = base, key, container, chat

    def client(self, key: str | None = None) -> AsyncOpenAI:
        return AsyncOpenAI(api_key=key or self.key, base_url=f"{self.base}/v1", max_retries=0)

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/v1/realtime"


@pytest_asyncio.fixture(scope="module")
async def served() -> AsyncIterator[Served]:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr("test-secret")
    settings.conversation.max_sessions = 50
    settings.conversation.max_sessions_per_user = 50
    settings.conversation.session_creations_per_user_per_minute = 1000
    settings.conversation.max_frame_bytes = 64 * 1024
    # slow enough that a reply is still being written when a test cancels it at its first word
    chat = FakeChatModel((REPLY,), token_delay_s=0.05)
    container = fake_container(
        settings,
        recognizer=FakeRecognizer(utterance_ms=500),
        chat_model=chat,
        fast_tts=FakeSynthesizer(delay_s=0.005),
    )
    await container.queue.start()
    _user, api_key = await make_user(container)
    async with running_server(create_app(settings, container)) as url:
        yield Served(url, api_key, container, chat)


class Events:
    """What one connection received, with waits on it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []

    async def until(self, kind: str, timeout_s: float = TIMEOUT_S) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.conn.recv()
                self.seen.append(event)
                if event.type == kind:
                    return event

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]


async def turns_of(served: Served, session_id: str, count: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=served.base, headers=bearer(served.key)) as http:
        turns: list[dict[str, Any]] = []
        for _ in range(200):
            turns = (await http.get(f"/api/v1/sessions/{session_id}/turns")).json()["turns"]
            if len(turns) >= count and all(t["ai_response"] is not None for t in turns):
                return turns
            await asyncio.sleep(0.05)
    return turns


async def test_a_text_item_and_response_create(served: Served) -> None:
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        created = await events.until("session.created")
        session_id = created.session.id
        assert created.session.audio.output.format.rate == 24000
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Always mention the weather.",
                "output_modalities": ["audio"],
                "audio": {"output": {"voice": "alloy"}, "input": {"transcription": {"model": "whisper-1"}}},
            }
        )
        updated = await events.until("session.updated")
        assert updated.session.audio.output.voice == "alloy"
        assert updated.session.instructions == "Always mention the weather."
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}
        )
        added = await events.until("conversation.item.done")
        assert added.item.role == "user" and added.item.content[0].text == "hi there"
        await conn.response.create()
        done = await events.until("response.done")
    order = [e.type for e in events.seen]
    for kind in (
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert kind in order, kind
    assert order.index("response.created") < order.index("response.output_audio.delta")
    transcript = "".join(e.delta for e in events.of("response.output_audio_transcript.delta"))
    assert transcript.strip() == "Hello there, it is good to hear from you today, my friend."
    audio = b"".join(base64.b64decode(e.delta) for e in events.of("response.output_audio.delta"))
    assert audio and len(audio) % 2 == 0
    assert (
        done.response.status == "completed"
        and done.response.output[0].content[0].transcript == transcript.strip()
    )
    assert done.response.usage.output_tokens > 0 and done.response.usage.input_tokens > 0
    # the instructions follow the persona in the prompt the model got
    system = served.chat.calls[-1][0]
    assert system.role == "system" and "Always mention the weather." in system.content
    (turn,) = await turns_of(served, session_id, 1)
    assert turn["user_input"] == "hi there" and turn["ai_response"] == transcript.strip()
    assert turn["audio"] and turn["audio"][0]["mode"] == "fast"


async def test_speech_with_server_vad_makes_a_turn(served: Served) -> None:
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        )
        await events.until("session.updated")
        pcm = tone_24k(500)  # the fake recognizer ends an utterance after 500 ms
        for start in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[start : start + 4800]).decode())
        started = await events.until("input_audio_buffer.speech_started")
        stopped = await events.until("input_audio_buffer.speech_stopped")
        committed = await events.until("input_audio_buffer.committed")
        assert started.item_id == stopped.item_id == committed.item_id
        transcript = await events.until("conversation.item.input_audio_transcription.completed")
        assert transcript.item_id == committed.item_id and transcript.transcript == "hello there"
        (partial,) = events.of("conversation.item.input_audio_transcription.delta")  # the live words
        assert partial.item_id == committed.item_id and partial.delta == "hello"
        done = await events.until("response.done")
        assert done.response.status == "completed"
    (turn,) = await turns_of(served, session_id, 1)
    assert turn["user_input"] == "hello there" and turn["transcription"]["text"] == "hello there"


async def test_manual_commit_waits_for_response_create(served: Served) -> None:
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        await events.until("session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        updated = await events.until("session.updated")
        assert updated.session.audio.input.turn_detection is None
        await conn.input_audio_buffer.append(audio=base64.b64encode(tone_24k(300)).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        committed = await events.until("input_audio_buffer.committed")
        created = await events.until("response.created")
        done = await events.until("response.done")
        assert done.response.id == created.response.id and done.response.status == "completed"
        assert not events.of("input_audio_buffer.speech_started")  # no VAD events with VAD off
        assert committed.item_id in [e.item.id for e in events.of("conversation.item.added")]
        # committing an empty buffer is an error, and the connection goes on
        await conn.input_audio_buffer.commit()
        error = await events.until("error")
        assert error.error.code == "input_audio_buffer_commit_empty"
        await conn.response.create()
        error = await events.until("error")
        assert error.error.code == "response_create_no_input"


async def test_cancel_mid_response_and_truncate(served: Served) -> None:
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me"}]}
        )
        await conn.response.create()
        created = await events.until("response.created")
        await events.until("response.output_audio_transcript.delta")
        await conn.response.cancel()
        done = await events.until("response.done")
        assert done.response.id == created.response.id and done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        item_id = done.response.output[0].id
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=0)
        truncated = await events.until("conversation.item.truncated")
        assert truncated.item_id == item_id and truncated.audio_end_ms == 0
        await conn.response.cancel()
        assert (await events.until("error")).error.code == "response_cancel_not_active"
    (turn,) = await turns_of(served, session_id, 1)
    assert turn["interrupted"] is True and turn["ai_response"] == ""


async def test_truncate_keeps_only_the_heard_words(served: Served) -> None:
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "again"}]}
        )
        await conn.response.create()
        done = await events.until("response.done")
        item = done.response.output[0]
        await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=10_000_000)
        assert (await events.until("error")).error.param == "audio_end_ms"
        await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=0)
        await events.until("conversation.item.truncated")
    (turn,) = await turns_of(served, session_id, 1)
    for _ in range(100):
        if turn["interrupted"]:
            break
        await asyncio.sleep(0.05)
        (turn,) = await turns_of(served, session_id, 1)
    assert turn["interrupted"] is True and turn["ai_response"] == ""


async def _raw(served: Served) -> Any:
    return websockets.connect(served.ws_url, additional_headers=bearer(served.key), max_size=None)


async def test_bad_events_get_openai_errors_and_the_connection_goes_on(served: Served) -> None:
    async with await _raw(served) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"

        async def error_for(frame: str | bytes) -> dict[str, Any]:
            await ws.send(frame)
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "error":
                        assert set(event) == {"type", "event_id", "error"}
                        assert set(event["error"]) == {"type", "code", "message", "param", "event_id"}
                        return dict(event["error"])

        assert (await error_for("{not json"))["code"] == "invalid_json"
        assert (await error_for(json.dumps([1, 2])))["param"] == "type"
        unknown = await error_for(json.dumps({"type": "dance", "event_id": "evt_1"}))
        assert unknown["code"] == "invalid_value" and unknown["event_id"] == "evt_1"
        bad_b64 = {"type": "input_audio_buffer.append", "audio": "@@@", "event_id": "evt_2"}
        error = await error_for(json.dumps(bad_b64))
        assert error["code"] == "invalid_audio" and error["event_id"] == "evt_2"
        odd = {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}
        assert (await error_for(json.dumps(odd)))["code"] == "invalid_audio"
        missing = await error_for(json.dumps({"type": "conversation.item.truncate", "item_id": "nope"}))
        assert missing["param"] == "audio_end_ms" and missing["code"] == "missing_required_parameter"
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": "nope",
            "content_index": 0,
            "audio_end_ms": 5,
        }
        assert (await error_for(json.dumps(truncate)))["code"] == "item_not_found"
        assert (await error_for(json.dumps({"type": "conversation.item.delete"})))[
            "code"
        ] == "unsupported_event"
        ulaw = {
            "type": "session.update",
            "session": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        }
        assert (await error_for(json.dumps(ulaw)))["param"] == "session.audio.output.format"
        voice = {"type": "session.update", "session": {"audio": {"output": {"voice": "nobody"}}}}
        assert (await error_for(json.dumps(voice)))["param"] == "session.audio.output.voice"
        assert (await error_for(b"\x00\x01"))["code"] == "invalid_frame"
        big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (70 * 1024)})
        assert (await error_for(big))["code"] == "event_too_large"
        assert (await error_for(json.dumps({"type": "response.cancel"})))[
            "code"
        ] == "response_cancel_not_active"
        # the connection still answers
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "still there?"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        async with asyncio.timeout(TIMEOUT_S):
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                pass
        assert event["response"]["status"] == "completed"


async def test_the_handshake_needs_a_valid_key_and_an_allowed_origin(served: Served) -> None:
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer not-a-key"}, 401),
        ({**bearer(served.key), "Origin": "https://evil.example"}, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(served.ws_url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["type"] == "invalid_request_error"
    # the SDK reports the refusal too
    with pytest.raises(InvalidStatus):
        async with served.client("wrong-key").realtime.connect(model="avatar"):
            pass


async def test_browser_subprotocol_auth_and_resuming_an_owned_session(served: Served) -> None:
    protocols = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{served.key}")]
    origin = Origin(served.base)  # a page of this server
    async with websockets.connect(served.ws_url, subprotocols=protocols, origin=origin) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        session_id = created["session"]["id"]
    async with websockets.connect(
        f"{served.ws_url}?session_id={session_id}", additional_headers=bearer(served.key)
    ) as ws:
        assert json.loads(await ws.recv())["session"]["id"] == session_id
    # another user's key cannot resume it, nor can anyone name a session that does not exist
    _other, other_key = await make_user(served.container, f"other-{uuid.uuid4().hex[:6]}")
    for url, key in (
        (f"{served.ws_url}?session_id={session_id}", other_key),
        (f"{served.ws_url}?session_id={uuid.uuid4()}", served.key),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=bearer(key)):
                pass
        assert refused.value.response.status_code == 404


async def test_beta_clients_get_the_beta_event_names(served: Served) -> None:
    headers = {**bearer(served.key), "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(served.ws_url, additional_headers=headers, max_size=None) as ws:
        created = json.loads(await ws.recv())
        assert created["session"]["input_audio_format"] == "pcm16"
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "beta"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        seen: list[str] = []
        async with asyncio.timeout(TIMEOUT_S):
            while (kind := json.loads(await ws.recv())["type"]) != "response.done":
                seen.append(kind)
    assert "conversation.item.created" in seen and "response.audio.delta" in seen
    assert "response.audio_transcript.delta" in seen and "response.output_audio.delta" not in seen


async def test_an_audio_item_a_system_item_and_clearing_the_buffer(served: Served) -> None:
    recognizer = served.container.recognizer
    assert isinstance(recognizer, FakeRecognizer)
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        )
        await events.until("session.updated")
        await conn.input_audio_buffer.clear()
        await events.until("input_audio_buffer.cleared")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Be brief."}],
            }
        )
        await events.until("conversation.item.done")
        clip = tone_24k(400)
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": base64.b64encode(clip).decode()}],
            }
        )
        transcribed = await events.until("conversation.item.input_audio_transcription.completed")
        assert transcribed.transcript == "hello there"
        assert recognizer.transcribed[-1] == (len(clip), 24000)
        await conn.response.create()
        done = await events.until("response.done")
        assert done.response.status == "completed"
    assert "Be brief." in served.chat.calls[-1][0].content
    (turn,) = await turns_of(served, session_id, 1)
    assert turn["user_input"] == "hello there" and turn["transcription"]["audio_url"]


async def test_a_longer_silence_duration_joins_speech_into_one_reply(served: Served) -> None:
    server_silence = served.container.settings.asr.min_silence_ms
    async with served.client().realtime.connect(model="avatar") as conn:
        events = Events(conn)
        session_id = (await events.until("session.created")).session.id
        wanted = server_silence + 2500
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": wanted}}},
            }
        )
        updated = await events.until("session.updated")
        assert updated.session.audio.input.turn_detection.silence_duration_ms == wanted
        pcm = tone_24k(500)  # one utterance of the fake recognizer
        for _ in range(2):  # two utterances, the second well inside the extra silence
            for start in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(pcm[start : start + 4800]).decode()
                )
        done = await events.until("response.done")
        assert done.response.status == "completed"
        assert len(events.of("input_audio_buffer.committed")) == 2 and len(events.of("response.created")) == 1
    (turn,) = await turns_of(served, session_id, 1)
    assert turn["user_input"] == "hello there hello there"
