"""No accuracy lost to our own plumbing: on long read speech (10-45 s of LibriVox with pauses) the
service's upload endpoint and the stream's joined finals score within 1 WER point of faster-whisper
decoding the same file directly."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import openai
import pytest
import pytest_asyncio

from avatar_asr.config import ASRConfig
from avatar_asr.engine import WhisperEngine
from avatar_asr.service import ASRService
from avatar_asr.stream import EventKind, StreamEvent
from avatar_common.audio import encode_wav
from services.asr.tests.conftest import RunningServer
from services.asr.tests.helpers import asr_config, pcm16, silence, wer
from tests.support.audio import SpeechClip

pytestmark = pytest.mark.slow

RATE = 16000
#: Faster than real time, as a recording played into the stream would never be in production.
STREAM_SPEED = 4.0


@dataclass(frozen=True)
class Recording:
    name: str
    audio: np.ndarray
    transcript: str

    @property
    def wav(self) -> bytes:
        return encode_wav(self.audio, RATE)


def phrases(samples: np.ndarray, *, min_piece_s: float = 0.8, min_pause_ms: int = 60) -> list[np.ndarray]:
    """A clip cut at its own pauses between words (>= ``min_pause_ms`` of low energy)."""
    hop = RATE // 50
    n = len(samples) // hop
    rms = np.sqrt((samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
    loud = float(np.median(rms[rms > np.percentile(rms, 50)]))
    quiet = rms < 0.12 * loud
    cuts: list[int] = []
    i = 0
    while i < n:
        j = i
        while j < n and quiet[j]:
            j += 1
        if j - i >= min_pause_ms // 20:
            cuts.append((i + j) // 2 * hop)
        i = max(j, i + 1)
    pieces, last = [], 0
    for cut in cuts:
        if (cut - last) / RATE >= min_piece_s and (len(samples) - cut) / RATE >= min_piece_s:
            pieces.append(samples[last:cut])
            last = cut
    pieces.append(samples[last:])
    return pieces


def recordings(clips: list[SpeechClip]) -> list[Recording]:
    """Two long recordings of the five LibriVox utterances, each 10-45 s:

    * ``phrases``: read slowly, a pause of 0.45-0.9 s between phrases (the stream's endpoint cuts
      most of them; the VAD sees 11 speech regions);
    * ``long-pauses``: whole sentences with pauses of 0.6-2.5 s (the upload path shortens the longer
      ones).
    """
    rng = np.random.default_rng(3)
    slow = [silence(0.6)]
    for clip in clips:
        for piece in phrases(clip.samples):
            slow += [piece, silence(float(rng.uniform(0.45, 0.9)))]
    spaced = [silence(0.4)]
    for clip, pause in zip(clips, (0.6, 2.5, 1.2, 1.8, 1.0), strict=True):
        spaced += [clip.samples, silence(pause)]
    transcript = " ".join(c.transcript for c in clips)
    out = [
        Recording("phrases", np.concatenate(slow).astype(np.float32), transcript),
        Recording("long-pauses", np.concatenate(spaced).astype(np.float32), transcript),
    ]
    for rec in out:
        assert 10.0 <= len(rec.audio) / RATE <= 45.0
    return out


@pytest.fixture(scope="module")
def long_recordings(librivox: list[SpeechClip]) -> list[Recording]:
    return recordings(librivox)


@pytest.fixture(scope="module")
def direct_texts(long_recordings: list[Recording]) -> Iterator[list[str]]:
    """faster-whisper on the same WAV files, directly (its defaults; our model, beam and language)."""
    from faster_whisper import WhisperModel

    cfg = asr_config()
    model = WhisperModel(cfg.model, device=cfg.device, compute_type=cfg.compute_type, cpu_threads=2)
    texts = []
    for rec in long_recordings:
        segments, _info = model.transcribe(io.BytesIO(rec.wav), language="en", beam_size=cfg.beam_size)
        texts.append(" ".join(s.text.strip() for s in segments))
    yield texts
    del model


@pytest_asyncio.fixture(scope="module")
async def roomy_service() -> AsyncIterator[ASRService]:
    """A service whose queue never refuses: the stream is fed faster than it can decode."""
    cfg: ASRConfig = asr_config(max_queue=64)
    service = ASRService(cfg, engine=WhisperEngine(cfg))
    await service.start(warm_up=False)
    yield service
    service.close()


def _report(label: str, direct: float, ours: float) -> None:
    print(f"\n{label}: WER direct faster-whisper {direct:.4f}, ours {ours:.4f}")


def test_upload_wer_is_within_one_point_of_a_direct_decode(
    asr_server: RunningServer, long_recordings: list[Recording], direct_texts: list[str]
) -> None:
    oai = openai.OpenAI(base_url=f"{asr_server.url}/v1", api_key="sk-local", max_retries=0, timeout=300)
    texts = []
    for rec in long_recordings:
        result = oai.audio.transcriptions.create(
            model="whisper-base", file=(f"{rec.name}.wav", rec.wav, "audio/wav"), language="en"
        )
        texts.append(result.text)
    references = [r.transcript for r in long_recordings]
    for rec, ours, direct in zip(long_recordings, texts, direct_texts, strict=True):
        _report(f"upload {rec.name}", wer([rec.transcript], [direct]), wer([rec.transcript], [ours]))
    direct_wer, our_wer = wer(references, direct_texts), wer(references, texts)
    _report("upload, all", direct_wer, our_wer)
    assert our_wer <= direct_wer + 0.01, f"{texts} vs direct {direct_texts}"


async def _stream(service: ASRService, audio: np.ndarray) -> list[StreamEvent]:
    session = service.open_stream(language="en")
    events: list[StreamEvent] = []

    async def collect() -> None:
        async for event in session.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    pcm = pcm16(audio)
    step = RATE // 10 * 2  # 100 ms chunks
    for start in range(0, len(pcm), step):
        await session.push_pcm(pcm[start : start + step])
        await asyncio.sleep(0.1 / STREAM_SPEED)
    await session.end_input()
    await asyncio.wait_for(collector, timeout=600)
    await session.aclose()
    return events


async def test_stream_finals_wer_is_within_one_point_of_a_direct_decode(
    roomy_service: ASRService, long_recordings: list[Recording], direct_texts: list[str]
) -> None:
    texts = []
    for rec in long_recordings:
        events = await _stream(roomy_service, rec.audio)
        assert [e.code for e in events if e.kind is EventKind.ERROR] == []
        finals = [e for e in events if e.kind is EventKind.FINAL and e.recognition is not None]
        assert len(finals) >= 4  # the pauses cut it into utterances
        for event in finals:
            assert event.recognition is not None and event.recognition.words
            first, last = event.recognition.words[0], event.recognition.words[-1]
            duration = (event.audio_end_ms - event.audio_start_ms) / 1000
            assert 0.0 <= first.start <= last.end <= duration + 0.05  # times are the utterance's own
        texts.append(" ".join(e.recognition.text for e in finals if e.recognition is not None))
    references = [r.transcript for r in long_recordings]
    for rec, ours, direct in zip(long_recordings, texts, direct_texts, strict=True):
        _report(f"stream {rec.name}", wer([rec.transcript], [direct]), wer([rec.transcript], [ours]))
    direct_wer, our_wer = wer(references, direct_texts), wer(references, texts)
    _report("stream, all", direct_wer, our_wer)
    assert our_wer <= direct_wer + 0.01, f"{texts} vs direct {direct_texts}"
