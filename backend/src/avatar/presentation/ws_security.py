"""WebSocket handshake hygiene shared by every socket route (docs/security.md, docs/protocol.md).

Before a socket is accepted:

* the ``Host`` header must name this server (``localhost``, ``127.0.0.1``, ``::1``, ``server.host``,
  the host of ``server.public_url`` and ``security.allowed_hosts``), which defeats DNS rebinding;
* a browser's ``Origin`` must be the page's own origin (same scheme-less host:port as ``Host``),
  the ``server.public_url`` origin, or one of ``security.allowed_origins`` /
  ``server.cors_origins``, which defeats cross-site WebSocket hijacking. Clients that send no
  ``Origin`` (command-line tools, other services) are not browsers and are let through: they
  still need a token.

A refused handshake is answered with HTTP 403 and a JSON error body (or a plain 403 where the server
cannot send a body). The token is taken, in order of preference, from the ``Sec-WebSocket-Protocol``
header (``avatar.v1, avatar.token.<token>``), from a first ``{"type": "auth", "token": ...}``
message, or from the deprecated ``?token=`` query parameter; the first two keep it out of URLs and
therefore out of access logs and browser history.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from avatar.application.conversation import TokenError, verify_token
from avatar.application.conversation.events import AuthIn
from avatar.application.validation import strict_json_loads
from avatar.presentation.errors import error_body
from avatar.presentation.wire import error as wire_error
from avatar.settings import Settings

SUBPROTOCOL = "avatar.v1"
TOKEN_PROTOCOL_PREFIX = "avatar.token."
#: How long a client that sent no token in the handshake has to send its ``auth`` message.
AUTH_TIMEOUT_S = 5.0
#: Close codes of a refused session socket (docs/protocol.md).
CLOSE_BAD_VERSION = 4400
CLOSE_TOKEN = 4401
CLOSE_NOT_FOUND = 4404
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})


def _hostname(netloc: str) -> str:
    """``Host``/netloc without the port, lower case (``[::1]:8000`` -> ``::1``)."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _origin(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


@dataclass(frozen=True)
class WebSocketPolicy:
    """Which ``Host`` names and browser ``Origin`` s a socket route accepts."""

    hosts: frozenset[str]
    origins: frozenset[str]
    any_host: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebSocketPolicy:
        hosts = set(_LOCAL_HOSTS)
        if settings.server.host not in _ANY_ADDRESS:
            hosts.add(settings.server.host.lower())
        origins: set[str] = set()
        if settings.server.public_url:
            public = urlsplit(settings.server.public_url)
            if public.hostname:
                hosts.add(public.hostname.lower())
            if (origin := _origin(settings.server.public_url)) is not None:
                origins.add(origin)
        extra_hosts = {h.strip().lower() for h in settings.security.allowed_hosts if h.strip()}
        for listed in [*settings.security.allowed_origins, *settings.server.cors_origins]:
            if (origin := _origin(listed)) is not None:
                origins.add(origin)
        return cls(
            hosts=frozenset(hosts | (extra_hosts - {"*"})),
            origins=frozenset(origins),
            any_host="*" in extra_hosts,
        )

    def refusal(self, host_header: str | None, origin_header: str | None) -> str | None:
        """Why a handshake with these headers is refused, or None when it is acceptable."""
        if not host_header:
            return "the Host header is missing"
        if not self.any_host and _hostname(host_header) not in self.hosts:
            return (
                f"Host {host_header!r} is not a name of this server; add it to "
                "AVATAR_SECURITY__ALLOWED_HOSTS if it should be"
            )
        if origin_header is None:
            return None  # not a browser: the token still decides
        origin = _origin(origin_header)
        if origin is None:
            return f"Origin {origin_header!r} is not allowed"
        if urlsplit(origin).netloc == host_header.strip().lower() or origin in self.origins:
            return None
        return (
            f"Origin {origin} may not open this socket; add it to AVATAR_SECURITY__ALLOWED_ORIGINS "
            "if that page is yours"
        )


def offered_token(websocket: WebSocket) -> tuple[str | None, bool]:
    """(token from the ``Sec-WebSocket-Protocol`` header, whether ``avatar.v1`` was offered)."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    token = next(
        (p[len(TOKEN_PROTOCOL_PREFIX) :] for p in offered if p.startswith(TOKEN_PROTOCOL_PREFIX)), None
    )
    return token or None, SUBPROTOCOL in offered


async def accept_checked(websocket: WebSocket, policy: WebSocketPolicy) -> bool:
    """Refuse a handshake that fails the Host/Origin checks (HTTP 403), else accept it.

    Returns whether the socket was accepted. The ``avatar.v1`` subprotocol is selected when the
    client offered it (browsers require the server to pick one of the offered protocols).
    """
    hosts, origins = websocket.headers.getlist("host"), websocket.headers.getlist("origin")
    if len(hosts) > 1 or len(origins) > 1:
        reason: str | None = "the handshake repeats the Host or Origin header"
    else:
        reason = policy.refusal(hosts[0] if hosts else None, origins[0] if origins else None)
    if reason is not None:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(
                JSONResponse(error_body("FORBIDDEN_ORIGIN", reason), status_code=403)
            )
        else:
            await websocket.close(1008, reason[:120])
        return False
    _, wants_protocol = offered_token(websocket)
    await websocket.accept(subprotocol=SUBPROTOCOL if wants_protocol else None)
    return True


class AuthMessageError(ValueError):
    """The first message was not a valid ``auth`` message."""


async def receive_token(websocket: WebSocket, *, timeout_s: float = AUTH_TIMEOUT_S) -> str | None:
    """The session token: handshake header, then ``?token=`` (deprecated), then the first message.

    Returns None when the client sent none in time (or disconnected); raises
    :class:`AuthMessageError` when the first message is not an ``auth`` message.
    """
    token, _ = offered_token(websocket)
    if token is None:
        token = websocket.query_params.get("token") or None
    if token is not None:
        return token
    try:
        async with asyncio.timeout(timeout_s):
            frame = await websocket.receive()
    except TimeoutError:
        return None
    if frame["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(frame.get("code", 1000))
    text = frame.get("text")
    if text is None:
        raise AuthMessageError('send the token first: {"type": "auth", "token": "..."}')
    try:
        return AuthIn.model_validate(strict_json_loads(text)).token
    except (ValueError, ValidationError) as exc:
        raise AuthMessageError(
            'the first message must be {"type": "auth", "token": "..."} when no token was sent '
            "in the Sec-WebSocket-Protocol header"
        ) from exc


async def authenticate_session_socket(
    websocket: WebSocket, session_id: str, settings: Settings, *, protocol_version: int | None = None
) -> tuple[uuid.UUID, str] | None:
    """Check Host/Origin, accept, and verify the session token; None once the socket is refused
    (closed with 4400 after an ``error`` for a ``?v=`` other than ``protocol_version``, 4404 for an
    id that is not a UUID, 4401 for a missing or bad token) or when the client went away during the
    handshake.

    The token comes from the ``Sec-WebSocket-Protocol`` header, a first ``auth`` message, or the
    deprecated ``?token=`` query parameter (docs/protocol.md, Authentication).
    """
    if not await accept_checked(websocket, WebSocketPolicy.from_settings(settings)):
        return None
    version = websocket.query_params.get("v")
    if protocol_version is not None and version is not None and version != str(protocol_version):
        await websocket.send_text(
            wire_error(
                "UNSUPPORTED_PROTOCOL_VERSION",
                f"protocol version {version[:16]!r} is not supported; this server speaks "
                f"v={protocol_version} (docs/protocol.md)",
            )
        )
        await websocket.close(CLOSE_BAD_VERSION, "unsupported protocol version")
        return None
    try:
        sid = uuid.UUID(session_id)
    except ValueError:
        await websocket.close(CLOSE_NOT_FOUND, "the session id is not a UUID")
        return None
    try:
        token = await receive_token(websocket)
        if token is None:
            raise TokenError("no session token arrived (docs/protocol.md, Authentication)")
        verify_token(settings.security.signing_keys(), sid, token, time.time())
    except WebSocketDisconnect:
        return None
    except AuthMessageError as exc:
        await websocket.close(CLOSE_TOKEN, str(exc)[:120])
        return None
    except TokenError as exc:
        await websocket.close(CLOSE_TOKEN, exc.message[:120])
        return None
    return sid, token
