"""The prosody service (port 8005): ``POST /analyze``, ``GET /health``, ``GET /metrics``.

``POST /analyze`` takes either a multipart form (``file``: any audio file; optional ``baseline``: a
JSON object of the speaker's feature means) or a raw body: an audio file (WAV, FLAC, OGG, MP3, ...)
or, with ``Content-Type: audio/L16`` (or ``audio/pcm``) and ``?sample_rate=``, raw PCM16 mono. A
``baseline`` query parameter (JSON) works with a raw body. Errors are
``{"error": {"code", "message", "trace_id"}}``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)
from starlette.datastructures import UploadFile

from avatar_common.audio import AudioDecodeError, decode_audio, pcm16_to_float
from avatar_prosody.analyzer import Analysis, BusyError, ProsodyEngine, WorkerLostError
from avatar_prosody.config import ServiceConfig as ServiceConfig
from avatar_prosody.metrics import ProsodyMetrics

log = logging.getLogger(__name__)

RAW_PCM_TYPES = ("audio/l16", "audio/pcm", "audio/x-pcm", "application/octet-stream")


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "trace_id": str(uuid.uuid4())}}
    return JSONResponse(body, status_code=status)


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def analysis_body(result: Analysis) -> dict[str, Any]:
    """The JSON shape of one analysis (documented in docs/prosody.md)."""
    return {
        "scores": result.scores(),
        "reliable": result.reliable,
        "reason": result.reason,
        "features": {k: _json_safe(v) for k, v in result.features.items()},
        "explanation": result.explanation,
        "baseline_used": result.baseline_used,
        "duration_s": result.duration_s,
        "elapsed_ms": round(result.elapsed_ms, 1),
    }


def parse_baseline(raw: str | None) -> dict[str, float] | None:
    """A baseline from JSON text: an object of finite numbers (others are refused)."""
    if raw is None or raw == "":
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(422, "INVALID_BASELINE", f"baseline is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise RequestError(422, "INVALID_BASELINE", "baseline must be a JSON object of feature means")
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RequestError(422, "INVALID_BASELINE", f"baseline value for {key!r} must be a finite number")
        out[str(key)] = float(value)
    return out or None


def _decode(data: bytes, content_type: str, sample_rate: str | None, max_seconds: float) -> tuple[Any, int]:
    if not data:
        raise RequestError(422, "INVALID_AUDIO", "the request carries no audio")
    if content_type in RAW_PCM_TYPES and sample_rate is not None:
        try:
            rate = int(sample_rate)
        except ValueError as exc:
            raise RequestError(422, "INVALID_SAMPLE_RATE", "sample_rate must be an integer") from exc
        if len(data) % 2:
            raise RequestError(422, "INVALID_AUDIO", "PCM16 audio must have an even number of bytes")
        if rate <= 0:
            raise RequestError(422, "INVALID_SAMPLE_RATE", "sample_rate must be positive")
        samples = pcm16_to_float(data)
        if samples.size / rate > max_seconds:
            raise RequestError(413, "AUDIO_TOO_LONG", f"audio is longer than the {max_seconds:.0f} s limit")
        return samples, rate
    try:
        decoded = decode_audio(data, max_seconds=max_seconds)
    except AudioDecodeError as exc:
        if exc.reason == "too_long":
            raise RequestError(413, "AUDIO_TOO_LONG", str(exc)) from exc
        raise RequestError(422, "INVALID_AUDIO", str(exc)) from exc
    return decoded.samples, decoded.sample_rate


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """Build the service; the worker pool starts in the lifespan and stops with it."""
    cfg = config or ServiceConfig()
    metrics = ProsodyMetrics()
    engine = ProsodyEngine(cfg.workers, executor=cfg.executor, max_pending=cfg.max_pending)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if cfg.warm_up:
            await engine.warm_up()
        try:
            yield
        finally:
            await engine.aclose()

    app = FastAPI(title="AVATAR prosody", version="0.1.0", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(RequestError)
    async def _request_error(_request: Request, exc: RequestError) -> JSONResponse:
        metrics.results.labels(outcome="rejected").inc()
        return _error(exc.status, exc.code, exc.message)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok" if engine.ready else "starting",
            "workers": engine.workers,
            "executor": engine.executor_kind,
            "pending": engine.pending,
            "max_pending": engine.max_pending,
        }

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        metrics.pending.set(engine.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/analyze")
    async def analyze(request: Request) -> JSONResponse:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > cfg.max_bytes:
            raise RequestError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {cfg.max_bytes} bytes")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        params: Mapping[str, str] = request.query_params
        baseline_raw = params.get("baseline")
        sample_rate = params.get("sample_rate")
        if content_type == "multipart/form-data":
            async with request.form(max_files=1, max_fields=4) as form:
                upload = form.get("file") or form.get("audio")
                if not isinstance(upload, UploadFile):
                    raise RequestError(422, "INVALID_AUDIO", "the form needs a 'file' part with the audio")
                data = await upload.read(cfg.max_bytes + 1)
                content_type = (upload.content_type or "").split(";")[0].strip().lower()
                form_baseline, form_rate = form.get("baseline"), form.get("sample_rate")
                if isinstance(form_baseline, str):
                    baseline_raw = form_baseline
                if isinstance(form_rate, str):
                    sample_rate = form_rate
        else:
            data = await request.body()
        if len(data) > cfg.max_bytes:
            raise RequestError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {cfg.max_bytes} bytes")
        baseline = parse_baseline(baseline_raw)
        samples, rate = _decode(data, content_type, sample_rate, cfg.max_seconds)
        started = time.perf_counter()
        try:
            result = await engine.analyze(np.asarray(samples, dtype=np.float32), rate, baseline)
        except BusyError as exc:
            raise RequestError(503, "BUSY", str(exc)) from exc
        except WorkerLostError as exc:
            raise RequestError(503, "WORKER_LOST", str(exc)) from exc
        except ValueError as exc:
            raise RequestError(422, "INVALID_AUDIO", str(exc)) from exc
        metrics.observe(result, time.perf_counter() - started)
        return JSONResponse(analysis_body(result))

    return app
