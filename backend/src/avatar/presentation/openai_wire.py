"""OpenAI's wire format for the ``/v1`` endpoints (docs/openai.md): request bodies, responses,
server-sent events and the error shape ``{"error": {"message", "type", "param", "code"}}``.

Only shapes live here; ``openai_api.py`` holds the routes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.openai_compat import AudioTooLargeError
from avatar.application.ports.audio import SpeechFormat
from avatar.domain.errors import (
    AvatarError,
    CapacityError,
    DependencyError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
)
from avatar.domain.models import Transcription

log = logging.getLogger(__name__)

NOTICE_HEADER = "X-Avatar-Notice"
VOICE_HEADER = "X-Avatar-Voice"
SAMPLE_RATE_HEADER = "X-Sample-Rate"
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
#: Whisper's verbose_json names the language in English words.
LANGUAGE_NAMES = {
    "en": "english",
    "ko": "korean",
    "zh": "chinese",
    "ja": "japanese",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "ru": "russian",
    "nl": "dutch",
    "pl": "polish",
    "tr": "turkish",
    "ar": "arabic",
    "hi": "hindi",
    "vi": "vietnamese",
    "th": "thai",
    "id": "indonesian",
    "uk": "ukrainian",
    "sv": "swedish",
}


# --- errors ---------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(
    status: int, message: str, *, code: str, kind: str | None = None, param: str | None = None
) -> JSONResponse:
    """OpenAI's error body with ``status``; ``kind`` defaults by status (``invalid_request_error``
    for 4xx, ``server_error`` for 5xx)."""
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    body = ErrorBody(error=ErrorDetail(message=message, type=kind, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def avatar_error_response(exc: AvatarError) -> JSONResponse:
    """The OpenAI error for one of AVATAR's errors (docs/openai.md, "Errors")."""
    code = exc.code.lower()
    if isinstance(exc, UnauthenticatedError):
        code = "invalid_api_key" if exc.code == "INVALID_KEY" else "missing_api_key"
        return error_response(401, exc.message, code=code, kind="authentication_error")
    if isinstance(exc, ForbiddenError):
        return error_response(403, exc.message, code=code, kind="permission_error")
    if isinstance(exc, NotFoundError):
        return error_response(404, exc.message, code=code)
    if isinstance(exc, AudioTooLargeError):
        return error_response(413, exc.message, code=code)
    if isinstance(exc, RateLimitedError):
        response = error_response(429, exc.message, code=code, kind="rate_limit_error")
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    if isinstance(exc, InvalidInputError):
        return error_response(400, exc.message, code=code)
    if isinstance(exc, CapacityError):
        response = error_response(503, exc.message, code=code)
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    trace_id = str(uuid.uuid4())
    log.warning("%s (trace_id %s): %s", exc.code, trace_id, exc.message)
    if isinstance(exc, DependencyError):
        message = f"a service this request needs is unavailable; try again shortly (trace id {trace_id})"
        return error_response(503, message, code=code)
    return error_response(500, f"the server failed (trace id {trace_id})", code="internal_error")


def avatar_error_event(exc: AvatarError) -> ErrorBody:
    """The error event of a stream that fails after it began (the status line is gone)."""
    response = avatar_error_response(exc)
    return ErrorBody.model_validate_json(bytes(response.body))


def sse(event: BaseModel | str) -> bytes:
    """One server-sent event (``data: ...``)."""
    data = event if isinstance(event, str) else event.model_dump_json(exclude_none=True)
    return f"data: {data}\n\n".encode()


# --- transcriptions --------------------------------------------------------------------------------


class VerboseSegment(BaseModel):
    id: int
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 1.0
    no_speech_prob: float = 0.0


class VerboseWord(BaseModel):
    word: str
    start: float
    end: float


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: int


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: str
    duration: float
    text: str
    segments: list[VerboseSegment] | None = None
    words: list[VerboseWord] | None = None
    usage: DurationUsage
    notice: str | None = None


def language_name(code: str | None) -> str:
    return LANGUAGE_NAMES.get(code or "", code or "")


def verbose(
    result: Transcription,
    *,
    task: Literal["transcribe", "translate"],
    duration_s: float,
    granularities: frozenset[str],
    notice: str | None,
) -> VerboseTranscription:
    """``verbose_json``: segments (unless only words were asked for) and words when asked for."""
    segments = [
        VerboseSegment(id=i, start=round(s.start, 3), end=round(s.end, 3), text=s.text)
        for i, s in enumerate(result.segments)
    ]
    words = [VerboseWord(word=w.word, start=round(w.start, 3), end=round(w.end, 3)) for w in result.words]
    return VerboseTranscription(
        task=task,
        language="english" if task == "translate" else language_name(result.language),
        duration=round(duration_s, 3),
        text=result.text,
        segments=segments if "segment" in granularities or not granularities else None,
        words=words if "word" in granularities else None,
        usage=DurationUsage(seconds=max(0, round(duration_s))),
        notice=notice,
    )


def _stamp(seconds: float, sep: str) -> str:
    ms = round(max(0.0, seconds) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(result: Transcription, fmt: Literal["srt", "vtt"]) -> str:
    """SRT or WebVTT of the segments."""
    sep = "," if fmt == "srt" else "."
    blocks = []
    for i, seg in enumerate(result.segments, start=1):
        span = f"{_stamp(seg.start, sep)} --> {_stamp(seg.end, sep)}"
        blocks.append(f"{i}\n{span}\n{seg.text}\n" if fmt == "srt" else f"{span}\n{seg.text}\n")
    body = "\n".join(blocks)
    return body if fmt == "srt" else "WEBVTT\n\n" + body


class TranscriptDelta(BaseModel):
    type: Literal["transcript.text.delta"] = "transcript.text.delta"
    delta: str


class TranscriptDone(BaseModel):
    type: Literal["transcript.text.done"] = "transcript.text.done"
    text: str


# --- speech ------------------------------------------------------------------------------------------


class VoiceRef(BaseModel):
    """OpenAI's custom voice object ``{"id": ...}``: here a voice profile id or a stock voice."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)


class SpeechBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    input: str
    voice: str | VoiceRef
    instructions: str | None = None
    response_format: SpeechFormat = "mp3"
    speed: float = 1.0
    stream_format: Literal["audio", "sse"] = "audio"

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


class SpeechUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class SpeechDelta(BaseModel):
    type: Literal["speech.audio.delta"] = "speech.audio.delta"
    audio: str


class SpeechDone(BaseModel):
    type: Literal["speech.audio.done"] = "speech.audio.done"
    usage: SpeechUsage


class StockVoice(BaseModel):
    id: str
    name: str
    engine: str
    languages: list[str]
    tier: str
    openai_names: list[str]


class StockVoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[StockVoice]


# --- chat ---------------------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; only text parts are supported."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidInputError(
                    f"content parts of type {part.type!r} are not supported; send text",
                    code="UNSUPPORTED_CONTENT",
                )
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[MessageIn]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    n: int = 1
    tools: list[Any] | None = None
    functions: list[Any] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    #: AVATAR's extension: the avatar's emotion for the reply (the avatar model only).
    emotion: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    emotion: str | None = None

    def data(self) -> bytes:
        """The SSE event; ``finish_reason`` stays in even when null, as OpenAI sends it."""
        raw = self.model_dump(exclude_none=True)
        raw["choices"] = [c.model_dump() for c in self.choices]
        return f"data: {json.dumps(raw)}\n\n".encode()


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "avatar"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
