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
import json
import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, WebSocket
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from avatar.application.conversation import (
    HQ_TOPIC,
    BrainReplyEngine,
    ConversationConfig,
    ConversationDeps,
    ConversationSession,
    SessionEndedError,
    SessionManager,
    TextChunker,
    TokenError,
    make_hq_handler,
    verify_token,
)
from avatar.application.ports.session_state import SessionStateStore
from avatar.application.ports.tts import VoiceReference
from avatar.bootstrap import Container, avatar_hub, voice_styled
from avatar.domain.errors import CapacityError, NotFoundError
from avatar.domain.models import AudioChunk, TTSMode
from avatar.presentation.schemas import (
    CLIENT_MESSAGE,
    CLIENT_TYPES,
    PROTOCOL_VERSION,
    SUPPORTED_SAMPLE_RATES,
    AudioChunkIn,
    EndOfUtteranceIn,
    InterruptIn,
    PingIn,
    SetTTSModeIn,
    TextInputIn,
)
from avatar.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["realtime"])

CLOSE_TOKEN = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_REPLACED = 4409
CLOSE_ENDED = 4410
CLOSE_BUSY = 4429
CLOSE_TOO_LARGE = 1009
#: Audio a client may send ahead of real time before the flood limit applies.
FLOOD_BURST_MS = 3000.0

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 3.5, 5.0, 7.5, 10.0, 20.0)
E2E_LATENCY = Histogram(
    "conversation_e2e_latency_seconds", "End of user speech to the first reply audio sent", buckets=_BUCKETS
)
STAGE_LATENCY = Histogram(
    "conversation_stage_latency_seconds", "Latency of each pipeline stage", ["stage"], buckets=_BUCKETS
)
ACTIVE_SESSIONS = Gauge("active_sessions_count", "Live conversation sessions (connected or in grace)")
WS_CONNECTIONS = Gauge("websocket_connections_active", "Open conversation WebSockets")
WRITE_FAILURES = Counter("conversation_write_failures_total", "Writes given up after retries", ["what"])
INTERRUPTIONS = Counter("conversation_interruptions_total", "Replies interrupted by barge-in")


class PrometheusMetrics:
    def observe_stage(self, stage: str, seconds: float) -> None:
        STAGE_LATENCY.labels(stage=stage).observe(seconds)

    def observe_e2e(self, seconds: float) -> None:
        E2E_LATENCY.observe(seconds)

    def set_active_sessions(self, count: int) -> None:
        ACTIVE_SESSIONS.set(count)

    def write_failed(self, what: str) -> None:
        WRITE_FAILURES.labels(what=what).inc()

    def interrupted(self) -> None:
        INTERRUPTIONS.inc()


def _chunker() -> TextChunker:
    from avatar_common.text import ClauseChunker

    return ClauseChunker()


def _state_store(container: Container) -> SessionStateStore | None:
    """The store ``build_container`` registers (Redis in compose, so any replica can resume)."""
    store: SessionStateStore | None = container.extras.get("session_state")
    return store


def build_deps(container: Container, reply_engine: Any | None = None) -> ConversationDeps:
    """Wire the pipeline's dependencies from a container (also used by tests and the benchmark)."""
    settings = container.settings

    async def resolve_voice(profile_id: uuid.UUID) -> VoiceReference | None:
        from avatar.application.voice_profiles import voice_reference

        try:
            return await voice_reference(container.uow, container.object_store, profile_id)
        except NotFoundError:
            return None

    if reply_engine is None:
        from avatar.application.brain import load_persona
        from avatar.presentation.memory import brain_config

        reply_engine = BrainReplyEngine(
            container.chat_model,
            container.text_embedder,
            container.uow,
            load_persona(settings.llm.persona_file),
            brain_config(settings),
        )
    config = ConversationConfig(
        language=settings.asr.language,
        default_tts_mode=TTSMode(settings.conversation.default_tts_mode),
        hq_enabled=settings.tts.hq_enabled,
        write_retries=settings.database.write_retries,
    )
    return ConversationDeps(
        recognizer=container.recognizer,
        replies=reply_engine,
        fast_tts=voice_styled(container, container.fast_tts),
        clock=container.clock,
        object_store=container.object_store,
        queue=container.queue,
        uow=container.uow,
        metrics=PrometheusMetrics(),
        chunker_factory=_chunker,
        config=config,
        voice_resolver=resolve_voice,
        observer=avatar_hub(container),
    )


async def startup(app: FastAPI, container: Container) -> None:
    """Build the session manager, register it as the client notifier, subscribe the HQ pass."""
    settings = container.settings
    deps = build_deps(container, container.extras.get("reply_engine"))
    manager = SessionManager(
        deps,
        max_sessions=settings.conversation.max_sessions,
        grace_s=settings.security.reconnect_grace_s,
        state_store=_state_store(container),
    )
    app.state.sessions = manager
    container.extras["notifier"] = manager
    container.extras["session_manager"] = manager
    container.queue.subscribe(
        HQ_TOPIC,
        make_hq_handler(
            hq_tts=voice_styled(container, container.hq_tts),
            object_store=container.object_store,
            uow=container.uow,
            notifier=manager,
            clock=container.clock,
            voice_resolver=deps.voice_resolver,
        ),
    )


async def shutdown(app: FastAPI) -> None:
    manager: SessionManager | None = getattr(app.state, "sessions", None)
    if manager is not None:
        await manager.aclose()


def _encode(message: dict[str, Any]) -> str:
    pcm = message.pop("pcm", None)
    if isinstance(pcm, bytes | bytearray):
        message["data"] = base64.b64encode(pcm).decode("ascii")
    return json.dumps(message)


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, "trace_id": str(uuid.uuid4())})


class _FloodGuard:
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

    def __init__(self, websocket: WebSocket, session: ConversationSession, settings: Settings) -> None:
        self.ws = websocket
        self.session = session
        self.settings = settings
        self.sample_rate = 16000
        self.flood = _FloodGuard(settings.conversation.max_audio_speedup)
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
            await self.ws.send_text(_encode(dict(message)))

    async def heartbeat_loop(self) -> None:
        interval = self.settings.conversation.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            self.session.outbox.send({"type": "heartbeat", "t": time.time() * 1000.0})

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
                await self._audio(data, self.sample_rate, None)
            elif text is not None:
                await self._text(text)

    async def _text(self, text: str) -> None:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.ws.send_text(_error("INVALID_JSON", f"the message is not JSON: {exc.msg}"))
            return
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await self.ws.send_text(
                _error("INVALID_MESSAGE", 'a message must be a JSON object with a "type"')
            )
            return
        if raw["type"] not in CLIENT_TYPES:
            await self.ws.send_text(
                _error("UNKNOWN_MESSAGE_TYPE", f"unknown message type {raw['type']!r}; see docs/protocol.md")
            )
            return
        try:
            message = CLIENT_MESSAGE.validate_python(raw)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
            await self.ws.send_text(_error("INVALID_MESSAGE", f"invalid {raw['type']}: {detail}"))
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
            await session.set_tts_mode(TTSMode(message.mode), message.voice, message.voice_profile_id)
        elif isinstance(message, InterruptIn):
            await session.interrupt(message.heard_text, message.played_ms)
        elif isinstance(message, TextInputIn):
            await session.text_input(message.text)
        elif isinstance(message, EndOfUtteranceIn):
            await session.end_utterance()
        elif isinstance(message, PingIn):
            await self.ws.send_text(json.dumps({"type": "pong", "t": message.t}))

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
    await websocket.accept()
    app = websocket.app
    settings: Settings = app.state.settings
    manager: SessionManager = app.state.sessions
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        await websocket.close(CLOSE_NOT_FOUND, "the session id is not a UUID")
        return
    token = websocket.query_params.get("token")
    try:
        verify_token(settings.security.secret_key.get_secret_value(), sid, token, time.time())
    except TokenError as exc:
        await websocket.close(CLOSE_TOKEN, exc.message[:120])
        return
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
        await websocket.close(CLOSE_BUSY, "too many sessions")
        return
    if isinstance(previous, dict) and "connection" in previous:
        await previous["connection"].close(CLOSE_REPLACED, "replaced by a newer connection to this session")
    conn = _Connection(websocket, session, settings)
    holder["connection"] = conn
    WS_CONNECTIONS.inc()
    state = session.state_message(resumed=resumed)
    state["protocol_version"] = PROTOCOL_VERSION
    try:
        await websocket.send_text(json.dumps(state))
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
