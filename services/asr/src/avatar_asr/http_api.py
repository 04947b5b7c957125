"""The service's HTTP routes: OpenAI ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``
(Whisper's translation into English), ``/v1/models``, ``/health``, ``/metrics``.

Silence (no speech found) is a 200 with empty text and ``X-Avatar-Notice: NO_SPEECH`` (also the
``notice`` field of the JSON formats), as OpenAI clients expect; every refusal is OpenAI's error
shape (``wire.ErrorBody``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from avatar_asr.engine import Recognition
from avatar_asr.errors import ASRError
from avatar_asr.metrics import ASRMetrics
from avatar_asr.service import ASRService
from avatar_asr.wire import (
    NOTICE_HEADER,
    RESPONSE_FORMATS,
    ErrorBody,
    TranscriptionJSON,
    VerboseTranscription,
    dump,
)

_REFUSED_MEDIA = ("text/", "image/", "application/json", "application/xml", "application/pdf")


def error_response(exc: ASRError) -> JSONResponse:
    return JSONResponse(ErrorBody.of(exc.code, exc.message, status=exc.status).model_dump(), exc.status)


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


def _form_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ASRError("INVALID_INPUT", f"field {name!r} must be text")
    return value.strip() or None


def build_http_router(svc: ASRService, metrics: ASRMetrics) -> APIRouter:
    router = APIRouter()
    config = svc.config

    @router.get("/health")
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

    @router.get("/metrics")
    async def prometheus_metrics() -> Response:
        metrics.active_streams.set(svc.active_streams)
        metrics.queue_pending.set(svc.engine.queue.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": config.model_name, "object": "model", "owned_by": "avatar"}],
        }

    @router.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(request: Request) -> Response:
        try:
            return await _transcribe(request, "transcribe")
        except ASRError as exc:
            metrics.requests.labels("transcriptions", exc.code).inc()
            return error_response(exc)

    @router.post("/v1/audio/translations", response_model=None)
    async def translations(request: Request) -> Response:
        try:
            return await _transcribe(request, "translate")
        except ASRError as exc:
            metrics.requests.labels("translations", exc.code).inc()
            return error_response(exc)

    async def _transcribe(request: Request, task: str) -> Response:
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
        result = await svc.transcribe_file(
            data, language=language, prompt=prompt, temperature=temperature, task=task
        )
        endpoint = "translations" if task == "translate" else "transcriptions"
        metrics.requests.labels(endpoint, result.notice or "OK").inc()
        headers = {NOTICE_HEADER: result.notice} if result.notice else None
        rec = result.recognition
        if response_format == "text":
            return PlainTextResponse(rec.text, headers=headers)
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(
                subtitles(rec, response_format),
                media_type="text/vtt" if response_format == "vtt" else "text/plain",
                headers=headers,
            )
        if response_format == "verbose_json":
            kind: Literal["transcribe", "translate"] = "translate" if task == "translate" else "transcribe"
            verbose = VerboseTranscription.of(result, task=kind)
            return JSONResponse(dump(verbose), headers=headers)
        body = TranscriptionJSON(
            text=rec.text,
            language=rec.language,
            confidence=round(rec.confidence, 4),
            low_confidence=rec.low_confidence,
            notice=result.notice,
        )
        return JSONResponse(dump(body), headers=headers)

    return router
