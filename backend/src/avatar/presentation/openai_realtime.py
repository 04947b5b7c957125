"""``WS /v1/realtime``: OpenAI's Realtime API on the conversation pipeline (docs/realtime.md).

The handshake is checked before the socket is accepted: ``Host``/``Origin`` as for every socket
(docs/security.md), then the API key, from ``Authorization: Bearer KEY`` (the SDKs) or the
``openai-insecure-api-key.KEY`` subprotocol (browsers, answered with the ``realtime`` subprotocol).
A refusal is an HTTP answer (401 no or bad key, 403 origin, 404 a session that is not the caller's,
429/503 limits) with an OpenAI-shaped error body. The connection then creates a session of the caller
(or resumes its own with ``?session_id=``) and attaches to it exactly like ``/ws/{session_id}``;
:class:`RealtimeConversation` translates both ways. Bad input gets an ``error`` event and the
connection goes on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from avatar.application.conversation import ConversationSession, SessionEndedError, TokenError
from avatar.application.ports.storage import CredentialKind
from avatar.application.realtime.conversation import RealtimeConversation
from avatar.application.realtime.events import (
    CLIENT_EVENT,
    CLIENT_EVENT_TYPES,
    UNSUPPORTED_CLIENT_EVENTS,
    InputAudioAppendIn,
    ServerEvent,
    encode_event,
    error_event,
)
from avatar.application.realtime.ports import RealtimeDeps
from avatar.application.validation import JsonInputError, strict_json_loads
from avatar.bootstrap import Services
from avatar.domain.errors import AvatarError, CapacityError, NotFoundError, RateLimitedError
from avatar.domain.models import Session, User
from avatar.presentation.ownership import audit_if_foreign
from avatar.presentation.realtime import CLOSE_BUSY, CLOSE_ENDED, CLOSE_REPLACED, WS_CONNECTIONS, FloodGuard
from avatar.presentation.ws_security import WebSocketPolicy
from avatar.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["openai-realtime"])

#: The subprotocol a browser offers with its key, and the one the server answers with.
KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."
REALTIME_PROTOCOL = "realtime"
#: Beta clients say so in a header or a subprotocol; their events use the beta names.
_BETA_PROTOCOL = "openai-beta.realtime-v1"


def _openai_error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


async def _refuse(websocket: WebSocket, response: JSONResponse) -> None:
    """Answer the handshake with an HTTP error (a close before accepting where that is impossible)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:  # pragma: no cover - uvicorn offers the extension
        await websocket.close(1008, bytes(response.body).decode()[:120])


def _offered(websocket: WebSocket) -> list[str]:
    header = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _api_key(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, key = header.partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else ""
    for protocol in _offered(websocket):
        if protocol.startswith(KEY_PROTOCOL_PREFIX):
            return protocol[len(KEY_PROTOCOL_PREFIX) :]
    return None


def _is_beta(websocket: WebSocket) -> bool:
    header = websocket.headers.get("openai-beta", "").replace(" ", "")
    return "realtime=v1" in header or _BETA_PROTOCOL in _offered(websocket)


async def _handshake_refusal(
    websocket: WebSocket, settings: Settings, services: Services
) -> JSONResponse | User:
    """The caller, or the HTTP answer refusing the handshake."""
    hosts, origins = websocket.headers.getlist("host"), websocket.headers.getlist("origin")
    if len(hosts) > 1 or len(origins) > 1:
        reason: str | None = "the handshake repeats the Host or Origin header"
    else:
        policy = WebSocketPolicy.from_settings(settings)
        reason = policy.refusal(hosts[0] if hosts else None, origins[0] if origins else None)
    if reason is not None:
        return _openai_error(403, reason, "forbidden_origin")
    key = _api_key(websocket)
    if not key:
        return _openai_error(
            401,
            "no API key: send `Authorization: Bearer KEY` or the subprotocol openai-insecure-api-key.KEY",
            "missing_api_key",
        )
    caller = await services.accounts.authenticate(key, CredentialKind.API_KEY)
    if caller is None:
        return _openai_error(401, "this API key is not valid", "invalid_api_key")
    return caller.user


async def _session_for(
    websocket: WebSocket, user: User, settings: Settings, services: Services
) -> JSONResponse | uuid.UUID:
    """The caller's session named by ``?session_id=``, or a new one (the checks of
    ``POST /api/v1/sessions``)."""
    container = websocket.app.state.container
    wanted = websocket.query_params.get("session_id")
    if wanted:
        try:
            sid = uuid.UUID(wanted)
        except ValueError:
            return _openai_error(400, "session_id is not a UUID", "invalid_value")
        async with container.uow() as tx:
            record = await tx.sessions.get(sid)
        if record is None or not user.may_see(record.owner_id):
            return _openai_error(404, f"session {sid} not found", "session_not_found")
        await audit_if_foreign(services, user, record.owner_id, "session.realtime", str(sid))
        return sid
    drain = websocket.app.state.drain
    if drain.draining:
        return _openai_error(503, "the server is draining; connect again", "draining", "server_error")
    manager = services.sessions
    try:
        manager.check_capacity()
        manager.check_user_capacity(user.user_id)
        client = websocket.client.host if websocket.client else None
        services.admission.admit_creation(user.user_id, client)
    except RateLimitedError as exc:
        return _openai_error(429, exc.message, exc.code.lower(), "rate_limit_error")
    except CapacityError as exc:
        return _openai_error(503, exc.message, exc.code.lower(), "server_error")
    session = Session.start(container.clock.now(), {"client": "openai-realtime"}, owner_id=user.user_id)
    async with container.uow() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    return session.session_id


class _RealtimeConnection:
    """One accepted Realtime socket bound to a session: the pipeline's outbox is translated and
    sent in order with the answers to client events (one writer, so events never interleave)."""

    def __init__(
        self, websocket: WebSocket, session: ConversationSession, deps: RealtimeDeps, settings: Settings
    ) -> None:
        self.ws = websocket
        self.session = session
        self.settings = settings
        self.beta = _is_beta(websocket)
        self.flood = FloodGuard(settings.conversation.max_audio_speedup)
        self.conversation = RealtimeConversation(session, deps, self.emit, beta=self.beta)
        self.tasks: list[asyncio.Task[None]] = []
        self._pending: list[ServerEvent] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def emit(self, event: ServerEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending, []
                for event in batch:
                    await self.ws.send_text(encode_event(event, beta=self.beta))

    async def close(self, code: int, reason: str) -> None:
        """Called when another connection takes the session over (the ``/ws`` convention)."""
        for task in self.tasks:
            task.cancel()
        if self.ws.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, reason)

    async def pipeline_loop(self) -> None:
        outbox = self.session.outbox
        while True:
            message = await outbox.get()
            self.conversation.translator.pipeline(message)
            await self.flush()  # the outbox sheds audio while this client reads slowly

    async def writer_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def receive_loop(self) -> None:
        max_bytes = self.settings.conversation.max_frame_bytes
        while True:
            frame = await self.ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text: str | None = frame.get("text")
            if text is None:
                self._error("send JSON text events; binary frames are not accepted", "invalid_frame")
            elif len(text.encode()) > max_bytes:
                self._error(
                    f"an event of {len(text.encode())} bytes exceeds the {max_bytes}-byte limit; "
                    "append audio in smaller pieces",
                    "event_too_large",
                )
            else:
                await self._event(text)
            await self.flush()

    def _error(
        self, message: str, code: str, *, param: str | None = None, event_id: str | None = None
    ) -> None:
        self.emit(error_event(message, code=code, param=param, event_id=event_id))

    async def _event(self, text: str) -> None:
        try:
            raw: Any = strict_json_loads(text)
        except JsonInputError as exc:
            self._error(f"the event is not valid JSON: {exc}", "invalid_json")
            return
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            self._error('an event must be a JSON object with a "type"', "invalid_event", param="type")
            return
        kind, client_id = raw["type"], raw.get("event_id")
        event_id = client_id[:64] if isinstance(client_id, str) else None
        if kind in UNSUPPORTED_CLIENT_EVENTS:
            self._error(f"{kind} is not supported (docs/realtime.md)", "unsupported_event", event_id=event_id)
            return
        if kind not in CLIENT_EVENT_TYPES:
            self._error(f"unknown event type {kind[:60]!r}", "invalid_value", param="type", event_id=event_id)
            return
        try:
            event = CLIENT_EVENT.validate_python(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"][1:]) or None
            message = f"invalid {kind}: {param or 'event'}: {first['msg'].removeprefix('Value error, ')}"
            code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
            self._error(message[:300], code, param=param, event_id=event_id)
            return
        try:
            if isinstance(event, InputAudioAppendIn):
                await self._append(event)
            else:
                await self.conversation.handle(event)
        except AvatarError as exc:
            self._error(exc.message, exc.code.lower(), event_id=event_id)
        except Exception:
            trace_id = str(uuid.uuid4())
            log.exception("realtime %s: %s failed (trace_id %s)", self.session.session_id, kind, trace_id)
            self.emit(
                error_event(
                    f"the server could not handle {kind} (trace id {trace_id})",
                    code="internal_error",
                    kind="server_error",
                    event_id=event_id,
                )
            )

    async def _append(self, event: InputAudioAppendIn) -> None:
        try:
            pcm = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            self._error("audio is not valid base64", "invalid_audio", param="audio", event_id=event.event_id)
            return
        if not pcm or len(pcm) % 2:
            self._error(
                "audio must be PCM16 mono 24 kHz: a non-empty, even number of bytes",
                "invalid_audio",
                param="audio",
                event_id=event.event_id,
            )
            return
        if not self.flood.admit(len(pcm) / 2 / 24.0):
            if self.flood.should_report():
                self._error(
                    f"audio arrives faster than {self.flood.speedup:g}x real time; it is dropped",
                    "audio_flood",
                    event_id=event.event_id,
                )
            return
        await self.conversation.append_audio(pcm)


@router.websocket("/v1/realtime")
async def openai_realtime(websocket: WebSocket) -> None:
    """OpenAI's Realtime API (docs/realtime.md)."""
    settings: Settings = websocket.app.state.settings
    services: Services = websocket.app.state.services
    deps = services.realtime
    if deps is None:  # pragma: no cover - every built app has it
        await _refuse(
            websocket, _openai_error(503, "the Realtime API is not set up", "unavailable", "server_error")
        )
        return
    user = await _handshake_refusal(websocket, settings, services)
    if isinstance(user, JSONResponse):
        await _refuse(websocket, user)
        return
    sid = await _session_for(websocket, user, settings, services)
    if isinstance(sid, JSONResponse):
        await _refuse(websocket, sid)
        return
    offered = _offered(websocket)
    await websocket.accept(subprotocol=REALTIME_PROTOCOL if REALTIME_PROTOCOL in offered else None)
    manager = services.sessions
    holder: dict[str, _RealtimeConnection] = {}
    try:
        session, _resumed, previous = await manager.attach(sid, holder, None)
    except (TokenError, NotFoundError, SessionEndedError, CapacityError) as exc:
        code = {SessionEndedError: CLOSE_ENDED, CapacityError: CLOSE_BUSY}.get(type(exc), 4404)
        kind = "server_error" if isinstance(exc, CapacityError) else "invalid_request_error"
        await websocket.send_text(encode_event(error_event(exc.message, code=exc.code.lower(), kind=kind)))
        await websocket.close(code, exc.message[:120])
        return
    if isinstance(previous, dict) and "connection" in previous:
        await previous["connection"].close(CLOSE_REPLACED, "replaced by a newer connection to this session")
    conn = _RealtimeConnection(websocket, session, deps, settings)
    holder["connection"] = conn
    WS_CONNECTIONS.inc()
    try:
        conn.emit(conn.conversation.created())
        await conn.flush()
        conn.tasks = [asyncio.create_task(conn.pipeline_loop()), asyncio.create_task(conn.writer_loop())]
        await conn.receive_loop()
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("realtime session %s: connection failed", sid)
        await conn.close(1011, "internal error")
    finally:
        WS_CONNECTIONS.dec()
        for task in conn.tasks:
            task.cancel()
        await asyncio.gather(*conn.tasks, return_exceptions=True)
        await conn.conversation.aclose()
        session.auto_reply = True  # a web client resuming this session answers every utterance
        manager.detach(sid, holder)
        await manager.save_state(sid)
