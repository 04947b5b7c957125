"""What the OpenAI Realtime adapter needs beyond the conversation pipeline (wired in bootstrap.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from avatar.application.ports.tts import VoiceInfo
from avatar.domain.models import Transcription


class StreamResampler(Protocol):
    """PCM16 mono from one rate to another, across chunk boundaries without clicks."""

    def push(self, pcm: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class InstructionSink(Protocol):
    """Where a client's instructions go: added after the persona in every prompt of the session."""

    def set_instructions(self, session_id: uuid.UUID, instructions: str) -> None: ...


@dataclass(frozen=True)
class RealtimeDeps:
    """The Realtime endpoint's adapters (docs/realtime.md)."""

    #: ``resampler(from_rate, to_rate)``: a new streaming resampler.
    resampler: Callable[[int, int], StreamResampler]
    #: The fast synthesizer's voices (OpenAI voice names are mapped onto them).
    voices: Callable[[], Awaitable[list[VoiceInfo]]]
    #: One-shot recognition of a whole clip (audio items of ``conversation.item.create``).
    transcribe: Callable[[bytes, int], Awaitable[Transcription]]
    #: Tokens of a text in the chat model's tokenizer (``usage`` of ``response.done``).
    count_tokens: Callable[[str], int]
    instructions: InstructionSink | None
    #: The recognizer's endpoint silence (what ``silence_duration_ms`` reports).
    silence_duration_ms: int
    #: The chat model's name (``session.model``).
    model: str = "avatar"
