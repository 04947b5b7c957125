"""Speech recognition port: streaming VAD-endpointed recognition plus one-shot transcription."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from avatar.application.ports.common import ComponentHealth
from avatar.domain.models import AudioChunk, SegmentTiming, Transcription

#: What a one-shot decode does: recognize the spoken language, or translate it into English.
TranscriptionTask = Literal["transcribe", "translate"]


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
    """One report of a recognition stream.

    Attributes:
        kind: What happened.
        transcription: The text so far (``PARTIAL``) or of the whole utterance (``FINAL``). A final's
            text may be empty when the utterance turned out to be noise (hallucinations filtered).
        error_code: For ``ERROR``: ``NO_SPEECH`` (input ended with nothing said), ``INVALID_AUDIO``,
            ``UNSUPPORTED_SAMPLE_RATE``, ``BUSY``, ``ASR_FAILED``, ... The stream goes on after an error.
        message: Human-readable explanation of an error.
        stream_time_ms: Audio seen by the stream when the event was produced.
        utterance_pcm: PCM16 16 kHz audio of the finished utterance (only on ``FINAL``).
    """

    kind: TranscriptEventKind
    transcription: Transcription | None = None
    error_code: str | None = None
    message: str = ""
    stream_time_ms: float = 0.0
    utterance_pcm: bytes = b""


class RecognitionStream(Protocol):
    """One person's live audio in, transcript events out.

    Push audio with :meth:`push_audio` (any sample rate; the stream resamples), iterate events with
    ``async for``. The VAD ends utterances by itself; :meth:`end_input` (push-to-talk released)
    finalizes the pending utterance now and the stream stays open for the next one. :meth:`aclose`
    cancels outstanding work and ends the event iterator.
    """

    async def push_audio(self, chunk: AudioChunk) -> None: ...

    async def end_input(self) -> None: ...

    async def aclose(self) -> None: ...

    def events(self) -> AsyncIterator[TranscriptEvent]: ...


class SpeechRecognizer(Protocol):
    """ASR + VAD engine, in-process or a remote service behind the same interface."""

    async def open_stream(self, *, language: str | None = None) -> RecognitionStream: ...

    async def transcribe(
        self,
        pcm: bytes,
        sample_rate: int,
        *,
        language: str | None = None,
        prompt: str | None = None,
        temperature: float = 0.0,
        task: TranscriptionTask = "transcribe",
        on_segment: Callable[[SegmentTiming], None] | None = None,
    ) -> Transcription:
        """Recognize a complete PCM16 mono clip (``task="translate"``: its English translation).

        ``temperature`` 0 means Whisper's temperature fallback; another value (up to 1) is used as is.
        ``on_segment`` is called on the event loop with each segment as soon as it is decoded, for
        callers that stream the transcript; an adapter that cannot stream may call it for none.

        Raises:
            InvalidInputError: bad audio or arguments; code ``NO_SPEECH`` when nothing was said.
        """
        ...

    async def health(self) -> ComponentHealth: ...
