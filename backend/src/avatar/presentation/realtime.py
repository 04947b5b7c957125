"""The realtime conversation endpoint ``/ws/{session_id}`` (docs/protocol.md, version 1).

One connection drives one :class:`ConversationSession`: a receive loop validates and routes
client messages (bad input gets an ``error`` event or a close code, never takes the server down),
a send loop drains the session's outbox, and a heartbeat keeps idle connections alive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time

from fastapi import APIRouter, WebSocket
from prometheus_client import Gauge
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from avatar.application.conversation import (
    ConversationSession,
    SessionEndedError,
    TokenError,
)
from avatar.application.conversation.events import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
    PROTOCOL_VERSION,
    SUPPORTED_SAMPLE_RATES,
    AudioChunkIn,
    AudioChunkMsg,
    AuthIn,
    EndOfUtteranceIn,
    HeartbeatMsg,
    InterruptIn,
    PingIn,
    PongMsg,
    SetTTSModeIn,
    TextInputIn,
)
from avatar.application.validation import JsonInputError, strict_json_loads
from avatar.bootstrap import Services
from avatar.domain.errors import CapacityError, NotFoundError
from avatar.domain.models import AudioChunk
from avatar.presentation.audio_frames import BINARY_AUDIO, FrameError, decode_audio_in, encode_audio_out
from avatar.presentation.wire import encode
from avatar.presentation.wire import error as _error
from avatar.presentation.ws_security import (
    CLOSE_NOT_FOUND,
    CLOSE_TOKEN,
    authenticate_session_socket,
)
from avatar.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

CLOSE_REPLACED = 4409
CLOSE_ENDED = 4410
CLOSE_BUSY = 4429
CLOSE_TOO_LARGE = 1009
#: Audio a client may send ahead of real time before the flood limit applies.
FLOOD_BURST_MS = 3000.0

WS_CONNECTIONS = Gauge("websocket_connections_active", "Open conversation WebSockets")


class FloodGuard:
    """Refuses audio arriving faster than ``speedup`` x real time (after a small burst)."""

    def __init__(self, speedup: float) -> None:
        self.speedup = speedup
        self.started = time.monotonic()
        self.audio_ms = 0.0
        self.last_report = 0.0

    def admit(self, duration_ms: float) -> bool:
        elapsed_ms = (time.monotonic() - self.started) * 1000.0
        if self.audio_ms + duration_ms > FLOOD_BURST_MS + elapsed_ms * self.speedup:
            return False
        self.audio_ms += duration_ms
        return True

    def should_report(self) -> bool:
        now = time.monotonic()
        if now - self.last_report >= 1.0:
            self.last_report = now
            return True
        return False


class _Connection:
    """One accepted socket bound to a session."""

    def __init__(
        self, websocket: WebSocket, session: ConversationSession, settings: Settings, *, binary: bool = False
    ) -> None:
        self.ws = websocket
        #: The client asked for binary audio frames (``?audio=binary``, docs/protocol.md).
        self.binary = binary
        self.session = session
        self.settings = settings
        self.sample_rate = 16000
        self.flood = FloodGuard(settings.conversation.max_audio_speedup)
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    async def close(self, code: int, reason: str) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)

    async def send_loop(self) -> None:
        outbox = self.session.outbox
        while True:
            message = await outbox.get()
            if self.binary and isinstance(message, AudioChunkMsg):
                await self.ws.send_bytes(encode_audio_out(message))
            else:
                await self.ws.send_text(encode(message))

    async def heartbeat_loop(self) -> None:
        interval = self.settings.conversation.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            self.session.outbox.send(HeartbeatMsg(t=time.time() * 1000.0))

    async def receive_loop(self) -> None:
        max_bytes = self.settings.conversation.max_frame_bytes
        while True:
            frame = await self.ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text: str | None = frame.get("text")
            data: bytes | None = frame.get("bytes")
            size = len(text.encode()) if text is not None else len(data or b"")
            if size > max_bytes:
                await self.ws.send_text(
                    _error("FRAME_TOO_LARGE", f"a frame of {size} bytes exceeds the {max_bytes}-byte limit")
                )
                await self.close(CLOSE_TOO_LARGE, "frame too large")
                return
            if data is not None:
                await self._binary(data)
            elif text is not None:
                await self._text(text)

    async def _binary(self, data: bytes) -> None:
        if not self.binary:
            await self.ws.send_text(
                _error(
                    "INVALID_AUDIO",
                    "binary frames need ?audio=binary when connecting (docs/protocol.md, "
                    '"Binary audio frames"); otherwise send audio_chunk JSON',
                )
            )
            return
        try:
            frame = decode_audio_in(data)
        except FrameError as exc:
            await self.ws.send_text(_error(exc.code, exc.message))
            return
        await self._audio(frame.pcm, frame.sample_rate, frame.timestamp_ms)

    async def _text(self, text: str) -> None:
        try:
            raw = strict_json_loads(text)
        except JsonInputError as exc:
            await self.ws.send_text(_error("INVALID_JSON", f"the message is refused: {exc}"))
            return
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await self.ws.send_text(
                _error("INVALID_MESSAGE", 'a message must be a JSON object with a "type"')
            )
            return
        if raw["type"] not in CLIENT_TYPES:
            await self.ws.send_text(
                _error(
                    "UNKNOWN_MESSAGE_TYPE", f"unknown message type {raw['type'][:40]!r}; see docs/protocol.md"
                )
            )
            return
        try:
            message = CLIENT_MESSAGE.validate_python(raw)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            await self.ws.send_text(_error("INVALID_MESSAGE", f"invalid {raw['type']}: {detail[:300]}"))
            return
        session = self.session
        if isinstance(message, AudioChunkIn):
            try:
                pcm = base64.b64decode(message.data, validate=True)
            except (binascii.Error, ValueError):
                await self.ws.send_text(_error("INVALID_AUDIO", "audio_chunk.data is not valid base64"))
                return
            await self._audio(pcm, message.sr, message.timestamp)
        elif isinstance(message, SetTTSModeIn):
            await session.set_tts_mode(message.mode, message.voice, message.voice_profile_id)
        elif isinstance(message, InterruptIn):
            await session.interrupt(message.heard_text, message.played_ms)
        elif isinstance(message, TextInputIn):
            await session.text_input(message.text)
        elif isinstance(message, EndOfUtteranceIn):
            await session.end_utterance()
        elif isinstance(message, PingIn):
            await self.ws.send_text(encode(PongMsg(t=message.t)))
        elif isinstance(message, AuthIn):
            await self.ws.send_text(
                _error(
                    "INVALID_MESSAGE",
                    "auth is only accepted as the first frame; this socket is authenticated",
                )
            )

    async def _audio(self, pcm: bytes, sample_rate: int, timestamp: float | None) -> None:
        if sample_rate not in SUPPORTED_SAMPLE_RATES:
            rates = ", ".join(str(r) for r in sorted(SUPPORTED_SAMPLE_RATES))
            await self.ws.send_text(
                _error(
                    "UNSUPPORTED_SAMPLE_RATE",
                    f"sample rate {sample_rate} Hz is not supported (use one of {rates})",
                )
            )
            return
        if not pcm or len(pcm) % 2:
            await self.ws.send_text(
                _error("INVALID_AUDIO", "audio must be PCM16 mono: a non-empty, even number of bytes")
            )
            return
        self.sample_rate = sample_rate
        # timestamp is finite and bounded (AudioChunkIn): int() cannot overflow here.
        chunk = AudioChunk(pcm=pcm, sample_rate=sample_rate, timestamp_ms=int(timestamp or 0))
        if not self.flood.admit(chunk.duration_ms):
            if self.flood.should_report():
                await self.ws.send_text(
                    _error(
                        "AUDIO_FLOOD",
                        f"audio arrives faster than {self.flood.speedup:g}x real time; "
                        "chunks are dropped until the stream slows down",
                    )
                )
            return
        await self.session.push_audio(chunk)


@router.websocket("/ws/{session_id}")
async def conversation(websocket: WebSocket, session_id: str) -> None:
    """The realtime conversation (see docs/protocol.md)."""
    app = websocket.app
    settings: Settings = app.state.settings
    services: Services = app.state.services
    manager = services.sessions
    authenticated = await authenticate_session_socket(
        websocket, session_id, settings, protocol_version=PROTOCOL_VERSION
    )
    if authenticated is None:
        return
    sid, token = authenticated
    holder: dict[str, _Connection] = {}
    try:
        session, resumed, previous = await manager.attach(sid, holder, token)
    except TokenError as exc:
        await websocket.close(CLOSE_TOKEN, exc.message[:120])
        return
    except NotFoundError as exc:
        await websocket.close(CLOSE_NOT_FOUND, exc.message[:120])
        return
    except SessionEndedError as exc:
        await websocket.close(CLOSE_ENDED, exc.message[:120])
        return
    except CapacityError as exc:
        await websocket.send_text(_error("BUSY", exc.message))
        retry = f"; retry after {exc.retry_after_s} s" if exc.retry_after_s is not None else ""
        await websocket.close(CLOSE_BUSY, f"busy{retry}")
        return
    if isinstance(previous, dict) and "connection" in previous:
        await previous["connection"].close(CLOSE_REPLACED, "replaced by a newer connection to this session")
    framing = websocket.query_params.get("audio")
    binary = framing == BINARY_AUDIO
    conn = _Connection(websocket, session, settings, binary=binary)
    holder["connection"] = conn
    WS_CONNECTIONS.inc()
    try:
        state = session.context.state_message(resumed=resumed)
        if binary:  # the first session_state confirms the framing (docs/protocol.md)
            state = state.model_copy(update={"audio_frames": BINARY_AUDIO})
        await websocket.send_text(encode(state))
        if framing is not None and framing not in (BINARY_AUDIO, "json"):
            await websocket.send_text(
                _error("INVALID_MESSAGE", "audio= must be binary or json; audio stays JSON + base64")
            )
        conn.tasks = [asyncio.create_task(conn.send_loop()), asyncio.create_task(conn.heartbeat_loop())]
        await conn.receive_loop()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("session %s: connection failed", sid)
        await conn.close(1011, "internal error")
    finally:
        WS_CONNECTIONS.dec()
        for task in conn.tasks:
            task.cancel()
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        manager.detach(sid, holder)
        await manager.save_state(sid)
