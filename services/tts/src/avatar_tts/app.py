"""The TTS service's HTTP API (ports 8002 fast / 8003 HQ, or one app serving both).

- ``POST /v1/audio/speech``: OpenAI-compatible (``model``, ``input``, ``voice``, ``response_format``
  wav|pcm|mp3|opus|flac, ``speed``), the body streamed as clauses are synthesized. ``pcm`` (raw
  s16le), ``wav`` (a streaming header) and ``mp3`` (one encoder's frames) go out clause by clause;
  ``opus`` and ``flac`` containers are written once the utterance is complete. Extra fields:
  ``language``, ``instructions`` (a style, for engines that follow one) and a reference clip
  (``reference_audio`` base64, ``reference_text``, ``reference_embedding``).
  The voice ``default`` (or ``auto``) picks the tier's voice for the text's language.
  Headers ``X-Sample-Rate``, ``X-TTS-Engine``, ``X-TTS-Voice``, ``X-TTS-Mode``, ``X-TTS-Notice``.
- ``WS /v1/audio/speech/stream``: text arrives piece by piece (an LLM token stream), PCM16 frames go
  back as soon as each clause is synthesized; ``{"type": "cancel"}`` stops it (barge-in).
- ``GET /v1/voices``, ``GET /health``, ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from avatar_common.audio import AudioDecodeError, decode_audio, encode_audio, float_to_pcm16
from avatar_tts.engine import Reference, Tier
from avatar_tts.errors import InvalidTextError, TTSError, UnknownModelError
from avatar_tts.service import TTSService, Utterance

log = logging.getLogger(__name__)

AudioFormat = Literal["wav", "pcm", "mp3", "opus", "flac"]
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
}
#: OpenAI model names and our own, to the tier they ask for.
MODEL_TIERS = {
    "tts-1": Tier.FAST,
    "gpt-4o-mini-tts": Tier.FAST,
    "tts-fast": Tier.FAST,
    "fast": Tier.FAST,
    "tts-1-hd": Tier.HQ,
    "tts-hq": Tier.HQ,
    "hq": Tier.HQ,
}
MAX_REFERENCE_BYTES = 8 * 1024 * 1024


class SpeechCreate(BaseModel):
    """``POST /v1/audio/speech`` body (OpenAI's fields plus ``language`` and a reference clip)."""

    model_config = ConfigDict(extra="ignore")

    model: str = "tts-1"
    input: str
    voice: str = "default"
    response_format: AudioFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    #: Voice pitch factor (varispeed, avatar_tts.pitch): the reply's emotion (docs/avatar-control.md).
    pitch: float = Field(default=1.0, ge=0.5, le=2.0)
    language: str | None = None
    #: A style ("speak cheerfully"), followed by engines that can (CosyVoice's instruct mode).
    instructions: str | None = Field(default=None, max_length=2000)
    reference_audio: str | None = Field(default=None, description="base64 of a WAV/FLAC/MP3/... clip")
    reference_text: str = ""
    reference_embedding: list[float] | None = None


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message, "trace_id": str(uuid.uuid4())}}


def _tier_for(service: TTSService, model: str) -> Tier:
    key = model.strip().lower()
    if key in MODEL_TIERS:
        return MODEL_TIERS[key]
    engine = service.engines.get(key)
    if engine is not None:
        return engine.tier
    raise UnknownModelError(
        f"unknown model {model!r}; use tts-1 (fast), tts-1-hd (HQ) or an engine name "
        f"({', '.join(sorted(service.engines))})"
    )


def _reference(body: SpeechCreate) -> Reference | None:
    if body.reference_audio is None:
        return None
    try:
        raw = base64.b64decode(body.reference_audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTextError("reference_audio is not valid base64", code="INVALID_REFERENCE") from exc
    if len(raw) > MAX_REFERENCE_BYTES:
        raise InvalidTextError("reference_audio is larger than 8 MB", code="INVALID_REFERENCE")
    try:
        decoded = decode_audio(raw, max_seconds=60)
    except AudioDecodeError as exc:
        raise InvalidTextError(f"reference_audio: {exc}", code="INVALID_REFERENCE") from exc
    embedding = tuple(body.reference_embedding) if body.reference_embedding else None
    return Reference(decoded.samples, decoded.sample_rate, body.reference_text, embedding)


def streaming_wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown length" (the body is streamed)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", unknown)


def _header_safe(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


class Mp3StreamEncoder:
    """One MP3 encoder for a whole utterance: raw MPEG frames, fed clause by clause.

    Encoding each clause on its own would start a new stream (with its own Xing header) every
    time, and players stop at the first one.
    """

    def __init__(self, sample_rate: int) -> None:
        import av

        self._av = av
        self._rate = sample_rate
        self._ctx: Any = av.CodecContext.create("libmp3lame", "w")
        self._ctx.sample_rate = sample_rate
        self._ctx.layout = "mono"
        self._ctx.format = "fltp"
        self._ctx.bit_rate = 64000
        self._ctx.open()
        self._pending = np.zeros(0, np.float32)

    def _frames(self, block: np.ndarray) -> bytes:
        frame = self._av.AudioFrame.from_ndarray(block.reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate = self._rate
        return b"".join(bytes(p) for p in self._ctx.encode(frame))

    def encode(self, samples: np.ndarray) -> bytes:
        data = np.concatenate([self._pending, np.clip(samples, -1.0, 1.0).astype(np.float32)])
        size = int(self._ctx.frame_size)
        whole = len(data) // size * size
        out = b"".join(self._frames(data[i : i + size]) for i in range(0, whole, size))
        self._pending = data[whole:]
        return out

    def finish(self) -> bytes:
        out = self._frames(self._pending) if self._pending.size else b""
        return out + b"".join(bytes(p) for p in self._ctx.encode(None))


async def _encode_stream(utt: Utterance, fmt: str) -> AsyncIterator[bytes]:
    try:
        if fmt == "mp3":
            encoder = Mp3StreamEncoder(utt.sample_rate)
            async for audio in utt.chunks():
                yield encoder.encode(audio)
            yield encoder.finish()
        elif fmt in ("pcm", "wav"):
            if fmt == "wav":
                yield streaming_wav_header(utt.sample_rate)
            async for audio in utt.chunks():
                yield float_to_pcm16(audio)
        else:
            whole = await utt.read_all()
            yield await asyncio.to_thread(encode_audio, whole, utt.sample_rate, fmt)
    except TTSError as exc:
        # Headers are gone: the body ends early; the error is logged for the operator.
        log.warning("synthesis stopped mid-stream: %s: %s", exc.code, exc.message)
    finally:
        await utt.aclose()


def create_app(service: TTSService, *, title: str = "AVATAR TTS") -> FastAPI:
    """The service app around a (not yet started) :class:`TTSService`."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.aclose()

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(TTSError)
    async def _tts_error(_request: Request, exc: TTSError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        message = "; ".join(parts) or "invalid request"
        return JSONResponse(error_body("INVALID_INPUT", message), status_code=422)

    @app.post("/v1/audio/speech", response_model=None)
    async def speech(body: SpeechCreate) -> Response:
        tier = _tier_for(service, body.model)
        voice = None if body.voice in ("default", "auto", "") else body.voice
        utt = await service.synthesize(
            body.input,
            tier=tier,
            voice=voice,
            language=body.language,
            speed=body.speed,
            reference=_reference(body),
            pitch=body.pitch,
            instructions=body.instructions,
        )
        headers = {
            "X-Sample-Rate": str(utt.sample_rate),
            "X-TTS-Engine": utt.engine,
            "X-TTS-Voice": _header_safe(utt.voice),
            "X-TTS-Mode": utt.mode.value,
        }
        if utt.notice:
            headers["X-TTS-Notice"] = _header_safe(utt.notice)
        return StreamingResponse(
            _encode_stream(utt, body.response_format),
            media_type=MEDIA_TYPES[body.response_format],
            headers=headers,
        )

    @app.get("/v1/voices")
    async def voices() -> dict[str, list[dict[str, Any]]]:
        return {
            "voices": [
                {
                    "id": v.voice_id,
                    "name": v.name,
                    "engine": v.engine,
                    "languages": list(v.languages),
                    "tier": v.tier.value,
                    "can_clone": v.can_clone,
                }
                for v in service.voices()
            ]
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **await service.health()}

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/v1/audio/speech/stream")
    async def speech_stream(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                start = await ws.receive_json()
                if not isinstance(start, dict) or start.get("type") != "start":
                    await ws.send_json(
                        {
                            "type": "error",
                            **error_body("INVALID_MESSAGE", 'send {"type": "start", ...} first')["error"],
                        }
                    )
                    continue
                await _stream_one(ws, service, start)
        except WebSocketDisconnect:
            return

    return app


async def _stream_one(ws: WebSocket, service: TTSService, start: dict[str, Any]) -> None:
    """One utterance over the WebSocket: text pieces in, PCM16 frames out."""
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    cancelled = asyncio.Event()

    async def text() -> AsyncIterator[str]:
        while (piece := await pieces.get()) is not None:
            yield piece

    async def reader() -> None:
        while True:
            msg = await ws.receive_json()
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "text" and isinstance(msg.get("text"), str):
                await pieces.put(msg["text"])
            elif kind == "end":
                await pieces.put(None)
            elif kind == "cancel":
                cancelled.set()
                await pieces.put(None)
                if utt is not None:
                    await utt.aclose()  # barge-in: stop synthesis now, not after the next clause
                return
            else:
                await ws.send_json(
                    {
                        "type": "error",
                        **error_body("INVALID_MESSAGE", 'expected {"type": "text"|"end"|"cancel"}')["error"],
                    }
                )

    utt: Utterance | None = None
    read_task = asyncio.create_task(reader())
    try:
        tier = _tier_for(service, str(start.get("model", "tts-1")))
        speed = float(start.get("speed", 1.0))
        voice = start.get("voice") or None
        synth = asyncio.create_task(
            service.synthesize(
                pieces=text(),
                tier=tier,
                voice=voice if voice != "default" else None,
                language=start.get("language"),
                speed=speed,
            )
        )
        done, _ = await asyncio.wait({synth, read_task}, return_when=asyncio.FIRST_COMPLETED)
        if synth not in done:
            synth.cancel()
            with contextlib.suppress(asyncio.CancelledError, TTSError):
                await synth
            read_task.result()  # a disconnect propagates
            await ws.send_json({"type": "cancelled"})
            return
        utt = synth.result()
        await ws.send_json(
            {
                "type": "start",
                "sample_rate": utt.sample_rate,
                "engine": utt.engine,
                "voice": utt.voice,
                "mode": utt.mode.value,
                "notice": utt.notice,
            }
        )
        audio_s = 0.0
        async for audio in utt.chunks():
            if cancelled.is_set():
                break
            audio_s += audio.size / utt.sample_rate
            await ws.send_bytes(float_to_pcm16(audio))
        if cancelled.is_set():
            await utt.aclose()
            await ws.send_json({"type": "cancelled"})
        else:
            await ws.send_json({"type": "done", "audio_seconds": round(audio_s, 3)})
    except (TTSError, ValueError) as exc:
        code = exc.code if isinstance(exc, TTSError) else "INVALID_INPUT"
        message = exc.message if isinstance(exc, TTSError) else str(exc)
        await ws.send_json({"type": "error", **error_body(code, message)["error"]})
    finally:
        if utt is not None:
            await utt.aclose()
        if not read_task.done():
            read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await read_task
