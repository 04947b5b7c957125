"""The service's WebSocket route ``/v1/stream``: a live recognition stream per connection.

Query: ``language``, ``sample_rate`` (default 16000), ``channels`` (1|2), ``return_audio=1``. Binary
frames are PCM16 audio; text frames are the JSON messages of ``wire.py`` (``config``, ``audio``,
``flush``, ``end``). The server sends ``ready``, then ``speech_started``, ``partial``, ``final``,
``error`` and ``end`` (``wire.event_message``). A bad message is an ``error`` message; the stream
goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from avatar_asr.config import SAMPLE_RATE
from avatar_asr.errors import ASRError
from avatar_asr.metrics import ASRMetrics
from avatar_asr.service import ASRService
from avatar_asr.stream import RecognitionSession
from avatar_asr.wire import (
    AudioMessage,
    ConfigMessage,
    EndInputMessage,
    ErrorMessage,
    FlushMessage,
    ReadyMessage,
    ServerMessage,
    dump,
    event_message,
    parse_client_message,
)


@dataclass(slots=True)
class _Format:
    rate: int
    channels: int


async def _send(ws: WebSocket, message: ServerMessage) -> None:
    await ws.send_json(dump(message))


async def _refuse(ws: WebSocket, exc: ASRError, close_code: int = 1008) -> None:
    await _send(ws, ErrorMessage.of(exc))
    await ws.close(close_code)


def build_ws_router(svc: ASRService, metrics: ASRMetrics) -> APIRouter:
    router = APIRouter()

    @router.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        params = ws.query_params
        try:
            fmt = _Format(int(params.get("sample_rate", SAMPLE_RATE)), int(params.get("channels", 1)))
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
            await _serve(ws, session, fmt, params.get("return_audio") in ("1", "true"))
        finally:
            await session.aclose()
            metrics.active_streams.set(svc.active_streams)

    return router


async def _serve(ws: WebSocket, session: RecognitionSession, fmt: _Format, with_audio: bool) -> None:
    await _send(ws, ReadyMessage(sample_rate=SAMPLE_RATE))

    async def sender() -> None:
        async for event in session.events():
            await _send(ws, event_message(event, with_audio=with_audio))
        with contextlib.suppress(RuntimeError):
            await ws.close(1000)

    send_task = asyncio.create_task(sender())
    ended = False
    try:
        while not ended:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await session.push_pcm(message["bytes"], fmt.rate, fmt.channels)
                continue
            try:
                ended = await _control(session, message.get("text") or "", fmt)
            except ASRError as exc:
                await _send(ws, ErrorMessage.of(exc))
    except WebSocketDisconnect:
        pass
    finally:
        if not ended:
            await session.aclose()  # the client left: cancel its pending decodes
        with contextlib.suppress(Exception):
            await send_task


async def _control(session: RecognitionSession, text: str, fmt: _Format) -> bool:
    """Carry out one JSON control message; True once the input has ended."""
    match parse_client_message(text):
        case EndInputMessage():
            await session.end_input()
            return True
        case FlushMessage():
            await session.flush()
        case ConfigMessage(sample_rate=rate, channels=channels):
            fmt.rate = fmt.rate if rate is None else rate
            fmt.channels = fmt.channels if channels is None else channels
        case AudioMessage() as audio:
            await session.push_pcm(audio.pcm(), fmt.rate, fmt.channels)
    return False
