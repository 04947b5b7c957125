"""Every message the ASR service sends or accepts, as typed models (HTTP and WebSocket share them).

``services/asr/README.md`` documents the protocol these models carry; ``http_api.py`` and
``ws_api.py`` only build and parse them.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from avatar_asr.engine import Recognition
from avatar_asr.errors import ASRError
from avatar_asr.service import FileTranscription
from avatar_asr.stream import EventKind, StreamEvent
from avatar_common.audio import float_to_pcm16

#: Stream protocol version sent in ``ready``.
PROTOCOL_VERSION = 1
#: Response header naming why a 200 transcription is empty (``NO_SPEECH``).
NOTICE_HEADER = "X-Avatar-Notice"
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- errors (OpenAI's shape, plus our trace id) ------------------------------------------------------
class ErrorDetail(_Wire):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str
    trace_id: str = Field(default_factory=lambda: str(uuid.uuid4()))


class ErrorBody(_Wire):
    """``{"error": {"message", "type", "param", "code", "trace_id"}}``: every HTTP refusal."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str, *, status: int = 400, param: str | None = None) -> ErrorBody:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return cls(error=ErrorDetail(message=message, type=kind, param=param, code=code))


# -- recognition results -----------------------------------------------------------------------
class WordOut(_Wire):
    word: str
    start: float
    end: float
    probability: float


class SegmentOut(_Wire):
    text: str
    start: float
    end: float


class RecognitionOut(_Wire):
    """A decode as the stream and the service's own clients see it."""

    text: str
    confidence: float
    language: str | None
    language_probability: float
    low_confidence: bool
    duration: float
    segments: list[SegmentOut]
    words: list[WordOut]
    filtered: list[str]

    @classmethod
    def of(cls, rec: Recognition) -> RecognitionOut:
        return cls(
            text=rec.text,
            confidence=round(rec.confidence, 4),
            language=rec.language,
            language_probability=round(rec.language_probability, 4),
            low_confidence=rec.low_confidence,
            duration=round(rec.duration, 3),
            segments=[
                SegmentOut(text=s.text, start=round(s.start, 3), end=round(s.end, 3)) for s in rec.segments
            ],
            words=[
                WordOut(
                    word=w.word,
                    start=round(w.start, 3),
                    end=round(w.end, 3),
                    probability=round(w.probability, 4),
                )
                for w in rec.words
            ],
            filtered=list(rec.filtered),
        )


# -- POST /v1/audio/transcriptions --------------------------------------------------------------
class TranscriptionJSON(_Wire):
    """``response_format=json``: OpenAI's ``{"text"}`` plus our confidence."""

    text: str
    language: str | None
    confidence: float
    low_confidence: bool
    notice: str | None = None


class VerboseSegment(_Wire):
    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float
    compression_ratio: float = 1.0
    no_speech_prob: float


class VerboseWord(_Wire):
    word: str
    start: float
    end: float


class SpeechSpan(_Wire):
    start: float
    end: float


class VerboseTranscription(_Wire):
    """``response_format=verbose_json``: OpenAI's fields plus confidence and the VAD's speech spans."""

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment]
    words: list[VerboseWord]
    confidence: float
    low_confidence: bool
    language_probability: float
    speech: list[SpeechSpan]
    filtered: list[str]
    notice: str | None = None

    @classmethod
    def of(
        cls, result: FileTranscription, *, task: Literal["transcribe", "translate"] = "transcribe"
    ) -> VerboseTranscription:
        rec = result.recognition
        return cls(
            task=task,
            language=rec.language or "",
            duration=round(result.duration, 3),
            text=rec.text,
            segments=[
                VerboseSegment(
                    id=i,
                    start=round(s.start, 3),
                    end=round(s.end, 3),
                    text=s.text,
                    avg_logprob=round(s.avg_logprob, 4),
                    no_speech_prob=round(s.no_speech_prob, 4),
                )
                for i, s in enumerate(rec.segments)
            ],
            words=[VerboseWord(word=w.word, start=round(w.start, 3), end=round(w.end, 3)) for w in rec.words],
            confidence=round(rec.confidence, 4),
            low_confidence=rec.low_confidence,
            language_probability=round(rec.language_probability, 4),
            speech=[SpeechSpan(start=round(r.start, 3), end=round(r.end, 3)) for r in result.speech],
            filtered=list(rec.filtered),
            notice=result.notice,
        )


# -- WS /v1/stream: server -> client -------------------------------------------------------------
class ReadyMessage(_Wire):
    type: Literal["ready"] = "ready"
    sample_rate: int
    protocol: int = PROTOCOL_VERSION


class ErrorMessage(_Wire):
    type: Literal["error"] = "error"
    stream_time_ms: float | None = None
    code: str
    message: str
    trace_id: str = Field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def of(cls, exc: ASRError) -> ErrorMessage:
        return cls(code=exc.code, message=exc.message)


class SpeechStartedMessage(_Wire):
    type: Literal["speech_started"] = "speech_started"
    stream_time_ms: float
    audio_start_ms: float


class RecognitionMessage(RecognitionOut):
    type: Literal["partial", "final"]
    stream_time_ms: float
    is_final: bool
    audio_start_ms: float
    audio_end_ms: float
    latency_ms: float
    since_speech_end_ms: float
    audio: str | None = None  # finals with ``return_audio=1``: the utterance, base64 PCM16 16 kHz


class EndMessage(_Wire):
    type: Literal["end"] = "end"
    stream_time_ms: float


ServerMessage = ReadyMessage | ErrorMessage | SpeechStartedMessage | RecognitionMessage | EndMessage


def event_message(event: StreamEvent, *, with_audio: bool = False) -> ServerMessage:
    """The message of one stream event (``with_audio``: a final carries its PCM16, base64)."""
    t = round(event.stream_time_ms, 1)
    if event.kind is EventKind.ERROR:
        return ErrorMessage(stream_time_ms=t, code=event.code, message=event.message)
    if event.kind is EventKind.SPEECH_STARTED:
        return SpeechStartedMessage(stream_time_ms=t, audio_start_ms=round(event.audio_start_ms, 1))
    if event.recognition is None:
        return EndMessage(stream_time_ms=t)
    final = event.kind is EventKind.FINAL
    audio = None
    if final and with_audio and event.utterance is not None:
        audio = base64.b64encode(float_to_pcm16(event.utterance)).decode("ascii")
    return RecognitionMessage(
        **RecognitionOut.of(event.recognition).model_dump(),
        type="final" if final else "partial",
        stream_time_ms=t,
        is_final=final,
        audio_start_ms=round(event.audio_start_ms, 1),
        audio_end_ms=round(event.audio_end_ms, 1),
        latency_ms=round(event.latency_ms, 1),
        since_speech_end_ms=round(event.since_speech_end_ms, 1),
        audio=audio,
    )


_OPTIONAL = ("audio", "stream_time_ms", "notice")


def dump(message: BaseModel) -> dict[str, object]:
    """The JSON object of a message; optional fields (``audio``, ``notice``, ...) only when set."""
    return message.model_dump(exclude={k for k in _OPTIONAL if getattr(message, k, 0) is None})


# -- WS /v1/stream: client -> server -------------------------------------------------------------
class _ClientMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ConfigMessage(_ClientMessage):
    type: Literal["config"]
    sample_rate: int | None = None
    channels: int | None = None


class AudioMessage(_ClientMessage):
    type: Literal["audio"]
    data: str = ""

    def pcm(self) -> bytes:
        try:
            return base64.b64decode(self.data, validate=True)
        except ValueError as exc:
            raise ASRError("INVALID_AUDIO", "data is not base64") from exc


class FlushMessage(_ClientMessage):
    type: Literal["flush"]


class EndInputMessage(_ClientMessage):
    type: Literal["end"]


ClientMessage = Annotated[
    ConfigMessage | AudioMessage | FlushMessage | EndInputMessage, Field(discriminator="type")
]
_CLIENT = TypeAdapter[ConfigMessage | AudioMessage | FlushMessage | EndInputMessage](ClientMessage)
_CLIENT_TYPES = ("config", "audio", "flush", "end")


def parse_client_message(text: str) -> ConfigMessage | AudioMessage | FlushMessage | EndInputMessage:
    """One JSON text frame; ``ASRError`` (``INVALID_JSON``, ``UNKNOWN_MESSAGE_TYPE``,
    ``INVALID_MESSAGE``) when it is not a message of the protocol."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ASRError("INVALID_JSON", "text frames must be JSON objects") from exc
    if not isinstance(raw, dict):
        raise ASRError("INVALID_JSON", "text frames must be JSON objects")
    kind = raw.get("type")
    if kind not in _CLIENT_TYPES:
        raise ASRError(
            "UNKNOWN_MESSAGE_TYPE", f"unknown message type {kind!r}; use {', '.join(_CLIENT_TYPES)}"
        )
    try:
        return _CLIENT.validate_python(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        raise ASRError("INVALID_MESSAGE", f"bad {kind} message: {problems}") from exc
