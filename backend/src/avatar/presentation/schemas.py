"""Pydantic models of the REST bodies (the WebSocket messages are in
``avatar.application.conversation.events``, docs/protocol.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from avatar.application.conversation.events import PROTOCOL_VERSION
from avatar.application.validation import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, check_metadata

# --- REST -----------------------------------------------------------------------------------


class SessionCreate(BaseModel):
    """Optional body of ``POST /api/v1/sessions``."""

    model_config = ConfigDict(extra="forbid")

    metadata: Annotated[dict[str, Any], AfterValidator(check_metadata)] = Field(
        default_factory=dict,
        description=(
            f"Free-form labels kept with the session: at most {MAX_METADATA_BYTES} bytes as JSON, "
            f"{MAX_METADATA_DEPTH} levels deep, no NUL characters"
        ),
    )


class SessionCreated(BaseModel):
    session_id: uuid.UUID
    ws_url: str = Field(
        description=(
            "WebSocket URL with the token in its query (deprecated form, kept for old clients); "
            "prefer /ws/{session_id}?v=1 with the token as a subprotocol (docs/protocol.md)"
        )
    )
    token: str = Field(
        description=(
            "Session token: send it as the subprotocol avatar.token.<token> (with avatar.v1), "
            'or as the first message {"type": "auth", "token": ...}'
        )
    )
    expires_at: datetime
    protocol_version: int = PROTOCOL_VERSION


class SessionPublic(BaseModel):
    session_id: uuid.UUID
    status: str
    start_time: datetime
    end_time: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    live: bool = Field(description="Whether a conversation pipeline runs for it now")


class SessionList(BaseModel):
    sessions: list[SessionPublic]


class TranscriptionPublic(BaseModel):
    transcription_id: uuid.UUID
    text: str
    confidence: float
    language: str | None = None
    low_confidence: bool = False
    latency_ms: float = 0.0
    audio_url: str | None = Field(
        default=None, description="Presigned URL of the input audio (1 h); null once it expired"
    )
    audio_expired: bool = Field(
        default=False,
        description="The input audio was deleted by the retention sweep (docs/security.md, Retention)",
    )


class AudioPublic(BaseModel):
    audio_id: uuid.UUID
    mode: Literal["fast", "hq"]
    url: str = Field(description="Presigned URL (1 h); empty once the audio expired")
    expired: bool = Field(
        default=False,
        description="The reply audio was deleted by the retention sweep (docs/security.md, Retention)",
    )
    duration_sec: float
    synthesis_time_ms: float
    engine: str = ""
    voice: str = ""


class TurnPublic(BaseModel):
    turn_id: uuid.UUID
    turn_number: int
    user_input: str
    ai_response: str
    emotion: str
    interrupted: bool
    stage_latency_ms: dict[str, float]
    created_at: datetime | None = None
    transcription: TranscriptionPublic | None = None
    audio: list[AudioPublic] = Field(default_factory=list)


class TurnList(BaseModel):
    session_id: uuid.UUID
    turns: list[TurnPublic]
