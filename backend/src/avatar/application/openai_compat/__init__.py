"""OpenAI-compatible use cases behind ``/v1/audio/*``, ``/v1/chat/completions`` and ``/v1/models``
(docs/openai.md): the same ports as the rest of AVATAR, OpenAI's vocabulary at the edge."""

from __future__ import annotations

from dataclasses import dataclass

from avatar.application.openai_compat.chat import ChatOrder, ChatReply, OpenAIChat
from avatar.application.openai_compat.speech import OPENAI_VOICES, OpenAISpeech, SpeechOrder
from avatar.application.openai_compat.transcription import (
    NO_SPEECH,
    AudioTooLargeError,
    FileTranscriber,
    TranscriptionLimits,
    TranscriptionOptions,
    TranscriptOutcome,
)
from avatar.application.ports.audio import AudioEncoder


@dataclass(frozen=True, slots=True)
class OpenAICompat:
    """What the ``/v1`` routes call."""

    transcriber: FileTranscriber
    speech: OpenAISpeech
    chat: OpenAIChat
    encoder: AudioEncoder


__all__ = [
    "NO_SPEECH",
    "OPENAI_VOICES",
    "AudioTooLargeError",
    "ChatOrder",
    "ChatReply",
    "FileTranscriber",
    "OpenAIChat",
    "OpenAICompat",
    "OpenAISpeech",
    "SpeechOrder",
    "TranscriptOutcome",
    "TranscriptionLimits",
    "TranscriptionOptions",
]
