"""Speech recognition port: streaming VAD-endpointed recognition plus one-shot transcription."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from avatar.application.ports.common import ComponentHealth
from avatar.domain.models import AudioChunk, Transcription


class TranscriptEventKind(enum.StrEnum):
    """What a recognition stream reports.

    ``SPEECH_STARTED`` is what barge-in listens for; ``FINAL`` and ``ERROR`` are control events
    that a consumer must never drop.
    """

    SPEECH_STARTED = "speech_started"
    PARTIAL = "partial"
    FINAL = "final"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    kind: TranscriptEventKind
    transcription: Transcription | None = None
    error_code: str | None = None
    message: str = ""
    stream_time_ms: float = 0.0
    #: PCM16 16 kHz audio of the finished utterance (only on ``FINAL``), for storage and prosody.
    utterance_pcm: bytes = b""


class RecognitionStream(Protocol):
    """One person's live audio in, transcript events out.

    Push audio with :meth:`push_audio` (any sample rate; the stream resamples), iterate events with
    ``async for``. :meth:`end_input` flushes the pending utterance; :meth:`aclose` cancels work.
    """

    async def push_audio(self, chunk: AudioChunk) -> None: ...

    async def end_input(self) -> None: ...

    async def aclose(self) -> None: ...

    def events(self) -> AsyncIterator[TranscriptEvent]: ...


class SpeechRecognizer(Protocol):
    """ASR + VAD engine, in-process or a remote service behind the same interface."""

    async def open_stream(self, *, language: str | None = None) -> RecognitionStream: ...

    async def transcribe(
        self, pcm: bytes, sample_rate: int, *, language: str | None = None, prompt: str | None = None
    ) -> Transcription:
        """Recognize a complete PCM16 mono clip."""
        ...

    async def health(self) -> ComponentHealth: ...
