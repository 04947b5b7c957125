"""What a stream remembers for its next final: recent audio (:class:`AudioTape`) and the finals it
decoded (:class:`FinalHistory`), so that an utterance cut off by a pause is decoded as the
continuation it is (``services/asr/README.md``, "Accuracy").

Positions are absolute 16 kHz sample indices since the stream opened. :class:`FinalHistory` is read
by decode jobs on worker threads while the event loop adds to it, hence its lock.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from avatar_asr.config import SAMPLE_RATE
from avatar_asr.engine import Recognition
from avatar_asr.vad import FloatAudio

#: The prompt holds at most this much earlier text (Whisper keeps ~220 prompt tokens).
CONTEXT_CHARS = 400
#: A final and its context fit in one Whisper window (30 s) ...
MAX_DECODE_S = 28.0
#: ... and audio context is used only after a real pause: an utterance cut at the length limit gets
#: the text alone.
MIN_CONTEXT_PAUSE_S = 0.3


class AudioTape:
    """A stream's recent 16 kHz audio, addressed by absolute sample position (old audio trimmed)."""

    def __init__(self) -> None:
        self._chunks: deque[FloatAudio] = deque()
        self._base = 0  # position of the first sample held
        self._held = 0

    @property
    def start(self) -> int:
        return self._base

    @property
    def end(self) -> int:
        return self._base + self._held

    def append(self, samples: FloatAudio) -> None:
        self._chunks.append(samples)
        self._held += len(samples)

    def trim(self, keep_from: int) -> None:
        """Forget whole chunks that end at or before ``keep_from``."""
        while self._chunks and self._base + len(self._chunks[0]) <= keep_from:
            self._base += len(self._chunks[0])
            self._held -= len(self._chunks[0])
            self._chunks.popleft()

    def slice(self, start: int, end: int) -> FloatAudio:
        """Samples ``[start, end)``; positions outside what is held are clipped."""
        if not self._chunks:
            return np.zeros(0, np.float32)
        audio = np.concatenate(self._chunks)
        a, b = max(0, start - self._base), max(0, min(self._held, end - self._base))
        return audio[a:b] if a < b else np.zeros(0, np.float32)


@dataclass(frozen=True, slots=True)
class PastFinal:
    """One utterance's final decode: ``[start, end)`` of audio, speech up to ``speech_end``."""

    start: int
    end: int
    speech_end: int
    decode: concurrent.futures.Future[Recognition]

    def text(self) -> str | None:
        """The decoded text, or None while the decode runs (or when it failed)."""
        d = self.decode
        if not d.done() or d.cancelled() or d.exception() is not None:
            return None
        return d.result().text


@dataclass(frozen=True, slots=True)
class AudioContext:
    """Decode from ``start`` (earlier utterances) and keep the words after ``boundary`` (in the pause)."""

    start: int
    boundary: int


class FinalHistory:
    """The last finals of one stream, and the context a new final gets from them."""

    def __init__(self, *, gap_s: float = 3.0, audio_s: float = 20.0, keep: int = 8) -> None:
        """``gap_s``: earlier finals count as context when each ended at most this long before the
        next began (a person pausing mid-thought, not the previous turn of a conversation);
        ``audio_s``: at most this much earlier audio is decoded again with a final (0: text only)."""
        self._finals: deque[PastFinal] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._gap = int(gap_s * SAMPLE_RATE)
        self.audio_s = audio_s

    def add(self, final: PastFinal) -> None:
        with self._lock:
            self._finals.append(final)

    def _chain(self, start: int) -> list[PastFinal]:
        """The finals ending before ``start``, newest first, while each pause is within the gap."""
        with self._lock:
            finals = list(self._finals)
        chain: list[PastFinal] = []
        horizon = start - self._gap
        for final in reversed(finals):
            if final.end > start:
                continue
            if final.end < horizon:
                break
            chain.append(final)
            horizon = final.start - self._gap
        return chain

    def audio_context(self, start: int, end: int, available_from: int) -> AudioContext | None:
        """Where to begin decoding a final of ``[start, end)``: the earliest utterance of the chain
        before it that began within ``audio_s`` and ``MAX_DECODE_S`` of ``end`` (and is
        still held from ``available_from``); None when none did or the last one ended without a real
        pause."""
        chain = self._chain(start)
        if not chain or start - chain[0].speech_end < MIN_CONTEXT_PAUSE_S * SAMPLE_RATE or self.audio_s <= 0:
            return None
        earliest = max(
            start - int(self.audio_s * SAMPLE_RATE), end - int(MAX_DECODE_S * SAMPLE_RATE), available_from
        )
        begins = [f.start for f in chain if f.start >= earliest]
        if not begins or begins[0] != chain[0].start:
            return None
        return AudioContext(min(begins), (chain[0].speech_end + start) // 2)

    def prompt(self, start: int) -> str:
        """The text of the chain of finals before ``start``, at most ``CONTEXT_CHARS`` of it (stops
        at a final still being decoded)."""
        texts: list[str] = []
        chars = 0
        for final in self._chain(start):
            text = final.text()
            if text is None:
                break
            if text:
                texts.append(text)
                chars += len(text) + 1
            if chars >= CONTEXT_CHARS:
                break
        return " ".join(reversed(texts))[-CONTEXT_CHARS:].strip()
