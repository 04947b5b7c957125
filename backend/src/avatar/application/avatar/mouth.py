"""Mouth openness and vowel shapes from the reply audio (docs/avatar-control.md, "mouth").

Openness comes from each frame's loudness (RMS in dBFS mapped between a floor and a ceiling),
smoothed with a fast attack and a slower release so the mouth neither flickers nor lags; the
smoothing state carries across the chunks of one turn. Vowels come from phoneme timing when the
TTS engine gives it (:class:`PhonemeTiming`), else frames carry no vowel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avatar.application.avatar.events import MouthFrame, Vowel

#: 50 frames per second (the issue asks for at least 30).
FRAME_MS = 20.0
FLOOR_DBFS = -50.0
CEILING_DBFS = -18.0
ATTACK = 0.7
RELEASE = 0.4

_VOWELS: dict[str, Vowel] = {}
for _chars, _vowel in (
    ("aɑæɐʌäa", Vowel.A),  # noqa: RUF001 - IPA vowels
    ("iɪyʏ", Vowel.I),  # noqa: RUF001 - IPA vowels
    ("uʊɯɨʉ", Vowel.U),  # noqa: RUF001 - IPA vowels
    ("eɛəɜɚɘœø", Vowel.E),
    ("oɔɒɤ", Vowel.O),
):
    for _c in _chars:
        _VOWELS[_c] = _vowel


def vowel_of(phoneme: str) -> Vowel | None:
    """The vowel class of an IPA phoneme (its first vowel letter), or None for a consonant."""
    for char in phoneme.lower():
        vowel = _VOWELS.get(char)
        if vowel is not None:
            return vowel
    return None


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """One phoneme of a chunk, with its position in the chunk's audio."""

    phoneme: str
    start_ms: float
    end_ms: float


class MouthAnalyzer:
    """Turns one turn's audio chunks, in order, into mouth frames."""

    def __init__(self, frame_ms: float = FRAME_MS) -> None:
        self.frame_ms = frame_ms
        self._level = 0.0

    def frames(
        self, pcm: bytes, sample_rate: int, phonemes: list[PhonemeTiming] | None = None
    ) -> list[MouthFrame]:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        per_frame = max(1, round(sample_rate * self.frame_ms / 1000.0))
        out: list[MouthFrame] = []
        for index, start in enumerate(range(0, len(samples), per_frame)):
            window = samples[start : start + per_frame]
            rms = float(np.sqrt(np.mean(window * window))) if len(window) else 0.0
            dbfs = 20.0 * math.log10(rms) if rms > 1e-9 else -120.0
            target = min(1.0, max(0.0, (dbfs - FLOOR_DBFS) / (CEILING_DBFS - FLOOR_DBFS)))
            alpha = ATTACK if target > self._level else RELEASE
            self._level += alpha * (target - self._level)
            level = round(min(1.0, max(0.0, self._level)), 3)
            offset = round(index * self.frame_ms, 1)
            vowel = _vowel_at(phonemes, offset + self.frame_ms / 2) if phonemes else None
            out.append(MouthFrame(offset_ms=offset, open=level, vowel=vowel if level > 0.05 else None))
        return out


def _vowel_at(phonemes: list[PhonemeTiming], at_ms: float) -> Vowel | None:
    for p in phonemes:
        if p.start_ms <= at_ms < p.end_ms:
            return vowel_of(p.phoneme)
    return None
