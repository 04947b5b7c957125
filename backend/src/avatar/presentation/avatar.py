"""``WS /ws/{session_id}/avatar``: the avatar control stream for any renderer (the web avatar,
a Unity client, ...), authenticated with the session's token like ``/ws/{session_id}``.
docs/avatar-control.md documents every message.

The server sends events; the client may send ``{"type": "ping", "t": <number>}`` (answered with
``pong``). Anything else gets an ``error`` event and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from avatar.application.avatar import ErrorEvent, Subscription
from avatar.application.validation import JsonInputError, strict_json_loads
from avatar.bootstrap import Services
from avatar.presentation.ws_security import authenticate_session_socket
from avatar.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["avatar"])

CLOSE_ENDED = 4410
CLOSE_TOO_LARGE = 1009
#: Client messages are tiny (ping); anything larger is refused.
MAX_CLIENT_FRAME = 4096


class PingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ping"]
    t: float | None = None


def _error(code: str, message: str) -> str:
    return ErrorEvent(code=code, message=message).model_dump_json()


async def _send_loop(websocket: WebSocket, sub: Subscription) -> None:
    while (event := await sub.get()) is not None:
        await websocket.send_text(event.model_dump_json())
    # The hub closed the subscription: the conversation has ended.
    with contextlib.suppress(Exception):
        await websocket.close(CLOSE_ENDED, "the session has ended")


async def _receive_loop(websocket: WebSocket) -> None:
    while True:
        frame = await websocket.receive()
        if frame["type"] == "websocket.disconnect":
            return
        text: str | None = frame.get("text")
        if text is None:
            await websocket.send_text(
                _error("BINARY_NOT_ACCEPTED", "this stream takes JSON text messages only")
            )
            continue
        if len(text.encode()) > MAX_CLIENT_FRAME:
            await websocket.send_text(
                _error("FRAME_TOO_LARGE", f"a message may be at most {MAX_CLIENT_FRAME} bytes")
            )
            await websocket.close(CLOSE_TOO_LARGE, "frame too large")
            return
        try:
            raw = strict_json_loads(text)
        except JsonInputError as exc:
            await websocket.send_text(_error("INVALID_JSON", f"the message is refused: {exc}"))
            continue
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            await websocket.send_text(
                _error("INVALID_MESSAGE", 'a message must be a JSON object with a "type"')
            )
            continue
        if raw["type"] != "ping":
            await websocket.send_text(
                _error(
                    "UNKNOWN_MESSAGE_TYPE",
                    f"unknown message type {raw['type']!r}: this stream only takes ping "
                    "(see docs/avatar-control.md)",
                )
            )
            continue
        try:
            ping = PingIn.model_validate(raw)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            await websocket.send_text(_error("INVALID_MESSAGE", f"invalid ping: {detail}"))
            continue
        await websocket.send_text(json.dumps({"type": "pong", "t": ping.t}))


@router.websocket("/ws/{session_id}/avatar")
async def avatar_stream(websocket: WebSocket, session_id: str) -> None:
    """Avatar events of one conversation (docs/avatar-control.md); the same handshake checks and
    token forms as ``/ws/{session_id}`` (docs/protocol.md, Authentication)."""
    settings: Settings = websocket.app.state.settings
    services: Services = websocket.app.state.services
    authenticated = await authenticate_session_socket(websocket, session_id, settings)
    if authenticated is None:
        return
    sid, _token = authenticated
    sub = services.avatar_hub.subscribe(sid)
    sender = asyncio.create_task(_send_loop(websocket, sub))
    try:
        await _receive_loop(websocket)
    except WebSocketDisconnect:
        pass
    except Exception:
        log.exception("avatar stream %s failed", sid)
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(1011, "internal error")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sub.close()
