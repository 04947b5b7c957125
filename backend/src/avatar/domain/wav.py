"""The WAV container for PCM16 mono audio (what every stored utterance and voice sample is).

Pure byte handling with the standard library's ``wave`` module: no files, no I/O.
"""

from __future__ import annotations

import io
import wave

from avatar.domain.errors import InvalidInputError


def pcm16_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Mono 16-bit WAV bytes around raw little-endian PCM16."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_pcm16(data: bytes) -> tuple[bytes, int]:
    """The PCM16 samples and rate of a mono 16-bit WAV (as written by :func:`pcm16_wav`).

    Raises:
        InvalidInputError: ``CORRUPT_AUDIO`` when the bytes are not a mono 16-bit WAV.
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise InvalidInputError("the stored audio is not mono 16-bit WAV", code="CORRUPT_AUDIO")
            return w.readframes(w.getnframes()), w.getframerate()
    except (wave.Error, EOFError) as exc:
        raise InvalidInputError(f"the stored audio is unreadable: {exc}", code="CORRUPT_AUDIO") from exc
