"""The background tasks the conversation hands to the task queue, one typed model per topic.

A producer builds a task and calls :func:`enqueue`; the topic's handler reads it back with
``from_payload``. The queue itself carries JSON objects (``to_payload``), so a task queued by an
older process is still read as long as its fields parse. A payload that does not parse raises
:class:`InvalidInputError`: redelivering it could not help, so handlers drop it loudly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from avatar.application.ports.queue import TaskQueue
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion

PROSODY_TOPIC = "prosody.analyze"
HQ_TOPIC = "tts.hq"

T = TypeVar("T")


class QueueTask(Protocol):
    """What :func:`enqueue` needs of a task: its topic and its JSON form."""

    TOPIC: ClassVar[str]

    def to_payload(self) -> dict[str, Any]: ...


async def enqueue(queue: TaskQueue, task: QueueTask) -> str:
    """Publish ``task`` on its own topic; returns the queue's task id."""
    return await queue.publish(task.TOPIC, task.to_payload())


def _field(payload: Mapping[str, Any], topic: str, key: str, parse: Callable[[Any], T]) -> T:
    if key not in payload or payload[key] is None:
        raise InvalidInputError(f"a {topic} task needs {key}")
    try:
        return parse(payload[key])
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"a {topic} task has an invalid {key}: {payload[key]!r}") from exc


def _optional(payload: Mapping[str, Any], topic: str, key: str, parse: Callable[[Any], T]) -> T | None:
    return None if payload.get(key) is None else _field(payload, topic, key, parse)


def _uuid(raw: Any) -> uuid.UUID:
    return uuid.UUID(str(raw))


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError("not a string")
    return raw


def _s3_key(url: str) -> str | None:
    """The object key of an ``s3://bucket/key`` URL (other schemes carry no portable key)."""
    if url.startswith("s3://"):
        _bucket, _, key = url.removeprefix("s3://").partition("/")
        return key or None
    return None


@dataclass(frozen=True, slots=True)
class ProsodyTask:
    """Analyze one final utterance (topic :data:`PROSODY_TOPIC`).

    Attributes:
        session_id: The conversation (the result is pushed to its client).
        transcription_id: The utterance's transcription (one stored score each).
        audio_key: Object-store key of the utterance audio (WAV, or raw PCM16 at ``sample_rate``).
        sample_rate: Rate of raw PCM16 audio (a WAV file carries its own).
        turn_id: The turn, when known (for logs).
        audio_url: Where the audio was stored, as recorded on the transcription.
    """

    TOPIC: ClassVar[str] = PROSODY_TOPIC

    session_id: uuid.UUID
    transcription_id: uuid.UUID
    audio_key: str
    sample_rate: int = 16000
    turn_id: uuid.UUID | None = None
    audio_url: str | None = None

    def __post_init__(self) -> None:
        if not self.audio_key:
            raise InvalidInputError(f"a {self.TOPIC} task needs audio_key")
        if self.sample_rate <= 0:
            raise InvalidInputError("sample_rate must be positive")

    def to_payload(self) -> dict[str, Any]:
        return {
            "session_id": str(self.session_id),
            "transcription_id": str(self.transcription_id),
            "audio_key": self.audio_key,
            "sample_rate": self.sample_rate,
            "turn_id": str(self.turn_id) if self.turn_id else None,
            "audio_url": self.audio_url,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ProsodyTask:
        """Read a payload; an ``s3://`` ``audio_url`` stands in for a missing ``audio_key``.

        Raises:
            InvalidInputError: for a missing or malformed field.
        """
        topic = cls.TOPIC
        audio_url = _optional(payload, topic, "audio_url", _text)
        key = _optional(payload, topic, "audio_key", _text) or _s3_key(audio_url or "")
        if not key:
            raise InvalidInputError(f"a {topic} task needs audio_key or an s3:// audio_url")
        rate = _optional(payload, topic, "sample_rate", int)
        return cls(
            session_id=_field(payload, topic, "session_id", _uuid),
            transcription_id=_field(payload, topic, "transcription_id", _uuid),
            audio_key=key,
            sample_rate=16000 if rate is None else rate,
            turn_id=_optional(payload, topic, "turn_id", _uuid),
            audio_url=audio_url,
        )


@dataclass(frozen=True, slots=True)
class HQTask:
    """Speak a whole reply again in the high-quality voice (topic :data:`HQ_TOPIC`).

    Attributes:
        session_id: The conversation (``hq_ready`` goes to its client).
        turn_id: The turn whose reply this is.
        text: The reply as the person heard it.
        voice: A stock voice name, if one was chosen.
        language: The reply's language, if known.
        voice_profile_id: A cloned voice to speak with, if one was chosen.
        emotion: The reply's emotion (engines that can express it use it).
    """

    TOPIC: ClassVar[str] = HQ_TOPIC

    session_id: uuid.UUID
    turn_id: uuid.UUID
    text: str
    voice: str | None = None
    language: str | None = None
    voice_profile_id: uuid.UUID | None = None
    emotion: Emotion = Emotion.NEUTRAL

    def to_payload(self) -> dict[str, Any]:
        return {
            "session_id": str(self.session_id),
            "turn_id": str(self.turn_id),
            "emotion": self.emotion.value,
            "text": self.text,
            "voice": self.voice,
            "language": self.language,
            "voice_profile_id": str(self.voice_profile_id) if self.voice_profile_id else None,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> HQTask:
        """Read a payload.

        Raises:
            InvalidInputError: for a missing or malformed field.
        """
        topic = cls.TOPIC
        return cls(
            session_id=_field(payload, topic, "session_id", _uuid),
            turn_id=_field(payload, topic, "turn_id", _uuid),
            text=_optional(payload, topic, "text", _text) or "",
            voice=_optional(payload, topic, "voice", _text),
            language=_optional(payload, topic, "language", _text),
            voice_profile_id=_optional(payload, topic, "voice_profile_id", _uuid),
            emotion=Emotion.parse(_optional(payload, topic, "emotion", _text)),
        )
