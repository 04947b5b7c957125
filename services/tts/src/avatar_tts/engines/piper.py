"""Piper (VITS, ONNX) with the packaged en_US-joe-medium voice: the embedded fast tier."""

from __future__ import annotations

import json
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
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        config = json.loads(Path(f"{self._model_path}.json").read_text(encoding="utf-8"))
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(
                _with_alignments(self._model_path),
                sess_options=session_options(),
                providers=["CPUExecutionProvider"],
            ),
            config=PiperConfig.from_dict(config),
        )

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


def session_options() -> Any:
    """onnxruntime options for a voice on the critical path: the thread pool does not spin.

    A spinning pool's threads busy-wait between operators; on a small CPU where the model server
    writes the rest of the reply at the same time, each barrier then waits for a descheduled thread.
    Piper's first chunk of a 10-word clause with the model generating: 328 ms spinning, 232 ms not
    (111-118 ms alone either way; docs/adr/0014-voice-latency.md, sixth round).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _with_alignments(model_path: Path) -> bytes | str:
    """The model patched in memory to expose each phoneme's sample count (the avatar's vowel
    timing; needs the onnx package, without it the file as is and no timing)."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError:
        return str(model_path)
    model = onnx.load(str(model_path))
    try:
        add_alignment_output(model)
    except ValueError:  # already patched, or no such tensor: use it as it is
        return str(model_path)
    return bytes(model.SerializeToString())


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
