"""Speech from several distinct speakers, each with two clips of different text of >= 5 s.

- ``reader``: the LibriVox reader (a real woman's voice; clips concatenated to reach 5 s),
- ``joe``: Piper's en_US-joe-medium neural voice,
- ``espeak_m3`` / ``espeak_f2``: espeak-ng formant voices with different variants and pitch.
"""

from __future__ import annotations

import io
import subprocess
import wave
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from avatar.settings import Settings
from avatar_common.audio import encode_audio
from avatar_common.modelstore import Manifest
from tests.support.audio import SpeechClip

SENTENCES = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, "
    "and the shells she sells are surely sea shells.",
    "Yesterday we walked along the river to the old mill. The water was cold and clear, "
    "and the birds were singing in the tall trees.",
)


@dataclass(frozen=True)
class Clip:
    """One speaker's utterance: mono float samples in [-1, 1]."""

    speaker: str
    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def wav(self) -> bytes:
        return encode_audio(self.samples.astype(np.float32), self.sample_rate, "wav")

    def encoded(self, fmt: str) -> bytes:
        return encode_audio(self.samples.astype(np.float32), self.sample_rate, fmt)


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    return np.asarray(samples, dtype=np.float32), int(rate)


def _espeak(voice: str, pitch: int, text: str) -> tuple[np.ndarray, int]:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "--stdout", text], capture_output=True, check=True
    )
    return _read_wav(out.stdout)


def _piper_clips(texts: tuple[str, ...]) -> list[tuple[np.ndarray, int]]:
    from piper import PiperVoice

    settings = Settings(_env_file=None)
    model = Manifest.load(settings.models.manifest, settings.models.cache_dir).path("piper-en_US-joe-medium")
    voice = PiperVoice.load(model)
    clips = []
    for text in texts:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            voice.synthesize_wav(text, w)
        clips.append(_read_wav(buf.getvalue()))
    return clips


def _reader_clips(librivox: list[SpeechClip]) -> list[tuple[np.ndarray, int]]:
    """Two >= 5 s clips of the LibriVox reader built from disjoint utterances."""
    ordered = sorted(librivox, key=lambda c: c.duration_s, reverse=True)
    groups: list[list[SpeechClip]] = [[], []]
    for clip in ordered:  # greedy: give each utterance to the shorter group
        target = min(groups, key=lambda g: sum(c.duration_s for c in g))
        target.append(clip)
    out = []
    for group in groups:
        samples = np.concatenate([c.samples for c in group]).astype(np.float32)
        out.append((samples, group[0].sample_rate))
    return out


def make_speakers(librivox: list[SpeechClip]) -> dict[str, list[Clip]]:
    """Speaker name -> two clips of different text, each 5-30 s."""
    raw: dict[str, list[tuple[np.ndarray, int]]] = {
        "reader": _reader_clips(librivox),
        "joe": _piper_clips(SENTENCES),
        "espeak_m3": [_espeak("en-us+m3", 35, t) for t in SENTENCES],
        "espeak_f2": [_espeak("en+f2", 75, t) for t in SENTENCES],
    }
    return {name: [Clip(name, s, r) for s, r in clips] for name, clips in raw.items()}
