"""Binary audio frames on the conversation socket (docs/protocol.md, "Binary audio frames") over a
real uvicorn server and a real ``websockets`` client, with fake engines: negotiation, binary audio
in and out, every refused frame (the session goes on), and the JSON path unchanged."""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import websockets
from pydantic import SecretStr

from avatar.presentation.app import create_app
from avatar.presentation.audio_frames import MAX_AUDIO_IN_BYTES, decode_audio_out, encode_audio_in
from avatar.settings import Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.auth import make_user


def _tone(ms: int, sr: int) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


@pytest_asyncio.fixture(scope="module")
async def served() -> AsyncIterator[tuple[str, str, FakeRecognizer]]:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr("test-secret")
    settings.conversation.max_frame_bytes = 256 * 1024  # above the largest audio frame
    recognizer = FakeRecognizer(utterance_ms=500)
    container = fake_container(
        settings, recognizer=recognizer, chat_model=FakeChatModel(("[happy] Hello! Nice to meet you.",))
    )
    await container.queue.start()
    _user, api_key = await make_user(container)
    async with running_server(create_app(settings, container)) as url:
        yield url, api_key, recognizer


def _binary_url(created: dict[str, str]) -> str:
    return f"{created['ws_url']}&audio=binary"


async def test_binary_microphone_in_and_binary_reply_audio_out(
    served: tuple[str, str, FakeRecognizer],
) -> None:
    base, key, recognizer = served
    created = await create_session(base, key)
    pcm = _tone(500, 24000)
    step = 24000 // 10 * 2  # 100 ms
    frames = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    async with Client.connect(_binary_url(created)) as client:
        state = await client.until_type("session_state")
        assert state["audio_frames"] == "binary"
        for seq, chunk in enumerate(frames):
            await client.ws.send(encode_audio_in(chunk, 24000, seq, seq * 100))
        final = await client.until_type("transcription_final")
        assert final["text"] == "hello there"
        started = await client.until_type("turn_started")
        done = await client.until_type("turn_completed")
    assert done["interrupted"] is False and done["text"] == "Hello! Nice to meet you."
    audio = client.of("audio_chunk")
    assert audio and client.binary_frames == len(audio)  # every reply chunk came binary
    assert [a["seq"] for a in audio] == list(range(len(audio)))
    assert {a["turn_id"] for a in audio} == {started["turn_id"]}
    assert all(a["mode"] == "fast" and a["sr"] > 0 and base64.b64decode(a["data"]) for a in audio)
    assert "".join(a["text"] for a in audio).strip()
    pushed = [c for s in recognizer.streams for c in s.pushed if c.sample_rate == 24000]
    assert b"".join(c.pcm for c in pushed) == pcm
    assert [c.timestamp_ms for c in pushed] == [0, 100, 200, 300, 400]


async def test_reply_frames_decode_with_the_codec(served: tuple[str, str, FakeRecognizer]) -> None:
    base, key, _ = served
    created = await create_session(base, key)
    async with websockets.connect(_binary_url(created), max_size=None) as ws:
        await ws.recv()  # session_state
        await ws.send('{"type":"text_input","text":"hi"}')
        frames: list[bytes] = []
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                frames.append(raw)
            elif '"turn_completed"' in raw:
                break
    assert frames
    first = decode_audio_out(frames[0])
    assert first.seq == 0 and first.duration_ms > 0 and len(first.data) % 2 == 0


BAD_FRAMES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "INVALID_AUDIO"),
    ("short header", b"\x01\x00\x00\x00\x80>", "INVALID_AUDIO"),
    ("unknown kind", b"\x09" + encode_audio_in(b"\x00\x00", 16000, 0)[1:], "INVALID_AUDIO"),
    ("no samples", encode_audio_in(b"", 16000, 0), "INVALID_AUDIO"),
    ("odd byte count", encode_audio_in(b"\x00\x00\x00", 16000, 0), "INVALID_AUDIO"),
    ("too much audio", encode_audio_in(b"\x00" * (MAX_AUDIO_IN_BYTES + 2), 16000, 0), "INVALID_AUDIO"),
    ("timestamp", encode_audio_in(b"\x00\x00", 16000, 0, -(10**13)), "INVALID_AUDIO"),
    ("sample rate", encode_audio_in(b"\x00\x00", 12345, 0), "UNSUPPORTED_SAMPLE_RATE"),
]


async def test_each_bad_binary_frame_gets_an_error_and_the_session_goes_on(
    served: tuple[str, str, FakeRecognizer],
) -> None:
    base, key, _ = served
    created = await create_session(base, key)
    async with Client.connect(_binary_url(created)) as client:
        await client.until_type("session_state")
        for name, frame, code in BAD_FRAMES:
            await client.ws.send(frame)
            error = await client.until_type("error")
            assert error["code"] == code, name
            assert error["message"] and error["trace_id"], name
            await client.send({"type": "ping", "t": 1})
            assert (await client.until_type("pong"))["t"] == 1, name
        # JSON audio is still accepted on a binary socket, and the session still answers
        await client.send_audio(_tone(500, 16000))
        assert (await client.until_type("turn_completed"))["interrupted"] is False
        assert client.binary_frames > 0


async def test_binary_frames_without_negotiation_are_refused_and_json_is_unchanged(
    served: tuple[str, str, FakeRecognizer],
) -> None:
    base, key, _ = served
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        state = await client.until_type("session_state")
        assert "audio_frames" not in state
        await client.ws.send(encode_audio_in(_tone(100, 16000), 16000, 0))
        error = await client.until_type("error")
        assert error["code"] == "INVALID_AUDIO" and "audio=binary" in error["message"]
        await client.send({"type": "text_input", "text": "hi"})
        assert (await client.until_type("turn_completed"))["interrupted"] is False
    audio = client.of("audio_chunk")
    assert audio and client.binary_frames == 0
    assert all(base64.b64decode(a["data"]) for a in audio)


async def test_an_unknown_audio_framing_is_refused_and_json_stays(
    served: tuple[str, str, FakeRecognizer],
) -> None:
    base, key, _ = served
    created = await create_session(base, key)
    async with Client.connect(f"{created['ws_url']}&audio=opus") as client:
        state = await client.until_type("session_state")
        assert "audio_frames" not in state
        assert (await client.until_type("error"))["code"] == "INVALID_MESSAGE"
        await client.send({"type": "text_input", "text": "hi"})
        assert (await client.until_type("turn_completed"))["interrupted"] is False
    assert client.of("audio_chunk") and client.binary_frames == 0


async def test_binary_framing_needs_the_same_token(served: tuple[str, str, FakeRecognizer]) -> None:
    base, key, _ = served
    created = await create_session(base, key)
    other = await create_session(base, key)
    root = base.replace("http", "ws")
    for url in (
        f"{root}/ws/{created['session_id']}?v=1&audio=binary",  # no token
        f"{root}/ws/{created['session_id']}?v=1&audio=binary&token={other['token']}",  # another's
        f"{root}/ws/{uuid.uuid4()}?v=1&audio=binary&token={created['token']}",  # unknown session
    ):
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.send(encode_audio_in(b"\x00\x00", 16000, 0))
                while True:
                    assert not isinstance(await ws.recv(), bytes)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401, url
