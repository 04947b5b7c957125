"""Helpers shared by the cloning engines: reference clips on disk and tensors to numpy."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from avatar_common.audio import encode_wav, resample
from avatar_tts.engine import FloatAudio, Reference


@contextmanager
def reference_file(reference: Reference, sample_rate: int | None = None) -> Iterator[Path]:
    """The reference clip as a temporary 16-bit WAV (the cloning libraries read paths)."""
    samples = reference.samples
    rate = reference.sample_rate
    if sample_rate is not None and sample_rate != rate:
        samples, rate = resample(samples, rate, sample_rate), sample_rate
    with tempfile.TemporaryDirectory(prefix="avatar-ref-") as tmp:
        path = Path(tmp) / "reference.wav"
        path.write_bytes(encode_wav(samples, rate))
        yield path


def to_numpy(audio: object) -> FloatAudio:
    """A torch tensor or array of any shape as flat float32 samples."""
    detach = getattr(audio, "detach", None)
    if detach is not None:
        audio = detach().cpu().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def default_reference(model_dir: Path) -> tuple[Path, str] | None:
    """The stock voice shipped next to a cloning model: ``default_voice.wav`` + ``default_voice.txt``."""
    wav, txt = model_dir / "default_voice.wav", model_dir / "default_voice.txt"
    if wav.exists() and txt.exists():
        return wav, txt.read_text(encoding="utf-8").strip()
    return None
