"""Pick the stock voice closest to a voice profile when the engine cannot clone.

Each stock voice's speaker embedding is computed lazily (synthesize a sample sentence, embed it
with resemblyzer's GE2E encoder, the same 256-dim space as the profiles) and cached in memory
and, when a cache directory is given, on disk.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from avatar_tts.engine import FloatAudio, Voice

Embedder = Callable[[FloatAudio, int], FloatAudio]
SampleSynth = Callable[[Voice], tuple[FloatAudio, int]]

SAMPLE_TEXT = {
    "en": "The quick brown fox jumps over the lazy dog.",
    "ja": "今日はとても良い天気ですね。少し散歩に行きましょう。",
    "ko": "오늘은 날씨가 정말 좋네요. 잠깐 산책하러 갈까요?",
    "zh": "今天天气很好\uff0c我们一起去公园散步吧。",
}


class ResemblyzerEmbedder:
    """GE2E speaker embedding (resemblyzer), loaded on first use."""

    def __init__(self) -> None:
        self._encoder: Any = None
        self._lock = threading.Lock()

    def __call__(self, samples: FloatAudio, sample_rate: int) -> FloatAudio:
        from avatar_common.audio import resample

        with self._lock:
            if self._encoder is None:
                with warnings.catch_warnings():
                    # resemblyzer imports scipy and pkg_resources names deprecated upstream
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.simplefilter("ignore", UserWarning)
                    from resemblyzer import VoiceEncoder

                self._encoder = VoiceEncoder(device="cpu", verbose=False)
            from resemblyzer import preprocess_wav

            wav = preprocess_wav(resample(samples, sample_rate, 16000), source_sr=16000)
            return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)


def cosine(a: FloatAudio, b: FloatAudio) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na and nb else 0.0


class VoiceMatcher:
    """Caches stock-voice embeddings and finds the nearest one to a profile embedding."""

    def __init__(self, embedder: Embedder, synth: SampleSynth, cache_file: Path | None = None) -> None:
        self._embed = embedder
        self._synth = synth
        self._cache_file = cache_file
        self._cache: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        if cache_file is not None and cache_file.exists():
            try:
                self._cache = {k: list(v) for k, v in json.loads(cache_file.read_text()).items()}
            except (ValueError, OSError):
                self._cache = {}

    def embedding(self, voice: Voice) -> FloatAudio:
        """The voice's speaker embedding (computed once, blocking: call from a worker thread)."""
        with self._lock:
            cached = self._cache.get(voice.voice_id)
        if cached is not None:
            return np.asarray(cached, dtype=np.float32)
        samples, rate = self._synth(voice)
        emb = self._embed(samples, rate)
        with self._lock:
            self._cache[voice.voice_id] = [float(x) for x in emb]
            if self._cache_file is not None:
                self._cache_file.parent.mkdir(parents=True, exist_ok=True)
                self._cache_file.write_text(json.dumps(self._cache))
        return emb

    def closest(self, target: tuple[float, ...], voices: list[Voice]) -> tuple[Voice, float]:
        """The voice with the highest cosine similarity to ``target`` (blocking)."""
        if not voices:
            raise ValueError("no voices to choose from")
        goal = np.asarray(target, dtype=np.float32)
        scored = [(cosine(goal, self.embedding(v)), v) for v in voices]
        best_score, best = max(scored, key=lambda sv: sv[0])
        return best, best_score
