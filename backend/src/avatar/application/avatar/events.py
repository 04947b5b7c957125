"""The avatar control stream's messages (docs/avatar-control.md has a JSON example of each).

Every message is a JSON object with a ``type``. Times: ``offset_ms`` values are positions in the
reply audio, so a renderer that plays the audio aligns the mouth with what it plays; ``t_ms`` is
the server's wall clock (Unix ms), for logging only.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

AVATAR_PROTOCOL_VERSION = 1


class Vowel(enum.StrEnum):
    A = "A"
    I = "I"  # noqa: E741 - the vowel's name
    U = "U"
    E = "E"
    O = "O"  # noqa: E741 - the vowel's name


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParameterSpec(_Event):
    name: str
    min: float
    max: float
    default: float
    explanation: str


class HelloEvent(_Event):
    """First message on a connection: what the stream carries and the current state."""

    type: Literal["hello"] = "hello"
    protocol_version: int = AVATAR_PROTOCOL_VERSION
    session_id: str
    state: Literal["listening", "thinking", "speaking"]
    frame_ms: float
    parameters: list[ParameterSpec]


class StateEvent(_Event):
    """The conversation's phase: idle motion runs while ``listening``/``thinking``."""

    type: Literal["state"] = "state"
    session_id: str
    state: Literal["listening", "thinking", "speaking"]
    t_ms: float


class MouthFrame(_Event):
    #: Position of this frame inside its audio chunk, in ms from the chunk's first sample.
    offset_ms: float
    #: Mouth openness 0 (closed) .. 1 (wide open).
    open: float = Field(ge=0.0, le=1.0)
    #: The vowel being spoken at this frame, when the TTS engine gave phoneme timing; else null.
    vowel: Vowel | None = None


class MouthEvent(_Event):
    """Mouth frames for one reply audio chunk (the ``audio_chunk`` with the same ``turn_id`` and
    ``seq`` on the conversation socket)."""

    type: Literal["mouth"] = "mouth"
    turn_id: str
    seq: int
    #: Where this chunk starts in the turn's audio (sum of the previous chunks' durations).
    chunk_offset_ms: float
    duration_ms: float
    frame_ms: float
    #: ``level`` (from loudness only) or ``phonemes`` (vowels from the engine's timing).
    source: Literal["level", "phonemes"]
    frames: list[MouthFrame]


class ExpressionEvent(_Event):
    """The reply's emotion as target parameter values, reached by interpolation."""

    type: Literal["expression"] = "expression"
    turn_id: str | None
    emotion: str
    parameters: dict[str, float]
    transition_ms: float
    #: A VTube Studio hotkey/expression name from config/avatar_poses.toml, if any.
    hotkey: str | None = None


class IdleEvent(_Event):
    """A new idle-motion target (head and gaze). ``active`` is false for the steps that bring the
    head back to centre when speech starts; no idle target follows until speech ends."""

    type: Literal["idle"] = "idle"
    active: bool
    parameters: dict[str, float]
    transition_ms: float


class InterruptedEvent(_Event):
    """Barge-in: drop every mouth frame of ``turn_id`` not yet shown and close the mouth now."""

    type: Literal["interrupted"] = "interrupted"
    turn_id: str


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: str
    message: str


AvatarEvent = Annotated[
    HelloEvent | StateEvent | MouthEvent | ExpressionEvent | IdleEvent | InterruptedEvent | ErrorEvent,
    Field(discriminator="type"),
]
AVATAR_EVENT: TypeAdapter[AvatarEvent] = TypeAdapter(AvatarEvent)
