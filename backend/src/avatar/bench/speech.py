"""Real speech for the benchmarks (and the tests): the LibriVox utterances of Debian's
``pocketsphinx-testdata`` package, with their reference transcripts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class SpeechClip:
    """One real utterance: 16 kHz mono PCM16 and its reference transcript (lower case)."""

    name: str
    path: Path
    transcript: str
    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate

    @property
    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, dtype="<i2").astype(np.float32) / 32768.0


def load_librivox() -> list[SpeechClip]:
    """All LibriVox clips with transcripts; empty when the package is not installed."""
    listing = LIBRIVOX_DIR / "transcription"
    if not listing.exists():
        return []
    clips = []
    for line in listing.read_text().splitlines():
        m = re.match(r"<s>\s*(.*?)\s*</s>\s*\((.+)\)", line.strip())
        if not m:
            continue
        text, name = m.group(1), m.group(2)
        path = LIBRIVOX_DIR / f"{name}.wav"
        data, rate = sf.read(path, dtype="int16")
        clips.append(SpeechClip(name, path, text, np.asarray(data).tobytes(), int(rate)))
    return clips
