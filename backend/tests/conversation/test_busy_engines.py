"""When the recognizer or the voice is too busy with other conversations, the session is told with a
``notice`` ``BUSY`` (docs/protocol.md), never a silent drop or a bare failure; the voice is the real
embedded Piper synthesizer, its clauses waiting in the slots every session shares, keyed by session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from avatar.application.ports.asr import TranscriptEvent, TranscriptEventKind
from avatar.infrastructure.tts import EmbeddedSynthesizer, build_synthesizers
from avatar.settings import Settings
from backend.tests.conversation.test_pipeline import Rig, is_type, kinds, tone

pytestmark = pytest.mark.slow


async def real_voice(
    tmp: Path, queue_timeout_s: float, stack: contextlib.AsyncExitStack
) -> EmbeddedSynthesizer:
    settings = Settings(_env_file=None, data_dir=tmp)
    settings.tts.idle_unload_s = 0
    settings.tts.hq_enabled = False
    settings.tts.queue_timeout_s = queue_timeout_s
    fast, _hq = await build_synthesizers(settings, stack)
    assert isinstance(fast, EmbeddedSynthesizer)
    return fast


@pytest_asyncio.fixture(scope="module")
async def voices(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[EmbeddedSynthesizer, ...]]:
    """A patient voice (clauses wait up to a minute) and an impatient one (50 ms)."""
    async with contextlib.AsyncExitStack() as stack:
        patient = await real_voice(tmp_path_factory.mktemp("patient"), 60.0, stack)
        impatient = await real_voice(tmp_path_factory.mktemp("impatient"), 0.05, stack)
        yield patient, impatient


async def test_an_utterance_the_recognizer_could_not_take_in_time_is_a_busy_notice() -> None:
    rig = Rig()
    session = await rig.session()
    rig.recognizer.streams[0].report(
        TranscriptEvent(
            TranscriptEventKind.ERROR,
            error_code="BUSY",
            message="the speech recognizer was busy with other conversations; please say it again",
        )
    )
    messages = await rig.until(session, is_type("notice"))
    notice = messages[-1]
    assert notice["code"] == "BUSY" and "say it again" in notice["message"]
    assert "error" not in kinds(messages)
    # the session goes on: the next utterance is heard and answered
    await session.push_audio(tone(1000))
    messages = await rig.until(session, is_type("turn_completed"))
    assert "transcription_final" in kinds(messages) and "error" not in kinds(messages)
    await session.aclose()


async def test_clauses_wait_for_the_voice_in_their_sessions_line(
    voices: tuple[EmbeddedSynthesizer, ...],
) -> None:
    patient, _ = voices
    rig = Rig()
    rig.deps = replace(rig.deps, fast_tts=patient)
    session = await rig.session()
    for _ in range(patient.slots.size):  # other conversations hold every slot of the voice
        assert await patient.slots.acquire(1.0, "another conversation")
    await session.text_input("are you there?")
    async with asyncio.timeout(60):
        while True:  # the reply's first clause joins the line under this session's id
            if patient.slots.waiting_for(session.session_id):
                break
            await asyncio.sleep(0.01)
    for _ in range(patient.slots.size):
        patient.slots.release()
    messages = await rig.until(session, is_type("turn_completed"))
    assert "audio_chunk" in kinds(messages)
    assert not [m for m in messages if m["type"] in ("notice", "error")]
    await session.aclose()


async def test_a_reply_the_voice_could_not_speak_in_time_is_a_busy_notice(
    voices: tuple[EmbeddedSynthesizer, ...],
) -> None:
    _, impatient = voices
    rig = Rig()
    rig.deps = replace(rig.deps, fast_tts=impatient)
    session = await rig.session()
    for _ in range(impatient.slots.size):
        assert await impatient.slots.acquire(1.0, "another conversation")
    try:
        await session.text_input("are you there?")
        messages = await rig.until(session, is_type("turn_completed"))
    finally:
        for _ in range(impatient.slots.size):
            impatient.slots.release()
    started = next(m for m in messages if m["type"] == "turn_started")
    completed = messages[-1]
    notices = [m for m in messages if m["type"] == "notice"]
    assert [n["code"] for n in notices] == ["BUSY"]
    assert notices[0]["turn_id"] == started["turn_id"] and "voice is busy" in notices[0]["message"]
    assert "error" not in kinds(messages)  # said as BUSY, not as a synthesis failure
    assert completed["text"]  # the reply's text stands
    await session.aclose()
