"""Piper (VITS, ONNX) with the packaged en_US-joe-medium voice: the embedded fast tier."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from avatar_tts.engine import AlignedAudio, PhonemeSpan, Reference, Tier, Voice
from avatar_tts.errors import EngineUnavailableError


class PiperEngine:
    """One Piper voice model; ``synthesize`` yields one array per sentence Piper finds."""

    name = "piper"
    tier = Tier.FAST
    can_clone = False
    estimate_mb = 120.0

    def __init__(self, model_path: Path, *, language: str = "en", voice_name: str | None = None) -> None:
        self._model_path = model_path
        self._language = language
        self._voice_name = voice_name or model_path.name.removesuffix(".onnx")
        self._voice: Any = None
        self._lock = threading.Lock()
        self._sample_rate = self._read_sample_rate()

    def _read_sample_rate(self) -> int:
        import json

        config = Path(f"{self._model_path}.json")
        if not config.exists():
            return 22050
        return int(json.loads(config.read_text(encoding="utf-8"))["audio"]["sample_rate"])

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    def voices(self) -> list[Voice]:
        return [Voice(f"piper:{self._voice_name}", self._voice_name, self.name, (self._language,), self.tier)]

    def load(self) -> None:
        if not self._model_path.exists():
            raise EngineUnavailableError(f"Piper voice model not found at {self._model_path}")
        from piper import PiperVoice

        # Phoneme timing for the avatar's vowels: the model is patched in memory to expose each
        # phoneme's sample count (needs the onnx package; without it there is simply no timing).
        self._voice = PiperVoice.load(str(self._model_path), include_alignments=True)

    def unload(self) -> None:
        self._voice = None

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[AlignedAudio]:
        from piper import SynthesisConfig

        model = self._voice
        if model is None:
            raise EngineUnavailableError("the Piper model is not loaded")
        config = SynthesisConfig(length_scale=1.0 / speed)
        # One ONNX session per voice: piper's phonemizer (espeak) holds global state.
        with self._lock:
            for chunk in model.synthesize(text, config, include_alignments=True):
                audio = np.asarray(chunk.audio_float_array, dtype=np.float32)
                yield AlignedAudio(audio, _spans(chunk.phoneme_alignments, self._sample_rate))


def _spans(alignments: list[Any] | None, sample_rate: int) -> tuple[PhonemeSpan, ...]:
    """Piper's per-phoneme sample counts as start/end times."""
    spans: list[PhonemeSpan] = []
    position = 0
    for item in alignments or ():
        start = position
        position += int(item.num_samples)
        if item.phoneme.strip():
            spans.append(PhonemeSpan(item.phoneme, start / sample_rate, position / sample_rate))
    return tuple(spans)
