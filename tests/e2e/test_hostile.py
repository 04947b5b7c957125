"""Hostile input on the real embedded stack (issue 15, item 6): a handful of bad frames, then a
real spoken turn (LibriVox speech through Whisper, SmolLM2 and Piper) that is answered and stored
in PostgreSQL. The full corpus runs over fakes in tests/hostile/."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from avatar.application.conversation import transcription_id_for
from avatar.bootstrap import Container, build_container
from avatar.domain.models import ConversationTurn
from avatar.presentation.app import create_app
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.e2e.test_conversation import e2e_settings
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.slow

HOSTILE: list[tuple[str | bytes, str]] = [
    ('{"type":"audio_chunk","data":"AAAA","sr":16000,"timestamp":NaN}', "INVALID_JSON"),
    ('{"type":"audio_chunk","data":"AAAA","sr":16000,"timestamp":1e400}', "INVALID_JSON"),
    ('{"type":"ping","t":Infinity}', "INVALID_JSON"),
    ("[" * 100_000 + "]" * 100_000, "INVALID_JSON"),
    ('{"type":"text_input","text":"hello\\u0000there"}', "INVALID_MESSAGE"),
    ('{"type":"interrupt","played_ms":-5}', "INVALID_MESSAGE"),
    ('{"type":"set_tts_mode","mode":"fast","voice":"' + "v" * 10_000 + '"}', "INVALID_MESSAGE"),
    ('{"type":"audio_chunk","data":"AAAA","sr":12345}', "UNSUPPORTED_SAMPLE_RATE"),
    (b"\x01\x02\x03", "INVALID_AUDIO"),
]


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[tuple[str, Container]]:
    settings = e2e_settings(tmp_path_factory.mktemp("hostile"), module_database_url, llama_server)
    settings.conversation.max_frame_bytes = 1024 * 1024
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


async def test_hostile_frames_then_a_real_spoken_turn_is_answered_and_stored(
    stack: tuple[str, Container], librivox: list[SpeechClip]
) -> None:
    base, container = stack
    clip = librivox[0]
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        for frame, code in HOSTILE:
            await client.ws.send(frame)
            error = await client.until_type("error", timeout_s=10)
            assert error["code"] == code, (frame[:80], error)
        await stream_realtime(client, clip.pcm)
        final = await client.until_type("transcription_final")
        words = set(clip.transcript.split())
        heard = set(final["text"].lower().replace(",", "").replace(".", "").split())
        assert len(words & heard) >= len(words) // 2
        completed = await client.until_type("turn_completed")
        assert completed["text"] and client.of("audio_chunk")
        assert not [e for e in client.of("error") if e["code"] not in {c for _, c in HOSTILE}]
    sid = uuid.UUID(created["session_id"])
    turn_id = uuid.UUID(completed["turn_id"])
    stored: list[ConversationTurn] = []
    transcription = None
    for _ in range(200):
        async with container.uow() as tx:
            stored = await tx.turns.list_for_session(sid)
            transcription = await tx.transcriptions.get(transcription_id_for(turn_id))
        if stored and stored[0].ai_response and transcription is not None:
            break
        await asyncio.sleep(0.1)  # the writes are asynchronous
    assert [t.turn_id for t in stored] == [turn_id]
    assert stored[0].ai_response == completed["text"]
    assert transcription is not None and transcription.text == final["text"]
