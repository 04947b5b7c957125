"""The OpenAI Realtime events AVATAR speaks at ``WS /v1/realtime`` (docs/realtime.md), as typed models.

Client events (``*In``) are validated from the socket's JSON; unknown fields are ignored, as
OpenAI's clients send many this server does not use. Server events are built by the translator and
serialized with :func:`encode_event` (``None`` fields are left out, as OpenAI's clients treat them as
optional). Only the fields AVATAR acts on are modelled; the names follow OpenAI's current (GA)
interface, and :data:`BETA_NAMES` renames the few server events whose beta name differs.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from avatar.application.validation import SafeStr

#: The only audio format supported either way: PCM16 mono little-endian at 24 kHz (OpenAI's ``pcm16``).
REALTIME_SAMPLE_RATE = 24000
#: Longest instructions and item text accepted (characters).
MAX_INSTRUCTIONS = 16000
MAX_TEXT = 4000
#: Longest client-chosen ids (event ids, item ids).
MAX_ID = 64


def new_event_id() -> str:
    return f"event_{uuid.uuid4().hex[:24]}"


def new_item_id() -> str:
    return f"item_{uuid.uuid4().hex[:24]}"


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex[:24]}"


ClientId = Annotated[SafeStr, Field(max_length=MAX_ID)]


# --- client -> server -------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AudioFormatIn(_In):
    type: str | None = None
    rate: int | None = None


class TurnDetectionIn(_In):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None


class TranscriptionIn(_In):
    model: Annotated[SafeStr, Field(max_length=100)] | None = None
    language: Annotated[SafeStr, Field(max_length=16)] | None = None
    prompt: Annotated[SafeStr, Field(max_length=MAX_TEXT)] | None = None


class AudioInputIn(_In):
    format: AudioFormatIn | None = None
    #: ``null`` turns server VAD off (the client commits and asks for replies itself).
    turn_detection: TurnDetectionIn | None = None
    #: ``null`` turns the transcription events off.
    transcription: TranscriptionIn | None = None


class VoiceIdIn(_In):
    id: Annotated[SafeStr, Field(max_length=100)]


VoiceIn = Annotated[SafeStr, Field(max_length=100)] | VoiceIdIn


class AudioOutputIn(_In):
    format: AudioFormatIn | None = None
    voice: VoiceIn | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class AudioConfigIn(_In):
    input: AudioInputIn | None = None
    output: AudioOutputIn | None = None


Modalities = list[Literal["text", "audio"]]


class SessionConfigIn(_In):
    """``session.update``'s ``session``: the GA shape, plus the flat beta fields where cheap."""

    type: str | None = None
    instructions: Annotated[SafeStr, Field(max_length=MAX_INSTRUCTIONS)] | None = None
    output_modalities: Modalities | None = None
    audio: AudioConfigIn | None = None
    # beta (``OpenAI-Beta: realtime=v1``) names
    modalities: Modalities | None = None
    voice: VoiceIn | None = None
    input_audio_format: str | None = None
    output_audio_format: str | None = None
    turn_detection: TurnDetectionIn | None = None
    input_audio_transcription: TranscriptionIn | None = None


class SessionUpdateIn(_In):
    type: Literal["session.update"]
    event_id: ClientId | None = None
    session: SessionConfigIn


class InputAudioAppendIn(_In):
    type: Literal["input_audio_buffer.append"]
    event_id: ClientId | None = None
    audio: str = Field(description="base64 PCM16 mono 24 kHz")


class InputAudioCommitIn(_In):
    type: Literal["input_audio_buffer.commit"]
    event_id: ClientId | None = None


class InputAudioClearIn(_In):
    type: Literal["input_audio_buffer.clear"]
    event_id: ClientId | None = None


class ContentIn(_In):
    type: Literal["input_text", "input_audio", "text", "output_text", "output_audio", "audio"]
    text: Annotated[SafeStr, Field(max_length=MAX_TEXT)] | None = None
    audio: str | None = None
    transcript: Annotated[SafeStr, Field(max_length=MAX_TEXT)] | None = None


class ItemIn(_In):
    id: ClientId | None = None
    type: Literal["message", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentIn] = Field(default_factory=list, max_length=16)


class ItemCreateIn(_In):
    type: Literal["conversation.item.create"]
    event_id: ClientId | None = None
    previous_item_id: ClientId | None = None
    item: ItemIn


class ItemTruncateIn(_In):
    type: Literal["conversation.item.truncate"]
    event_id: ClientId | None = None
    item_id: ClientId
    content_index: int = Field(default=0, ge=0, le=16)
    audio_end_ms: int = Field(ge=0, le=86_400_000)


class ResponseParamsIn(_In):
    output_modalities: Modalities | None = None
    modalities: Modalities | None = None
    conversation: str | None = None
    instructions: Annotated[SafeStr, Field(max_length=MAX_INSTRUCTIONS)] | None = None


class ResponseCreateIn(_In):
    type: Literal["response.create"]
    event_id: ClientId | None = None
    response: ResponseParamsIn | None = None


class ResponseCancelIn(_In):
    type: Literal["response.cancel"]
    event_id: ClientId | None = None
    response_id: ClientId | None = None


class OutputAudioClearIn(_In):
    type: Literal["output_audio_buffer.clear"]
    event_id: ClientId | None = None


ClientEvent = Annotated[
    SessionUpdateIn
    | InputAudioAppendIn
    | InputAudioCommitIn
    | InputAudioClearIn
    | ItemCreateIn
    | ItemTruncateIn
    | ResponseCreateIn
    | ResponseCancelIn
    | OutputAudioClearIn,
    Field(discriminator="type"),
]
CLIENT_EVENT = TypeAdapter[ClientEvent](ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)
#: OpenAI client events this server knows but does not support (answered with an ``error``).
UNSUPPORTED_CLIENT_EVENTS = frozenset(
    {"conversation.item.delete", "conversation.item.retrieve", "transcription_session.update"}
)


# --- server -> client -------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=False)


class ErrorDetail(_Out):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None


class ContentOut(_Out):
    type: Literal["input_text", "input_audio", "output_text", "output_audio", "text", "audio"]
    text: str | None = None
    transcript: str | None = None


class ItemOut(_Out):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    role: Literal["user", "assistant", "system"]
    content: list[ContentOut] = Field(default_factory=list)


class TokenDetails(_Out):
    text_tokens: int = 0
    audio_tokens: int = 0
    cached_tokens: int | None = None


class UsageOut(_Out):
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_token_details: TokenDetails = Field(default_factory=lambda: TokenDetails(cached_tokens=0))
    output_token_details: TokenDetails = Field(default_factory=TokenDetails)


class StatusDetails(_Out):
    type: Literal["completed", "cancelled", "incomplete", "failed"]
    reason: str | None = None
    error: dict[str, str] | None = None


class ResponseOut(_Out):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["in_progress", "completed", "cancelled", "failed", "incomplete"] = "in_progress"
    status_details: StatusDetails | None = None
    output: list[ItemOut] = Field(default_factory=list)
    output_modalities: list[str] = Field(default_factory=lambda: ["audio"])
    conversation_id: str | None = None
    usage: UsageOut | None = None


class ServerEvent(_Out):
    """Every server event: a ``type``, a fresh ``event_id`` and the event's own fields."""

    type: str
    event_id: str = Field(default_factory=new_event_id)


class ErrorEvent(ServerEvent):
    type: str = "error"
    error: ErrorDetail


class SessionEvent(ServerEvent):
    session: dict[str, Any]


class ItemEvent(ServerEvent):
    item: ItemOut
    previous_item_id: str | None = None


class SpeechStartedEvent(ServerEvent):
    type: str = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStoppedEvent(ServerEvent):
    type: str = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class CommittedEvent(ServerEvent):
    type: str = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class TranscriptionCompletedEvent(ServerEvent):
    type: str = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int = 0
    transcript: str
    usage: dict[str, Any]


class TranscriptionDeltaEvent(ServerEvent):
    type: str = "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int = 0
    delta: str


class TruncatedEvent(ServerEvent):
    type: str = "conversation.item.truncated"
    item_id: str
    content_index: int = 0
    audio_end_ms: int


class ResponseEvent(ServerEvent):
    response: ResponseOut


class OutputItemEvent(ServerEvent):
    response_id: str
    output_index: int = 0
    item: ItemOut


class PartEvent(ServerEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    part: ContentOut


class DeltaEvent(ServerEvent):
    """``response.output_audio.delta`` (base64 PCM16 24 kHz), ``..._transcript.delta`` and
    ``response.output_text.delta``."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    delta: str


class DoneEvent(ServerEvent):
    """``response.output_audio.done`` / ``..._transcript.done`` / ``response.output_text.done``."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    transcript: str | None = None
    text: str | None = None


class PlainEvent(ServerEvent):
    """An event with no field of its own (``input_audio_buffer.cleared``)."""


#: Server events whose beta name (``OpenAI-Beta: realtime=v1``) differs from the GA one.
BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}


def encode_event(event: ServerEvent, *, beta: bool = False) -> str:
    """One server event as the JSON text of a WebSocket frame."""
    if beta and event.type in BETA_NAMES:
        event = event.model_copy(update={"type": BETA_NAMES[event.type]})
    if isinstance(event, ErrorEvent):  # OpenAI sends an error's ``param`` and ``event_id`` as null
        return event.model_dump_json()
    return event.model_dump_json(exclude_none=True)


def error_event(
    message: str,
    *,
    code: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    event_id: str | None = None,
) -> ErrorEvent:
    """An ``error`` in OpenAI's shape; ``event_id`` names the client event that caused it."""
    return ErrorEvent(
        error=ErrorDetail(type=kind, code=code, message=message, param=param, event_id=event_id)
    )
