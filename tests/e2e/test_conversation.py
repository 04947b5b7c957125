"""End to end on the embedded stack with real models: Whisper, SmolLM2 (llama.cpp server), Piper,
Kokoro, PostgreSQL + pgvector and a filesystem object store, behind a real uvicorn server, driven by
a real WebSocket client streaming LibriVox speech at real-time pace."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from avatar.application.conversation import issue_token, transcription_id_for
from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from avatar.settings import Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.support.audio import SpeechClip
from tests.support.auth import bearer, make_user

pytestmark = pytest.mark.slow


def e2e_settings(tmp: Path, database_url: str, llm_url: str) -> Settings:
    settings = Settings(environment="test")
    settings.data_dir = tmp
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(database_url)
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.placement = Placement.REMOTE
    settings.llm.base_url = llm_url
    settings.llm.max_tokens = 40
    settings.asr.language = "en"
    settings.conversation.max_sessions = 10
    return settings


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[tuple[str, Container]]:
    settings = e2e_settings(tmp_path_factory.mktemp("e2e"), module_database_url, llama_server)
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


@pytest_asyncio.fixture(scope="module")
async def key(stack: tuple[str, Container]) -> str:
    """An API key of the user the tests talk as (docs/security.md)."""
    _user, api_key = await make_user(stack[1], f"e2e-{uuid.uuid4().hex[:8]}")
    return api_key


async def test_a_spoken_turn_end_to_end(
    stack: tuple[str, Container], key: str, librivox: list[SpeechClip]
) -> None:
    base, container = stack
    clip = librivox[0]
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "set_tts_mode", "mode": "hq"})
        await stream_realtime(client, clip.pcm)
        final = await client.until_type("transcription_final")
        words = set(clip.transcript.split())
        heard = set(final["text"].lower().replace(",", "").replace(".", "").split())
        assert len(words & heard) >= len(words) // 2
        completed = await client.until(lambda m: m["type"] == "turn_completed")
        assert client.of("transcription_partial") or final["text"]
        assert client.of("emotion") and client.of("llm_token") and client.of("audio_chunk")
        order = [m["type"] for m in client.messages]
        assert order.index("emotion") < order.index("audio_chunk")
        hq = await client.until_type("hq_ready", timeout_s=300)
        assert hq["turn_id"] == completed["turn_id"]
    sid = created["session_id"]
    turn_id = uuid.UUID(completed["turn_id"])
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        turns: list[dict[str, Any]] = []
        for _ in range(200):
            turns = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"]
            if turns and {a["mode"] for a in turns[0]["audio"]} == {"fast", "hq"}:
                break
            await asyncio.sleep(0.1)
        (turn,) = turns
        assert turn["user_input"] == final["text"] and turn["ai_response"] == completed["text"]
        assert turn["transcription"]["text"] == final["text"]
        assert set(turn["stage_latency_ms"]) >= {
            "endpoint",
            "asr_final",
            "first_clause",
            "tts_first_chunk",
            "e2e",
        }
        session = (await http.get(f"/api/v1/sessions/{sid}")).json()
        assert session["session_id"] == sid and session["status"] == "active"
        # every stored object is served through its presigned URL (the store's public base aside)
        urls = [turn["transcription"]["audio_url"]] + [a["url"] for a in turn["audio"]]
        for url in urls:
            served = await http.get(url if url.startswith("/") else "/" + url.split("/", 3)[3])
            assert served.status_code == 200 and served.content[:4] == b"RIFF"
    async with container.uow() as tx:  # the rows themselves, in PostgreSQL
        record = await tx.sessions.get(uuid.UUID(sid))
        stored_turns = await tx.turns.list_for_session(uuid.UUID(sid))
        transcription = await tx.transcriptions.get(transcription_id_for(turn_id))
        audio_rows = await tx.synthesized.list_for_turn(turn_id)
    assert record is not None and [t.turn_id for t in stored_turns] == [turn_id]
    assert transcription is not None and transcription.text == final["text"]
    assert sorted(a.mode.value for a in audio_rows) == ["fast", "hq"]
    keys = await container.object_store.list_keys("")
    assert any(k.startswith("raw_inputs/") and f"{sid}_{turn_id}_" in k for k in keys)
    assert any(k.startswith(f"synthesized/fast/{turn_id}_fast_") for k in keys)
    assert any(k.startswith(f"synthesized/hq/{turn_id}_hq_") for k in keys)


async def test_barge_in_end_to_end(
    stack: tuple[str, Container], key: str, librivox: list[SpeechClip]
) -> None:
    base, _ = stack
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        story = "Tell me a long story about a dragon and a princess."
        await client.send({"type": "text_input", "text": story})
        await client.until_type("audio_chunk")
        await stream_realtime(client, librivox[1].pcm)
        story_turn = client.of("turn_started")[0]["turn_id"]
        interrupted = await client.until_type("interrupted")
        assert interrupted["turn_id"] == story_turn and isinstance(interrupted["heard_text"], str)
        answered = await client.until(
            lambda m: (
                m["type"] == "turn_completed"
                and not m["interrupted"]
                and m["turn_id"] != interrupted["turn_id"]
            )
        )
        assert answered["text"]
    # only what was heard is kept for the interrupted reply
    async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
        for _ in range(100):
            turns = (await http.get(f"/api/v1/sessions/{created['session_id']}/turns")).json()["turns"]
            if len(turns) == 2 and turns[1]["ai_response"]:
                break
            await asyncio.sleep(0.1)
    assert turns[0]["interrupted"] is True and turns[0]["ai_response"] == interrupted["heard_text"]
    assert turns[1]["interrupted"] is False and turns[1]["user_input"]


async def test_two_sessions_at_once(
    stack: tuple[str, Container], key: str, librivox: list[SpeechClip]
) -> None:
    base, _ = stack

    async def converse(clip: SpeechClip) -> str:
        created = await create_session(base, key)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await stream_realtime(client, clip.pcm)
            # a pause inside the clip may end an utterance early; its reply is then interrupted by
            # the rest of the speech, and the answer that counts is the last, uninterrupted one
            done = await client.until(lambda m: m["type"] == "turn_completed" and not m["interrupted"])
            # Both sessions were answered: with speech, or -- the small model sometimes ends a
            # reply right after its emotion tag -- with the EMPTY_REPLY notice for that turn.
            empty = [m for m in client.of("notice") if m["code"] == "EMPTY_REPLY"]
            spoken = [m for m in client.of("audio_chunk") if m["turn_id"] == done["turn_id"]]
            assert bool(spoken) == bool(done["text"]) and (spoken or empty[-1]["turn_id"] == done["turn_id"])
            return str(done["turn_id"])

    answered = await asyncio.gather(converse(librivox[2]), converse(librivox[3]))
    assert len(set(answered)) == 2


async def test_reconnect_resumes_history(stack: tuple[str, Container], key: str) -> None:
    base, _ = stack
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "text_input", "text": "My name is Alice."})
        await client.until_type("turn_completed")
    async with Client.connect(created["ws_url"]) as client:
        state = await client.until_type("session_state")
        assert state["resumed"] is True and state["turns"] == 1
        await client.send({"type": "text_input", "text": "What is my name?"})
        # The first reply may still be playing by the server's reckoning: the new message then
        # interrupts it first (barge-in), so wait for the new turn's own completion.
        started = await client.until_type("turn_started")
        done = await client.until(
            lambda m: m["type"] == "turn_completed" and m["turn_id"] == started["turn_id"]
        )
        assert started["turn_number"] == 2 and done["text"] and not done["interrupted"]


async def test_bad_input_gets_clear_errors_and_other_sessions_go_on(
    stack: tuple[str, Container], key: str
) -> None:
    base, container = stack
    settings = container.settings
    bystander = await create_session(base, key)
    async with Client.connect(bystander["ws_url"]) as other:
        await other.until_type("session_state")
        created = await create_session(base, key)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            pcm = base64.b64encode(bytes(3200)).decode()
            for raw, code in [
                ("{not json", "INVALID_JSON"),
                (json.dumps({"type": "dance"}), "UNKNOWN_MESSAGE_TYPE"),
                (json.dumps({"type": "audio_chunk", "data": "@@@", "sr": 16000}), "INVALID_AUDIO"),
                (json.dumps({"type": "audio_chunk", "data": pcm, "sr": 12345}), "UNSUPPORTED_SAMPLE_RATE"),
            ]:
                await client.ws.send(raw)
                error = await client.until_type("error")
                assert error["code"] == code and error["message"] and error["trace_id"]
            second = bytes(32000)
            for _ in range(20):  # 20 s of audio at once: faster than real time
                await client.send_audio(second)
            assert (await client.until_type("error"))["code"] == "AUDIO_FLOOD"
            await client.ws.send(b"\x00" * (settings.conversation.max_frame_bytes + 2))
            assert (await client.until_type("error"))["code"] == "FRAME_TOO_LARGE"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.until_type("never")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        root = base.replace("http", "ws")
        sid = created["session_id"]
        secret = settings.security.signing_keys()[0]  # generated into the data dir at start-up
        unknown = uuid.uuid4()
        for url, close_code in [
            (f"{root}/ws/{unknown}?token={issue_token(secret, unknown, time.time(), 60)}", 4404),
            (f"{root}/ws/{sid}?token={bystander['token']}", 4401),  # another session's token
            (f"{root}/ws/{sid}?token={issue_token(secret, uuid.UUID(sid), time.time() - 100, 10)}", 4401),
            (f"{root}/ws/{sid}", 4401),
        ]:
            async with websockets.connect(url) as refused:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await refused.recv()
            rcvd = closed.value.rcvd
            assert rcvd is not None and rcvd.code == close_code and rcvd.reason
        await other.send({"type": "text_input", "text": "Are you still there?"})
        done = await other.until_type("turn_completed")
        assert done["text"] and not done["interrupted"]
