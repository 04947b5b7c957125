"""Streaming PCM16 resampling with libsoxr, for the OpenAI Realtime endpoint's fixed 24 kHz audio
(docs/realtime.md): one resampler per stream keeps its filter state across chunks (no clicks)."""

from __future__ import annotations

import numpy as np
import soxr


class SoxrStreamResampler:
    """PCM16 mono from ``from_rate`` to ``to_rate`` (``application.realtime.ports.StreamResampler``)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._same = from_rate == to_rate
        self._stream = None if self._same else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16")

    def push(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return np.asarray(self._stream.resample_chunk(samples), dtype="<i2").tobytes()

    def flush(self) -> bytes:
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        return np.asarray(tail, dtype="<i2").tobytes()
