"""Every message of the realtime protocol (docs/protocol.md, version 1) as one typed model.

Client -> server messages (``*In``) are validated from the socket's JSON; server -> client
messages (``*Msg``) are built by the application and turned into JSON by the one serializer in
``avatar.presentation.wire``. The web app's TypeScript types (``frontend/src/protocol/generated.ts``)
are generated from :func:`protocol_json_schema`; ``backend/tests/conversation/test_protocol.py``
fails when this module, docs/protocol.md and the generated types disagree.
"""

from __future__ import annotations

import base64
import enum
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, WithJsonSchema

from avatar.application.validation import MAX_VOICE_CHARS, Duration, Millis, SafeStr
from avatar.domain.models import Emotion, TTSMode

PROTOCOL_VERSION = 1
#: Sample rates a client may declare for its microphone audio.
SUPPORTED_SAMPLE_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})


class Phase(enum.StrEnum):
    """What the session is doing (``session_state.state``)."""

    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


def _absent(value: object) -> bool:
    return value is None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: PCM16 bytes in the application, standard base64 text on the wire.
Base64Pcm = Annotated[
    bytes,
    PlainSerializer(_b64, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "description": "base64 PCM16 mono"}),
]


def message_type(model: type[BaseModel]) -> str:
    """The ``type`` tag of a message model."""
    annotation: Any = model.model_fields["type"].annotation
    return str(annotation.__args__[0])


# --- client -> server -------------------------------------------------------------------------


class _ClientMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AudioChunkIn(_ClientMessage):
    type: Literal["audio_chunk"]
    data: str = Field(description="base64 PCM16 mono little-endian")
    sr: int = Field(default=16000, ge=1, le=1_000_000)
    timestamp: Millis | None = None


class EndOfUtteranceIn(_ClientMessage):
    type: Literal["end_of_utterance"]


class SetTTSModeIn(_ClientMessage):
    type: Literal["set_tts_mode"]
    mode: TTSMode
    voice: Annotated[SafeStr, Field(max_length=MAX_VOICE_CHARS)] | None = None
    voice_profile_id: uuid.UUID | None = None


class InterruptIn(_ClientMessage):
    type: Literal["interrupt"]
    heard_text: Annotated[SafeStr, Field(max_length=8000)] | None = None
    played_ms: Duration | None = None


class TextInputIn(_ClientMessage):
    type: Literal["text_input"]
    text: SafeStr = Field(min_length=1, max_length=4000)


class PingIn(_ClientMessage):
    type: Literal["ping"]
    t: Millis | None = None


#: Longest session token accepted in an ``auth`` message.
MAX_TOKEN_CHARS = 512


class AuthIn(_ClientMessage):
    """The session token, as the very first frame when the handshake carried none (docs/protocol.md,
    Authentication); later ``auth`` messages are refused."""

    type: Literal["auth"]
    token: SafeStr = Field(min_length=1, max_length=MAX_TOKEN_CHARS)


ClientMessage = Annotated[
    AudioChunkIn | EndOfUtteranceIn | SetTTSModeIn | InterruptIn | TextInputIn | PingIn | AuthIn,
    Field(discriminator="type"),
]
CLIENT_MESSAGE = TypeAdapter[ClientMessage](ClientMessage)
CLIENT_MODELS: tuple[type[_ClientMessage], ...] = (
    AudioChunkIn,
    EndOfUtteranceIn,
    SetTTSModeIn,
    InterruptIn,
    TextInputIn,
    PingIn,
    AuthIn,
)
CLIENT_TYPES = frozenset(message_type(m) for m in CLIENT_MODELS)


# --- server -> client -------------------------------------------------------------------------


class _ServerMessage(BaseModel):
    # Every field is always sent, so the generated TypeScript marks each one required.
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)


class SessionStateMsg(_ServerMessage):
    type: Literal["session_state"] = "session_state"
    session_id: uuid.UUID
    state: Phase
    resumed: bool = False
    turns: int
    tts_mode: TTSMode
    voice: str | None = None
    voice_profile_id: uuid.UUID | None = None
    protocol_version: int = PROTOCOL_VERSION
    #: ``"binary"`` in the first ``session_state`` of a socket opened with ``?audio=binary``.
    audio_frames: Literal["binary"] | None = Field(default=None, exclude_if=_absent)


class SpeechStartedMsg(_ServerMessage):
    type: Literal["speech_started"] = "speech_started"
    timestamp: float


class TranscriptionPartialMsg(_ServerMessage):
    type: Literal["transcription_partial"] = "transcription_partial"
    text: str
    confidence: float
    is_final: Literal[False] = False
    language: str | None = None


class TranscriptionFinalMsg(_ServerMessage):
    type: Literal["transcription_final"] = "transcription_final"
    transcription_id: uuid.UUID
    text: str
    confidence: float
    is_final: Literal[True] = True
    language: str | None = None
    low_confidence: bool = False
    latency_ms: float


class TurnStartedMsg(_ServerMessage):
    type: Literal["turn_started"] = "turn_started"
    turn_id: uuid.UUID
    turn_number: int


class EmotionMsg(_ServerMessage):
    type: Literal["emotion"] = "emotion"
    turn_id: uuid.UUID
    emotion: Emotion


class LlmTokenMsg(_ServerMessage):
    type: Literal["llm_token"] = "llm_token"
    turn_id: uuid.UUID
    token: str


class AudioChunkMsg(_ServerMessage):
    type: Literal["audio_chunk"] = "audio_chunk"
    turn_id: uuid.UUID
    data: Base64Pcm
    sr: int
    mode: TTSMode
    seq: int
    duration_ms: float
    text: str


class TurnCompletedMsg(_ServerMessage):
    type: Literal["turn_completed"] = "turn_completed"
    turn_id: uuid.UUID
    text: str
    emotion: Emotion
    interrupted: bool
    latency_ms: dict[str, float]


class InterruptedMsg(_ServerMessage):
    type: Literal["interrupted"] = "interrupted"
    turn_id: uuid.UUID
    heard_text: str


class HqReadyMsg(_ServerMessage):
    type: Literal["hq_ready"] = "hq_ready"
    turn_id: uuid.UUID
    url: str
    duration_ms: float
    #: Why the HQ voice differs from the one chosen (sent only then).
    notice: str | None = Field(default=None, exclude_if=_absent)


class ProsodyScores(_ServerMessage):
    confidence: float
    stability: float
    affability: float


class ProsodyAnalysisMsg(_ServerMessage):
    type: Literal["prosody_analysis"] = "prosody_analysis"
    transcription_id: uuid.UUID
    scores: ProsodyScores
    reliable: bool
    reason: str | None = None


class NoticeMsg(_ServerMessage):
    type: Literal["notice"] = "notice"
    code: str
    message: str
    #: The turn the notice is about (sent only for a turn's notices).
    turn_id: uuid.UUID | None = Field(default=None, exclude_if=_absent)


class ErrorMsg(_ServerMessage):
    type: Literal["error"] = "error"
    code: str
    message: str
    trace_id: str = Field(default_factory=lambda: str(uuid.uuid4()))


class PongMsg(_ServerMessage):
    type: Literal["pong"] = "pong"
    t: float | None = None


class HeartbeatMsg(_ServerMessage):
    type: Literal["heartbeat"] = "heartbeat"
    t: float


ServerMessage = Annotated[
    SessionStateMsg
    | SpeechStartedMsg
    | TranscriptionPartialMsg
    | TranscriptionFinalMsg
    | TurnStartedMsg
    | EmotionMsg
    | LlmTokenMsg
    | AudioChunkMsg
    | TurnCompletedMsg
    | InterruptedMsg
    | HqReadyMsg
    | ProsodyAnalysisMsg
    | NoticeMsg
    | ErrorMsg
    | PongMsg
    | HeartbeatMsg,
    Field(discriminator="type"),
]
SERVER_MESSAGE = TypeAdapter[ServerMessage](ServerMessage)
SERVER_MODELS: tuple[type[_ServerMessage], ...] = (
    SessionStateMsg,
    SpeechStartedMsg,
    TranscriptionPartialMsg,
    TranscriptionFinalMsg,
    TurnStartedMsg,
    EmotionMsg,
    LlmTokenMsg,
    AudioChunkMsg,
    TurnCompletedMsg,
    InterruptedMsg,
    HqReadyMsg,
    ProsodyAnalysisMsg,
    NoticeMsg,
    ErrorMsg,
    PongMsg,
    HeartbeatMsg,
)


class _Protocol(BaseModel):
    server: ServerMessage
    client: ClientMessage


def protocol_json_schema() -> dict[str, Any]:
    """One JSON Schema with every message as a definition and the two unions as ``ServerMessage``
    and ``ClientMessage`` (the input of ``frontend/scripts/gen-protocol.mjs``)."""
    schema = _Protocol.model_json_schema(mode="serialization")
    defs: dict[str, Any] = schema.pop("$defs")
    for name, title in (("server", "ServerMessage"), ("client", "ClientMessage")):
        union = schema["properties"][name]
        union.pop("discriminator", None)
        defs[title] = {**union, "title": title}
        schema["properties"][name] = {"$ref": f"#/$defs/{title}"}
    for definition in defs.values():
        # A property's title would become a TypeScript type of its own ("Sr", "Type1" ...).
        for prop in definition.get("properties", {}).values():
            prop.pop("title", None)
    schema["title"] = "Protocol"
    schema["description"] = "AVATAR realtime protocol v1 (docs/protocol.md); generated, do not edit."
    schema["additionalProperties"] = False
    return {**schema, "$defs": dict(sorted(defs.items()))}
