"""Three people talk at the same moment on the embedded stack with real models: Whisper (embedded),
the llama.cpp server that ``avatar up`` starts (SmolLM2), Piper, PostgreSQL and a filesystem object
store, behind a real uvicorn server. Each session streams a different LibriVox clip at real-time
pace, all three at once. The recognizer, the model and the voice serve the sessions fairly
(docs/architecture.md, "Many sessions on one box"): every utterance is transcribed, every session
gets a real model reply with audio, and nobody is told ``BUSY`` or answered by the canned line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from avatar.application.brain import load_persona
from avatar.application.brain.reply_parser import strip_markup
from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from avatar.settings import Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.slow

#: Generous bounds: this suite runs on small, shared machines; the waits are there so a stuck
#: turn fails the test instead of hanging it, never to check speed.
TURN_TIMEOUT_S = 600.0


def crowd_settings(tmp: Path, database_url: str) -> Settings:
    settings = Settings(environment="test")
    settings.data_dir = tmp
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(database_url)
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.placement = Placement.EMBEDDED  # the llama.cpp server children, one slot
    settings.llm.embedded_servers = 3  # one per session
    settings.llm.port = 0
    settings.llm.n_ctx = 2048
    settings.llm.max_tokens = 40
    settings.llm.embedded_first_token_timeout_s = 120.0
    settings.llm.queue_timeout_s = 300.0
    settings.asr.language = "en"
    settings.asr.queue_timeout_s = 300.0
    settings.tts.queue_timeout_s = 300.0
    settings.conversation.max_sessions = 6
    settings.conversation.max_sessions_per_user = 6
    return settings


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> AsyncIterator[tuple[str, Container]]:
    settings = crowd_settings(tmp_path_factory.mktemp("crowd"), module_database_url)
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()} - {""}


async def speak(base: str, clip: SpeechClip) -> tuple[str, list[dict[str, Any]]]:
    """One session: stream the clip, wait for every reply it starts; the session id and messages."""
    created = await create_session(base)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await stream_realtime(client, clip.pcm)
        await client.until_type("turn_completed", TURN_TIMEOUT_S)
        # a clip the recognizer cut in two starts a second turn: wait for every turn it started
        while len(client.of("turn_completed")) < len(client.of("turn_started")):
            await client.until_type("turn_completed", TURN_TIMEOUT_S)
        return str(created["session_id"]), client.messages


async def test_three_sessions_talking_at_once_all_get_real_replies(
    stack: tuple[str, Container], librivox: list[SpeechClip]
) -> None:
    base, container = stack
    persona = load_persona(container.settings.llm.persona_file)
    fallbacks = {strip_markup(text).strip() for text in persona.fallback_replies.values()}
    clips = [librivox[1], librivox[2], librivox[4]]

    results = await asyncio.gather(*(speak(base, clip) for clip in clips))

    for (_sid, messages), clip in zip(results, clips, strict=True):
        kinds = [m["type"] for m in messages]
        notices = [m for m in messages if m["type"] == "notice"]
        errors = [m for m in messages if m["type"] == "error"]
        assert not errors, errors
        assert not [n for n in notices if n["code"] in ("BUSY", "LLM_UNAVAILABLE", "EMPTY_REPLY")], notices
        # every utterance was transcribed: the finals together say the clip (nothing dropped)
        finals = [m["text"] for m in messages if m["type"] == "transcription_final"]
        heard = words(" ".join(finals))
        said = words(clip.transcript)
        assert len(said & heard) >= 0.6 * len(said), (finals, clip.transcript)
        completed = [m for m in messages if m["type"] == "turn_completed"]
        assert completed and kinds.count("turn_started") == len(completed)
        for turn in completed:
            # a real model reply, spoken: not the persona's canned line, not interrupted
            assert turn["text"].strip() and turn["text"].strip() not in fallbacks, turn
            assert not turn["interrupted"]
            assert [m for m in messages if m["type"] == "audio_chunk" and m["turn_id"] == turn["turn_id"]]

    asr = await container.recognizer.health()
    assert asr.extra["finals_busy"] == 0  # no utterance was given up by the recognizer

    # every turn of every session is stored
    for sid, messages in results:
        turn_ids = {uuid.UUID(m["turn_id"]) for m in messages if m["type"] == "turn_completed"}
        async with asyncio.timeout(60):
            while True:
                async with container.uow() as tx:
                    stored = await tx.turns.list_for_session(uuid.UUID(sid))
                if {t.turn_id for t in stored} >= turn_ids:
                    break
                await asyncio.sleep(0.2)
