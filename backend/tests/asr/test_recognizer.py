"""Both placements of the recognizer port against the real engine and real speech."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import numpy as np
import pytest

from avatar.application.ports.asr import (
    RecognitionStream,
    SpeechRecognizer,
    TranscriptEvent,
    TranscriptEventKind,
)
from avatar.domain.errors import CapacityError, DependencyError, InvalidInputError
from avatar.domain.models import AudioChunk
from avatar.infrastructure.asr import build_recognizer, service_config
from avatar.settings import Placement
from backend.tests.asr.conftest import asr_settings
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.slow

SILENCE_1S = b"\x00\x00" * 16000


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]+", " ", text.lower().replace("-", " ")).split())


async def push(stream: RecognitionStream, pcm: bytes, rate: int = 16000, chunk_ms: int = 200) -> None:
    step = rate * chunk_ms // 1000 * 2
    for i, start in enumerate(range(0, len(pcm), step)):
        await stream.push_audio(AudioChunk(pcm[start : start + step], rate, sequence=i))
        await asyncio.sleep(0)


async def until(events: asyncio.Queue[TranscriptEvent], *kinds: TranscriptEventKind) -> list[TranscriptEvent]:
    """Collect events until one of ``kinds`` arrives (inclusive)."""
    seen = []
    while True:
        event = await asyncio.wait_for(events.get(), timeout=120)
        seen.append(event)
        if event.kind in kinds:
            return seen


@contextlib.asynccontextmanager
async def listening(
    recognizer: SpeechRecognizer,
) -> AsyncIterator[tuple[RecognitionStream, asyncio.Queue[TranscriptEvent]]]:
    stream = await recognizer.open_stream(language="en")
    queue: asyncio.Queue[TranscriptEvent] = asyncio.Queue()

    async def pump() -> None:
        async for event in stream.events():
            queue.put_nowait(event)

    task = asyncio.create_task(pump())
    try:
        yield stream, queue
    finally:
        await stream.aclose()
        await asyncio.wait_for(task, timeout=30)


async def check_push_to_talk_session(recognizer: SpeechRecognizer, librivox: list[SpeechClip]) -> None:
    first, second = librivox[1], librivox[4]
    async with listening(recognizer) as (stream, events):
        # Push-to-talk: release right after speaking, before the VAD endpoint.
        await push(stream, first.pcm)
        await stream.end_input()
        got = await until(events, TranscriptEventKind.FINAL, TranscriptEventKind.ERROR)
        assert got[0].kind is TranscriptEventKind.SPEECH_STARTED
        final = got[-1]
        assert final.kind is TranscriptEventKind.FINAL and final.transcription is not None
        assert words(final.transcription.text) == words(first.transcript)
        assert final.transcription.is_final and final.transcription.language == "en"
        assert final.transcription.words and 0.0 < final.transcription.confidence <= 1.0
        # The utterance audio is 16 kHz PCM16 covering the speech.
        assert len(final.utterance_pcm) / 32000 == pytest.approx(first.duration_s, abs=0.6)
        # Releasing again with nothing said: a NO_SPEECH error, and the stream goes on.
        await push(stream, SILENCE_1S)
        await stream.end_input()
        (error,) = await until(events, TranscriptEventKind.ERROR)
        assert error.error_code == "NO_SPEECH"
        # Hands-free: the VAD endpoint ends the next utterance by itself; 8 kHz is resampled.
        pcm_8k = np.frombuffer(second.pcm, "<i2")[::2].tobytes()
        await push(stream, pcm_8k + SILENCE_1S[:16000], rate=8000)
        got = await until(events, TranscriptEventKind.FINAL)
        assert got[-1].transcription is not None
        assert words(got[-1].transcription.text) == words(second.transcript)


async def test_embedded_stream(embedded_recognizer: SpeechRecognizer, librivox: list[SpeechClip]) -> None:
    await check_push_to_talk_session(embedded_recognizer, librivox)


async def test_embedded_transcribe_and_bad_input(
    embedded_recognizer: SpeechRecognizer, librivox: list[SpeechClip]
) -> None:
    clip = librivox[4]
    result = await embedded_recognizer.transcribe(clip.pcm, clip.sample_rate, language="en")
    assert result.is_final and words(result.text) == words(clip.transcript)
    with pytest.raises(InvalidInputError) as empty:
        await embedded_recognizer.transcribe(b"", 16000)
    assert empty.value.code == "EMPTY_AUDIO"
    with pytest.raises(InvalidInputError) as silent:
        await embedded_recognizer.transcribe(SILENCE_1S * 2, 16000)
    assert silent.value.code == "NO_SPEECH"
    with pytest.raises(InvalidInputError) as rate:
        await embedded_recognizer.transcribe(SILENCE_1S, 1000)
    assert rate.value.code == "UNSUPPORTED_SAMPLE_RATE"
    health = await embedded_recognizer.health()
    assert health.ok and "embedded" in health.detail


async def test_remote_stream_and_transcribe(asr_service_url: str, librivox: list[SpeechClip]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        remote = await build_recognizer(asr_settings(placement=Placement.REMOTE, url=asr_service_url), stack)
        assert (await remote.health()).ok
        await check_push_to_talk_session(remote, librivox)
        clip = librivox[1]
        result = await remote.transcribe(clip.pcm, clip.sample_rate, language="en")
        assert words(result.text) == words(clip.transcript) and result.language == "en"
        with pytest.raises(InvalidInputError) as silent:
            await remote.transcribe(SILENCE_1S * 2, 16000)
        assert silent.value.code == "NO_SPEECH"


async def test_the_keyed_remote_service_refuses_a_recognizer_without_its_key(asr_service_url: str) -> None:
    # A key mismatch is the deployment's mistake: a DependencyError naming the setting, for the
    # stream and for whole files alike (docs/security.md, "Service keys").
    settings = asr_settings(placement=Placement.REMOTE, url=asr_service_url)
    settings.security.service_key = None
    async with contextlib.AsyncExitStack() as stack:
        remote = await build_recognizer(settings, stack)
        with pytest.raises(DependencyError) as stream:
            await remote.open_stream()
        with pytest.raises(DependencyError) as whole:
            await remote.transcribe(SILENCE_1S, 16000)
        for refused in (stream.value, whole.value):
            assert refused.code == "SERVICE_KEY_REFUSED" and "AVATAR_SECURITY__SERVICE_KEY" in str(refused)
        assert (await remote.health()).ok  # health stays open for probes


async def test_remote_unreachable_is_a_dependency_error() -> None:
    async with contextlib.AsyncExitStack() as stack:
        remote = await build_recognizer(
            asr_settings(placement=Placement.REMOTE, url="http://127.0.0.1:9"), stack
        )
        health = await remote.health()
        assert not health.ok
        with pytest.raises(DependencyError):
            await remote.open_stream()
        with pytest.raises(DependencyError):
            await remote.transcribe(SILENCE_1S, 16000)


def test_settings_map_onto_the_service_config() -> None:
    cfg = service_config(asr_settings(min_silence_ms=700, language="ko", max_queue=3))
    assert cfg.model.endswith("whisper-base") and cfg.vad_model.name == "silero_vad.onnx"
    assert (cfg.min_silence_ms, cfg.language, cfg.max_queue) == (700, "ko", 3)
    timing = service_config(asr_settings(speculative_silence_ms=96, complete_silence_ms=250))
    assert (timing.speculative_silence_ms, timing.complete_silence_ms) == (96, 250)
    assert service_config(asr_settings()).speculative_silence_ms == 64  # the service's own default
    assert service_config(asr_settings(model="large-v3-turbo", device="cuda")).model == "large-v3-turbo"
    with pytest.raises(InvalidInputError):
        service_config(asr_settings(model="no-such-model"))


async def test_stream_limit_maps_to_capacity_error(librivox: list[SpeechClip]) -> None:
    settings = asr_settings()
    settings.conversation.max_sessions = 1  # the service allows max(2 x sessions, 4) streams
    async with contextlib.AsyncExitStack() as stack:
        recognizer = await build_recognizer(settings, stack)
        streams = [await recognizer.open_stream() for _ in range(4)]
        with pytest.raises(CapacityError):
            await recognizer.open_stream()
        for stream in streams:
            await stream.aclose()
