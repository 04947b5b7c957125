"""The OpenAI-compatible REST endpoints on the orchestrator (docs/openai.md):

* ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (multipart upload);
* ``POST /v1/audio/speech`` (audio bytes streamed, or ``stream_format=sse`` events);
* ``POST /v1/chat/completions`` (whole or streamed) and ``GET /v1/models``.

Every route needs ``Authorization: Bearer KEY`` like the rest of the API (``presentation/auth.py``)
and answers every refusal in OpenAI's error shape with its status (``openai_wire.py``). Browsers of
other origins may call these routes only when ``openai.cors_origins`` lists them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from avatar.application.openai_compat import (
    AudioTooLargeError,
    ChatOrder,
    OpenAICompat,
    SpeechOrder,
    TranscriptionOptions,
)
from avatar.application.ports.asr import TranscriptionTask
from avatar.application.ports.llm import ChatMessage, ChatModelError, Role
from avatar.bootstrap import Services
from avatar.domain.errors import AvatarError, DependencyError, InvalidInputError
from avatar.domain.models import User
from avatar.presentation.auth import current_user
from avatar.presentation.errors import validation_message
from avatar.presentation.openai_wire import (
    NOTICE_HEADER,
    SAMPLE_RATE_HEADER,
    TRANSCRIPTION_FORMATS,
    VOICE_HEADER,
    AssistantMessage,
    ChatBody,
    ChatChunk,
    ChatCompletion,
    Choice,
    ChunkChoice,
    Delta,
    DurationUsage,
    ModelList,
    ModelOut,
    SpeechBody,
    SpeechDelta,
    SpeechDone,
    SpeechUsage,
    StockVoice,
    StockVoiceList,
    TranscriptDelta,
    TranscriptDone,
    Usage,
    avatar_error_event,
    avatar_error_response,
    completion_id,
    error_response,
    now,
    sse,
    subtitles,
    verbose,
)
from avatar.settings import Settings

log = logging.getLogger(__name__)

#: Transcription model names a client may send; the recognizer behind them is the configured one.
TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
SPEECH_MODEL_NAMES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
#: Multipart overhead allowed above the audio limit before the body is refused unread.
_FORM_SLACK = 64 * 1024
_CHAT_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


class OpenAIRoute(APIRoute):
    """A route whose every refusal (authentication and validation included) is OpenAI's error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AvatarError as exc:
                return avatar_error_response(exc)
            except RequestValidationError as exc:
                return error_response(400, validation_message(exc), code="invalid_request")
            except StarletteHTTPException as exc:
                status = exc.status_code
                return error_response(
                    status, str(exc.detail), code="invalid_request" if status < 500 else "error"
                )

        return handle


router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
CallerDep = Annotated[User, Depends(current_user)]


def _compat(request: Request) -> OpenAICompat:
    services: Services = request.app.state.services
    if services.openai is None:
        raise DependencyError("the OpenAI-compatible endpoints are not set up")
    return services.openai


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CompatDep = Annotated[OpenAICompat, Depends(_compat)]


# --- models -------------------------------------------------------------------------------------------


def _transcription_models(request: Request) -> tuple[str, ...]:
    """OpenAI's names and the configured recognizer's own (``whisper-base``)."""
    return (*TRANSCRIPTION_MODELS, _settings(request).asr.model.rstrip("/").rsplit("/", 1)[-1])


def _model_ids(request: Request, compat: OpenAICompat) -> list[str]:
    ids = [*compat.chat.models(), *SPEECH_MODEL_NAMES, *_transcription_models(request)]
    return list(dict.fromkeys(ids))


@router.get("/models")
async def list_models(request: Request, _caller: CallerDep, compat: CompatDep) -> JSONResponse:
    models = ModelList(data=[ModelOut(id=name) for name in _model_ids(request, compat)])
    return JSONResponse(models.model_dump())


@router.get("/models/{model_id:path}")
async def get_model(request: Request, model_id: str, _caller: CallerDep, compat: CompatDep) -> JSONResponse:
    if model_id not in _model_ids(request, compat):
        return error_response(404, f"the model {model_id!r} does not exist", code="model_not_found")
    return JSONResponse(ModelOut(id=model_id).model_dump())


# --- transcriptions and translations -------------------------------------------------------------------


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text", code="INVALID_FIELD")
    return value.strip() or None


async def _transcribe(request: Request, compat: CompatDep, task: TranscriptionTask) -> Response:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidInputError("send multipart/form-data with a `file` part", code="INVALID_CONTENT_TYPE")
    limit = compat.transcriber.limits.max_bytes
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        # Without a length the form parser would spool any amount to disk before the limit is seen.
        return error_response(411, "send the upload with a Content-Length header", code="length_required")
    if int(declared) > limit + _FORM_SLACK:
        raise AudioTooLargeError(f"the file is larger than {limit // (1024 * 1024)} MiB")
    try:
        form = await request.form(max_files=1, max_fields=64)
    except Exception as exc:  # a malformed multipart body
        raise InvalidInputError(f"malformed multipart body: {exc}", code="INVALID_MULTIPART") from exc
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(form.close)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInputError(
                "the multipart body has no `file` part holding audio", code="MISSING_FILE"
            )
        model = _field(form, "model")
        if model is None:
            raise InvalidInputError("model is required (e.g. whisper-1)", code="MISSING_MODEL")
        if model not in _transcription_models(request):
            return error_response(
                404,
                f"the transcription model {model!r} does not exist; use {', '.join(TRANSCRIPTION_MODELS)}",
                code="model_not_found",
                param="model",
            )
        fmt = _field(form, "response_format") or "json"
        if fmt not in TRANSCRIPTION_FORMATS:
            raise InvalidInputError(
                f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}", code="INVALID_FORMAT"
            )
        raw_temperature = _field(form, "temperature")
        try:
            temperature = float(raw_temperature) if raw_temperature is not None else 0.0
        except ValueError as exc:
            raise InvalidInputError("temperature must be a number", code="INVALID_TEMPERATURE") from exc
        granularities = frozenset(
            str(v).strip()
            for v in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        )
        if granularities - {"word", "segment"}:
            raise InvalidInputError("timestamp_granularities[] may be word and segment", code="INVALID_FIELD")
        stream = (_field(form, "stream") or "false").lower() in ("true", "1")
        if stream and task == "translate":
            raise InvalidInputError("translations are not streamed", code="INVALID_FIELD")
        options = TranscriptionOptions(
            task=task,
            language=_field(form, "language"),
            prompt=_field(form, "prompt"),
            temperature=temperature,
        )
        data = await upload.read(limit + 1)
    transcriber = compat.transcriber
    clip = await transcriber.decode(data, options)  # bad or oversized audio: refused before a stream
    if stream:
        pieces = transcriber.stream(clip, options)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for piece in pieces:
                    if isinstance(piece, str):
                        yield sse(TranscriptDelta(delta=piece))
                    else:
                        yield sse(TranscriptDone(text=piece.transcription.text))
            except AvatarError as exc:  # mid-stream: OpenAI's error event, then the stream ends
                yield sse(avatar_error_event(exc))
            finally:
                await pieces.aclose()

        return StreamingResponse(events(), media_type="text/event-stream")
    outcome = await transcriber.transcribe(clip, options)
    headers = {NOTICE_HEADER: outcome.notice} if outcome.notice else None
    result = outcome.transcription
    if fmt == "text":
        return PlainTextResponse(result.text, headers=headers)
    if fmt in ("srt", "vtt"):
        kind = cast(Literal["srt", "vtt"], fmt)
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return PlainTextResponse(subtitles(result, kind), media_type=media, headers=headers)
    if fmt == "verbose_json":
        body = verbose(
            result,
            task=task,
            duration_s=outcome.duration_s,
            granularities=granularities,
            notice=outcome.notice,
        )
        return JSONResponse(body.model_dump(exclude_none=True), headers=headers)
    body_json: dict[str, Any] = {"text": result.text}
    if task == "transcribe":  # billed by duration, as OpenAI reports it for whisper-1
        body_json["usage"] = DurationUsage(seconds=max(0, round(outcome.duration_s))).model_dump()
    return JSONResponse(body_json, headers=headers)


@router.post("/audio/transcriptions", response_model=None)
async def transcriptions(request: Request, _caller: CallerDep, compat: CompatDep) -> Response:
    return await _transcribe(request, compat, "transcribe")


@router.post("/audio/translations", response_model=None)
async def translations(request: Request, _caller: CallerDep, compat: CompatDep) -> Response:
    return await _transcribe(request, compat, "translate")


# --- speech ----------------------------------------------------------------------------------------------


@router.post("/audio/speech", response_model=None)
async def speech(body: SpeechBody, caller: CallerDep, compat: CompatDep) -> Response:
    order = SpeechOrder(
        text=body.input,
        voice=body.voice_name,
        model=body.model,
        speed=body.speed,
        instructions=body.instructions,
    )
    stream, resolved = await compat.speech.start(order, caller)
    encoding = compat.encoder.open(body.response_format, stream.sample_rate)
    headers = {
        VOICE_HEADER: stream.voice.encode("ascii", "backslashreplace").decode(),
        SAMPLE_RATE_HEADER: str(stream.sample_rate),
    }
    notice = "; ".join(n for n in (resolved.notice, stream.notice) if n)
    if notice:
        headers[NOTICE_HEADER] = notice.encode("ascii", "backslashreplace").decode()

    async def encoded() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream.chunks():
                data = encoding.feed(chunk.pcm)
                if data:
                    yield data
            tail = await asyncio.to_thread(encoding.finish)
            if tail:
                yield tail
        except AvatarError as exc:  # the status line is gone: the body ends early, the log says why
            log.warning("speech stopped mid-stream: %s: %s", exc.code, exc.message)
        finally:
            await stream.aclose()

    if body.stream_format == "audio":
        return StreamingResponse(encoded(), media_type=encoding.media_type, headers=headers)

    async def events() -> AsyncIterator[bytes]:
        sent = 0
        async for data in encoded():
            sent += len(data)
            yield sse(SpeechDelta(audio=base64.b64encode(data).decode("ascii")))
        # Token counts as OpenAI's audio models report them: ~4 characters a text token, audio by size.
        input_tokens = max(1, len(order.text) // 4)
        output_tokens = max(1, sent // 1024)
        usage = SpeechUsage(
            input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
        )
        yield sse(SpeechDone(usage=usage))

    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.get("/audio/voices")
async def stock_voices(_caller: CallerDep, compat: CompatDep) -> JSONResponse:
    """AVATAR's extension: the stock voices ``voice`` may name, with the OpenAI names mapped to each."""
    voices = [
        StockVoice(
            id=info.voice_id,
            name=info.name,
            engine=info.engine,
            languages=list(info.languages),
            tier=info.mode.value,
            openai_names=names,
        )
        for info, names in await compat.speech.stock_voices()
    ]
    return JSONResponse(StockVoiceList(data=voices).model_dump())


# --- chat ------------------------------------------------------------------------------------------------


def _chat_order(body: ChatBody) -> ChatOrder:
    if body.n != 1:
        raise InvalidInputError("only n=1 is supported", code="UNSUPPORTED_PARAMETER")
    if body.tools or body.functions:
        raise InvalidInputError("tools and functions are not supported", code="UNSUPPORTED_PARAMETER")
    messages = []
    for i, message in enumerate(body.messages):
        role = _CHAT_ROLES.get(message.role)
        if role is None:
            raise InvalidInputError(
                f"messages[{i}].role {message.role!r} is not supported (system, developer, user, assistant)",
                code="INVALID_MESSAGES",
            )
        messages.append(ChatMessage(role, message.text()))
    return ChatOrder(
        model=body.model,
        messages=tuple(messages),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
    )


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatBody, caller: CallerDep, compat: CompatDep) -> Response:
    chat = compat.chat
    reply = await chat.start(_chat_order(body), caller)
    deltas = chat.deltas(reply)
    ident, created = completion_id(), now()
    # The first piece is awaited here, so that a model that is down is a 503, not a broken stream.
    try:
        first = await anext(deltas, None)
    except ChatModelError:
        await deltas.aclose()
        raise
    if not body.stream:
        parts = [first or ""]
        parts += [piece async for piece in deltas]
        usage = Usage(
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            total_tokens=reply.prompt_tokens + reply.completion_tokens,
        )
        completion = ChatCompletion(
            id=ident,
            created=created,
            model=reply.model,
            choices=[
                Choice(message=AssistantMessage(content="".join(parts)), finish_reason=reply.finish_reason)
            ],
            usage=usage,
            emotion=reply.emotion.value if reply.emotion is not None else None,
        )
        return JSONResponse(completion.model_dump(exclude_none=True))
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(delta: Delta, finish: str | None = None) -> bytes:
        return ChatChunk(
            id=ident,
            created=created,
            model=reply.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
        ).data()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield chunk(Delta(role="assistant", content=""))
            if first:
                yield chunk(Delta(content=first))
            async for piece in deltas:
                yield chunk(Delta(content=piece))
        except ChatModelError as exc:  # mid-reply: the text so far stands, the reason is logged
            log.warning("chat reply cut short: %s", exc.message)
        finally:
            await deltas.aclose()
        last = ChatChunk(
            id=ident,
            created=created,
            model=reply.model,
            choices=[ChunkChoice(delta=Delta(), finish_reason=reply.finish_reason)],
            emotion=reply.emotion.value if reply.emotion is not None else None,
        )
        yield last.data()
        if include_usage:
            usage = Usage(
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                total_tokens=reply.prompt_tokens + reply.completion_tokens,
            )
            yield ChatChunk(id=ident, created=created, model=reply.model, choices=[], usage=usage).data()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


# --- CORS ------------------------------------------------------------------------------------------------


class OpenAICors:
    """CORS for ``/v1/*`` only, for the origins in ``openai.cors_origins`` (docs/configuration.md):
    browser pages there may call with an API key; no cookies cross origins. Other paths are
    untouched (same origin)."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials=False,
            expose_headers=[NOTICE_HEADER, VOICE_HEADER, SAMPLE_RATE_HEADER],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith("/v1/"):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_openai_cors(app: Any, settings: Settings) -> None:
    """Add :class:`OpenAICors` when origins are configured (default: none, same origin only)."""
    if settings.openai.cors_origins:
        app.add_middleware(OpenAICors, origins=list(settings.openai.cors_origins))


__all__ = ["install_openai_cors", "router"]
