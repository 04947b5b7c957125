"""Feeding audio into a recognition stream and collecting what it reports."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import jiwer
import numpy as np

from avatar_asr.config import ASRConfig
from avatar_asr.stream import EventKind, RecognitionSession, StreamEvent
from avatar_asr.vad import packaged_vad_model
from avatar_common.modelstore import Manifest


def pcm16(samples: np.ndarray) -> bytes:
    return bytes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def noise(seconds: float, level: float, rate: int = 16000, seed: int = 7) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * level).astype(np.float32)


async def run_stream(
    session: RecognitionSession,
    pcm: bytes,
    *,
    sample_rate: int = 16000,
    channels: int = 1,
    chunk_ms: int = 200,
    realtime: bool = False,
) -> list[StreamEvent]:
    """Push ``pcm`` in chunks (at real-time pace if asked), end the input, return every event."""
    events: list[StreamEvent] = []

    async def collect() -> None:
        async for event in session.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    step = int(sample_rate * chunk_ms / 1000) * 2 * channels
    for start in range(0, len(pcm), step):
        await session.push_pcm(pcm[start : start + step], sample_rate, channels)
        if realtime:
            await asyncio.sleep(chunk_ms / 1000)
        else:
            await asyncio.sleep(0)
    await session.end_input()
    await asyncio.wait_for(collector, timeout=300)
    await session.aclose()
    return events


def finals(events: list[StreamEvent]) -> list[StreamEvent]:
    return [e for e in events if e.kind is EventKind.FINAL]


def kinds(events: list[StreamEvent]) -> list[EventKind]:
    return [e.kind for e in events]


REPO = Path(__file__).resolve().parents[3]


def asr_config(**overrides: object) -> ASRConfig:
    manifest = Manifest.load(REPO / "models" / "manifest.json", REPO / "models" / "cache")
    values: dict[str, object] = {
        "model": str(manifest.artifact_dir("whisper-base")),
        "vad_model": manifest.path("silero-vad"),
        "cpu_threads": 2,
    }
    values.update(overrides)
    assert packaged_vad_model() == values["vad_model"]
    return ASRConfig(**values)  # type: ignore[arg-type]


def normalize_words(text: str) -> str:
    """Lower case, no punctuation, Whisper's abbreviations spelled out (as the references are)."""
    t = text.lower().replace("-", " ")
    t = re.sub(r"\bmr\b\.?", "mister", t)
    t = re.sub(r"\bmrs\b\.?", "missus", t)
    t = re.sub(r"[^a-z' ]+", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def wer(references: list[str], hypotheses: list[str]) -> float:
    return float(
        jiwer.wer([normalize_words(r) for r in references], [normalize_words(h) for h in hypotheses])
    )
