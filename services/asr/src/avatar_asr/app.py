"""The ASR service's HTTP/WebSocket face (port 8004).

* ``WS /v1/stream?language=xx&sample_rate=16000&channels=1&return_audio=0``: binary frames are PCM16
  audio; text frames are JSON ``{"type": "config", "sample_rate", "channels"}``, ``{"type": "audio",
  "data": base64}``, ``{"type": "flush"}`` (finalize the utterance now, keep streaming) or
  ``{"type": "end"}`` (flush, then the server sends ``end`` and closes). The server
  sends ``ready``, ``speech_started``, ``partial``, ``final``, ``error`` and ``end`` (see
  :func:`event_message`).
* ``POST /v1/audio/transcriptions``: the OpenAI audio API (multipart ``file``, ``model``, ``language``,
  ``prompt``, ``response_format``, ``temperature``).
* ``GET /health``, ``GET /metrics`` (Prometheus).

Every refusal is ``{"error": {"code", "message", "trace_id"}}`` with a 4xx/5xx status, or an ``error``
message on the socket; the service stays up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from avatar_asr.config import SAMPLE_RATE, ASRConfig
from avatar_asr.engine import Recognition
from avatar_asr.errors import ASRError
from avatar_asr.metrics import ASRMetrics
from avatar_asr.service import ASRService, FileTranscription
from avatar_asr.stream import EventKind, RecognitionSession, StreamEvent
from avatar_common.audio import float_to_pcm16

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
_REFUSED_MEDIA = ("text/", "image/", "application/json", "application/xml", "application/pdf")


def error_body(code: str, message: str, trace_id: str | None = None) -> dict[str, dict[str, str]]:
    return {
        "error": {
            "code": code,
            "message": message,
            "type": "invalid_request_error",
            "trace_id": trace_id or str(uuid.uuid4()),
        }
    }


def _error_response(exc: ASRError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)


def recognition_json(rec: Recognition) -> dict[str, Any]:
    return {
        "text": rec.text,
        "confidence": round(rec.confidence, 4),
        "language": rec.language,
        "language_probability": round(rec.language_probability, 4),
        "low_confidence": rec.low_confidence,
        "duration": round(rec.duration, 3),
        "segments": [
            {"text": s.text, "start": round(s.start, 3), "end": round(s.end, 3)} for s in rec.segments
        ],
        "words": [
            {
                "word": w.word,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "probability": round(w.probability, 4),
            }
            for w in rec.words
        ],
        "filtered": list(rec.filtered),
    }


def event_message(event: StreamEvent, *, with_audio: bool = False) -> dict[str, Any]:
    """The JSON message of one stream event (``with_audio``: a final carries its PCM16, base64)."""
    msg: dict[str, Any] = {"type": event.kind.value, "stream_time_ms": round(event.stream_time_ms, 1)}
    if event.kind is EventKind.ERROR:
        msg.update(code=event.code, message=event.message, trace_id=str(uuid.uuid4()))
    elif event.kind is EventKind.SPEECH_STARTED:
        msg["audio_start_ms"] = round(event.audio_start_ms, 1)
    elif event.recognition is not None:
        msg.update(recognition_json(event.recognition))
        msg.update(
            is_final=event.kind is EventKind.FINAL,
            audio_start_ms=round(event.audio_start_ms, 1),
            audio_end_ms=round(event.audio_end_ms, 1),
            latency_ms=round(event.latency_ms, 1),
            since_speech_end_ms=round(event.since_speech_end_ms, 1),
        )
        if with_audio and event.utterance is not None:
            msg["audio"] = base64.b64encode(float_to_pcm16(event.utterance)).decode("ascii")
    return msg


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(rec: Recognition, fmt: str) -> str:
    """SRT or WebVTT of the segments."""
    sep = "," if fmt == "srt" else "."
    blocks = []
    for i, seg in enumerate(rec.segments, start=1):
        span = f"{_timestamp(seg.start, sep)} --> {_timestamp(seg.end, sep)}"
        blocks.append(f"{i}\n{span}\n{seg.text}\n" if fmt == "srt" else f"{span}\n{seg.text}\n")
    body = "\n".join(blocks)
    return body if fmt == "srt" else "WEBVTT\n\n" + body


def _verbose(result: FileTranscription) -> dict[str, Any]:
    rec = result.recognition
    return {
        "task": "transcribe",
        "language": rec.language or "",
        "duration": round(result.duration, 3),
        "text": rec.text,
        "segments": [
            {
                "id": i,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(s.avg_logprob, 4),
                "compression_ratio": 1.0,
                "no_speech_prob": round(s.no_speech_prob, 4),
            }
            for i, s in enumerate(rec.segments)
        ],
        "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in rec.words],
        "confidence": round(rec.confidence, 4),
        "low_confidence": rec.low_confidence,
        "language_probability": round(rec.language_probability, 4),
        "speech": [{"start": round(r.start, 3), "end": round(r.end, 3)} for r in result.speech],
        "filtered": list(rec.filtered),
    }


def _form_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ASRError("INVALID_INPUT", f"field {name!r} must be text")
    return value.strip() or None


def create_app(config: ASRConfig, *, service: ASRService | None = None, warm_up: bool = True) -> FastAPI:
    """The service app; pass ``service`` to share an already loaded model (it is then not closed here)."""
    metrics = ASRMetrics()
    owned = service is None
    svc = service or ASRService(config, observer=metrics)
    if not owned:
        svc.observer = metrics

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await svc.start(warm_up=warm_up and not svc.engine.loaded)
        try:
            yield
        finally:
            if owned:
                svc.close()

    app = FastAPI(title="AVATAR ASR", version="1", lifespan=lifespan)
    app.state.service = svc
    app.state.metrics = metrics

    @app.exception_handler(ASRError)
    async def _asr_error(_request: Request, exc: ASRError) -> JSONResponse:
        return _error_response(exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok" if svc.engine.loaded else "loading",
            "model": config.model_name,
            "device": config.device,
            "compute_type": config.compute_type,
            "active_streams": svc.active_streams,
            "queue_pending": svc.engine.queue.pending,
            "max_queue": config.max_queue,
        }

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.active_streams.set(svc.active_streams)
        metrics.queue_pending.set(svc.engine.queue.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": config.model_name, "object": "model", "owned_by": "avatar"}],
        }

    @app.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(request: Request) -> Response:
        try:
            return await _transcribe(request)
        except ASRError as exc:
            metrics.requests.labels("transcriptions", exc.code).inc()
            return _error_response(exc)

    async def _transcribe(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ASRError(
                "UNSUPPORTED_MEDIA_TYPE",
                f"send multipart/form-data with a `file` part, not {ctype or 'no content type'!r}",
                415,
            )
        try:
            form = await request.form()
        except Exception as exc:  # malformed multipart
            raise ASRError("INVALID_INPUT", f"malformed multipart body: {exc}") from exc
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(form.close)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ASRError("MISSING_FILE", "the multipart body has no `file` part holding an audio file")
            declared = (upload.content_type or "").lower()
            if declared.startswith(_REFUSED_MEDIA):
                raise ASRError("UNSUPPORTED_MEDIA_TYPE", f"{declared!r} is not audio", 415)
            response_format = _form_str(form.get("response_format"), "response_format") or "json"
            if response_format not in RESPONSE_FORMATS:
                raise ASRError(
                    "INVALID_INPUT", f"response_format must be one of {', '.join(RESPONSE_FORMATS)}"
                )
            raw_temp = _form_str(form.get("temperature"), "temperature")
            try:
                temperature = float(raw_temp) if raw_temp is not None else 0.0
            except ValueError as exc:
                raise ASRError("INVALID_INPUT", "temperature must be a number") from exc
            if not 0.0 <= temperature <= 1.0:
                raise ASRError("INVALID_INPUT", "temperature must be within 0..1")
            language = _form_str(form.get("language"), "language")
            prompt = _form_str(form.get("prompt"), "prompt")
            data = await upload.read(config.max_upload_bytes + 1)
        result = await svc.transcribe_file(data, language=language, prompt=prompt, temperature=temperature)
        metrics.requests.labels("transcriptions", "OK").inc()
        rec = result.recognition
        if response_format == "text":
            return PlainTextResponse(rec.text)
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(
                subtitles(rec, response_format),
                media_type="text/vtt" if response_format == "vtt" else "text/plain",
            )
        if response_format == "verbose_json":
            return JSONResponse(_verbose(result))
        return JSONResponse(
            {
                "text": rec.text,
                "language": rec.language,
                "confidence": round(rec.confidence, 4),
                "low_confidence": rec.low_confidence,
            }
        )

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        params = ws.query_params
        try:
            rate = int(params.get("sample_rate", SAMPLE_RATE))
            channels = int(params.get("channels", 1))
        except ValueError:
            await _refuse(ws, ASRError("INVALID_MESSAGE", "sample_rate and channels must be integers"))
            return
        try:
            session = svc.open_stream(language=params.get("language") or None)
        except ASRError as exc:
            await _refuse(ws, exc, close_code=1013)
            return
        metrics.active_streams.set(svc.active_streams)
        try:
            await _serve_stream(ws, session, rate, channels, params.get("return_audio") in ("1", "true"))
        finally:
            await session.aclose()
            metrics.active_streams.set(svc.active_streams)

    async def _refuse(ws: WebSocket, exc: ASRError, close_code: int = 1008) -> None:
        await ws.send_json(
            {"type": "error", "code": exc.code, "message": exc.message, "trace_id": str(uuid.uuid4())}
        )
        await ws.close(close_code)

    async def _serve_stream(
        ws: WebSocket, session: RecognitionSession, rate: int, channels: int, with_audio: bool
    ) -> None:
        await ws.send_json({"type": "ready", "sample_rate": SAMPLE_RATE, "protocol": 1})

        async def sender() -> None:
            async for event in session.events():
                await ws.send_json(event_message(event, with_audio=with_audio))
            with contextlib.suppress(RuntimeError):
                await ws.close(1000)

        send_task = asyncio.create_task(sender())
        state = {"rate": rate, "channels": channels}
        ended = False
        try:
            while not ended:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await session.push_pcm(message["bytes"], state["rate"], state["channels"])
                    continue
                ended = not await _control(ws, session, message.get("text") or "", state)
        except WebSocketDisconnect:
            pass
        finally:
            if not ended:
                await session.aclose()  # the client left: cancel its pending decodes
            with contextlib.suppress(Exception):
                await send_task

    async def _control(ws: WebSocket, session: RecognitionSession, text: str, state: dict[str, int]) -> bool:
        """Handle one JSON control message; False once the input has ended."""
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("not an object")
        except ValueError:
            await ws.send_json(
                {
                    "type": "error",
                    "code": "INVALID_JSON",
                    "message": "text frames must be JSON objects",
                    "trace_id": str(uuid.uuid4()),
                }
            )
            return True
        kind = msg.get("type")
        if kind == "end":
            await session.end_input()
            return False
        if kind == "flush":
            await session.flush()
            return True
        if kind == "config":
            try:
                state["rate"] = int(msg.get("sample_rate", state["rate"]))
                state["channels"] = int(msg.get("channels", state["channels"]))
            except (TypeError, ValueError):
                await ws.send_json(
                    {
                        "type": "error",
                        "code": "INVALID_MESSAGE",
                        "message": "sample_rate and channels must be integers",
                        "trace_id": str(uuid.uuid4()),
                    }
                )
            return True
        if kind == "audio":
            try:
                pcm = base64.b64decode(str(msg.get("data", "")), validate=True)
            except ValueError:
                await ws.send_json(
                    {
                        "type": "error",
                        "code": "INVALID_AUDIO",
                        "message": "data is not base64",
                        "trace_id": str(uuid.uuid4()),
                    }
                )
                return True
            await session.push_pcm(pcm, state["rate"], state["channels"])
            return True
        await ws.send_json(
            {
                "type": "error",
                "code": "UNKNOWN_MESSAGE_TYPE",
                "message": f"unknown message type {kind!r}; use config, audio or end",
                "trace_id": str(uuid.uuid4()),
            }
        )
        return True

    return app
