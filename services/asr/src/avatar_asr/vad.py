"""Silero VAD (v6, the ``silero-vad`` package's ONNX file) run with onnxruntime and numpy only.

The package's own wrapper needs torch; the ONNX graph does not, so the service loads it directly.
One :class:`SileroVAD` (one ONNX session) serves every stream; each stream keeps its own
:class:`VADState` (the recurrent state and the 64-sample context).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from avatar_asr.config import SAMPLE_RATE

FRAME = 512  # samples per VAD frame at 16 kHz (32 ms), fixed by the model
_CONTEXT = 64
FRAME_MS = 1000.0 * FRAME / SAMPLE_RATE

FloatAudio = npt.NDArray[np.float32]


def packaged_vad_model() -> Path:
    """Path of ``silero_vad.onnx`` inside the installed ``silero-vad`` package (imports nothing)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"


@dataclass(slots=True)
class VADState:
    """One stream's recurrent state and not-yet-framed samples."""

    state: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((2, 1, 128), np.float32))
    context: FloatAudio = field(default_factory=lambda: np.zeros(_CONTEXT, np.float32))
    pending: FloatAudio = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass(frozen=True, slots=True)
class SpeechRegion:
    """A stretch of speech in seconds."""

    start: float
    end: float


class SileroVAD:
    """Frame-level speech probabilities; loads its ONNX session on first use."""

    def __init__(self, model_path: Path) -> None:
        self._path = model_path
        self._session: object | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> object:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                if not self._path.exists():
                    raise FileNotFoundError(f"Silero VAD model not found at {self._path}")
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                self._session = ort.InferenceSession(
                    str(self._path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            return self._session

    def load(self) -> None:
        self._ensure()

    def process_frames(self, state: VADState, frames: FloatAudio) -> list[float]:
        """Speech probability of each row of ``frames`` (shape ``(n, 512)``, 16 kHz), in order."""
        session = self._ensure()
        sr = np.array(SAMPLE_RATE, dtype=np.int64)
        probs: list[float] = []
        for frame in frames:
            x = np.concatenate([state.context, frame])[None, :]
            out, new_state = session.run(None, {"input": x, "state": state.state, "sr": sr})  # type: ignore[attr-defined]
            state.state = np.asarray(new_state, dtype=np.float32)
            state.context = frame[-_CONTEXT:]
            probs.append(float(np.asarray(out).reshape(-1)[0]))
        return probs

    def process(self, state: VADState, samples: FloatAudio) -> list[float]:
        """Feed 16 kHz samples; returns one speech probability per completed 32 ms frame."""
        data = np.concatenate([state.pending, samples.astype(np.float32, copy=False)])
        n_frames = len(data) // FRAME
        state.pending = data[n_frames * FRAME :].copy()
        return self.process_frames(state, data[: n_frames * FRAME].reshape(n_frames, FRAME))

    def speech_regions(
        self,
        samples: FloatAudio,
        *,
        threshold: float = 0.5,
        min_speech_ms: int = 250,
        min_silence_ms: int = 300,
        pad_ms: int = 200,
    ) -> list[SpeechRegion]:
        """Speech regions of a whole clip (16 kHz), merged across short pauses and padded."""
        probs = self.process(VADState(), samples)
        neg = max(threshold - 0.15, 0.01)
        regions: list[tuple[int, int]] = []
        start: int | None = None
        silent = 0
        for i, p in enumerate(probs):
            if start is None:
                if p >= threshold:
                    start, silent = i, 0
                continue
            if p < neg:
                silent += 1
                if silent * FRAME_MS >= min_silence_ms:
                    regions.append((start, i - silent + 1))
                    start = None
            else:
                silent = 0
        if start is not None:
            regions.append((start, len(probs) - silent))
        duration = len(samples) / SAMPLE_RATE
        pad = pad_ms / 1000.0
        out: list[SpeechRegion] = []
        for a, b in regions:
            if (b - a) * FRAME_MS < min_speech_ms:
                continue
            s = max(0.0, a * FRAME / SAMPLE_RATE - pad)
            e = min(duration, b * FRAME / SAMPLE_RATE + pad)
            if out and s <= out[-1].end:
                out[-1] = SpeechRegion(out[-1].start, e)
            else:
                out.append(SpeechRegion(s, e))
        return out
