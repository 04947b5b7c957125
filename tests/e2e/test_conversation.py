"""End to end on the embedded stack with real models: Whisper, SmolLM2 (llama.cpp server), Piper,
Kokoro, PostgreSQL + pgvector and a filesystem object store, behind a real uvicorn server, driven by
a real WebSocket client streaming LibriVox speech at real-time pace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from avatar.settings import Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.support.audio import SpeechClip

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
async def stack(tmp_path_factory: pytest.TempPathFactory, module_database_url: str,
                llama_server: str) -> AsyncIterator[tuple[str, Container]]:
    settings = e2e_settings(tmp_path_factory.mktemp("e2e"), module_database_url, llama_server)
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


async def test_a_spoken_turn_end_to_end(stack: tuple[str, Container], librivox: list[SpeechClip]) -> None:
    base, container = stack
    clip = librivox[0]
    created = await create_session(base)
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
    async with httpx.AsyncClient(base_url=base) as http:
        turns: list[dict[str, object]] = []
        for _ in range(200):
            turns = (await http.get(f"/api/v1/sessions/{sid}/turns")).json()["turns"]
            if turns and {a["mode"] for a in turns[0]["audio"]} == {"fast", "hq"}:  # type: ignore[index]
                break
            await asyncio.sleep(0.1)
    (turn,) = turns
    assert turn["user_input"] == final["text"] and turn["ai_response"] == completed["text"]
    assert turn["transcription"]["audio_url"]  # type: ignore[index]
    keys = await container.object_store.list_keys("")
    assert any(k.startswith("raw_inputs/") and f"{sid}_{turn_id}_" in k for k in keys)
    assert any(k.startswith(f"synthesized/fast/{turn_id}_fast_") for k in keys)
    assert any(k.startswith(f"synthesized/hq/{turn_id}_hq_") for k in keys)


async def test_barge_in_end_to_end(stack: tuple[str, Container], librivox: list[SpeechClip]) -> None:
    base, _ = stack
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        story = "Tell me a long story about a dragon and a princess."
        await client.send({"type": "text_input", "text": story})
        await client.until_type("audio_chunk")
        await stream_realtime(client, librivox[1].pcm)
        interrupted = await client.until_type("interrupted")
        assert isinstance(interrupted["heard_text"], str)
        answered = await client.until(lambda m: m["type"] == "turn_completed" and not m["interrupted"]
                                      and m["turn_id"] != interrupted["turn_id"])
        assert answered["text"]


async def test_two_sessions_at_once(stack: tuple[str, Container], librivox: list[SpeechClip]) -> None:
    base, _ = stack

    async def converse(clip: SpeechClip) -> str:
        created = await create_session(base)
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await stream_realtime(client, clip.pcm)
            done = await client.until_type("turn_completed")
            assert client.of("audio_chunk")
            return str(done["text"])

    replies = await asyncio.gather(converse(librivox[2]), converse(librivox[3]))
    assert all(replies)


async def test_reconnect_resumes_history(stack: tuple[str, Container]) -> None:
    base, _ = stack
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "text_input", "text": "My name is Alice."})
        await client.until_type("turn_completed")
    async with Client.connect(created["ws_url"]) as client:
        state = await client.until_type("session_state")
        assert state["resumed"] is True and state["turns"] == 1
        await client.send({"type": "text_input", "text": "What is my name?"})
        done = await client.until_type("turn_completed")
        started = client.of("turn_started")
        assert started[-1]["turn_number"] == 2 and done["text"]
