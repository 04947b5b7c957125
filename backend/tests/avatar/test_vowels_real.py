"""Vowel shapes from the real Piper voice's phoneme timing (the embedded fast tier), through the
avatar hub: mouth frames carry A/I/U/E/O where the engine says those vowels sound."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from avatar.application.avatar import AvatarHub, MouthEvent, load_pose_config
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.domain.models import AudioChunk, Emotion
from avatar.infrastructure.tts import build_synthesizers
from avatar.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module")
async def fast_tts(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SpeechSynthesizer]:
    settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("tts"))
    settings.tts.idle_unload_s = 0
    async with contextlib.AsyncExitStack() as stack:
        fast, _ = await build_synthesizers(settings, stack)
        yield fast


async def _chunks(tts: SpeechSynthesizer, request: SynthesisRequest) -> list[AudioChunk]:
    stream = await tts.synthesize(request)
    chunks = [c async for c in stream.chunks()]
    await stream.aclose()
    return chunks


@pytest.mark.parametrize("pitch", [1.0, 1.2])
async def test_piper_chunks_carry_phoneme_timing(fast_tts: SpeechSynthesizer, pitch: float) -> None:
    chunks = await _chunks(fast_tts, SynthesisRequest("Hello there. How are you today?", pitch=pitch))
    assert len(chunks) >= 2
    for chunk in chunks:
        assert chunk.phonemes, "Piper gave no phoneme timing"
        starts = [p.start_ms for p in chunk.phonemes]
        assert starts == sorted(starts) and chunk.phonemes[0].start_ms == 0.0
        # The timing covers the chunk's audio (varispeed moves it with the audio).
        assert chunk.phonemes[-1].end_ms == pytest.approx(chunk.duration_ms, rel=0.05, abs=30)


async def test_mouth_frames_get_vowels_from_the_phonemes(fast_tts: SpeechSynthesizer) -> None:
    hub = AvatarHub(load_pose_config(REPO_ROOT / "config" / "avatar_poses.toml"))
    sid, turn = uuid.uuid4(), uuid.uuid4()
    sub = hub.subscribe(sid)
    chunks = await _chunks(fast_tts, SynthesisRequest("Oh, I see. You are so cool!", emotion=Emotion.HAPPY))
    hub.phase_changed(sid, "speaking")
    for seq, chunk in enumerate(chunks):
        hub.reply_audio(sid, turn, seq, chunk)
    mouths: list[MouthEvent] = []
    while len(mouths) < len(chunks):
        event = await asyncio.wait_for(sub.get(), 5)
        if isinstance(event, MouthEvent):
            mouths.append(event)
    assert all(m.source == "phonemes" for m in mouths)
    frames = [f for m in mouths for f in m.frames]
    vowels = {f.vowel for f in frames if f.vowel is not None}
    assert len(vowels) >= 3, vowels
    # Vowels only where the mouth is open; silence has none.
    assert all(f.open > 0.05 for f in frames if f.vowel is not None)
    assert sum(f.vowel is not None for f in frames) > len(frames) // 6
    await hub.aclose()
