"""The model services' shared key (docs/security.md, "Service keys").

The ASR, TTS and prosody services are reached only by the orchestrator (and the worker). When a
service key is configured, every request and WebSocket upgrade must carry it as
``Authorization: Bearer KEY``; the liveness and metrics routes stay open for the orchestrator's
health probes, Kubernetes and Prometheus. Without a key (the embedded default, where the engines
run inside the orchestrator and no service port is opened) nothing is checked.

This is a plain ASGI middleware, so it guards HTTP and WebSocket routes alike, before any route
code runs or any upload is read.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Routes answered without the key: liveness/readiness and the Prometheus scrape.
OPEN_PATHS = frozenset({"/health", "/healthz", "/ready", "/metrics"})
#: The WebSocket close code of a refused upgrade (policy violation); the server answers it as 403.
WS_POLICY_VIOLATION = 1008


def bearer_header(key: str) -> dict[str, str]:
    """The header a client of a keyed service sends."""
    return {"Authorization": f"Bearer {key}"}


class ServiceKeyGuard:
    """Refuses requests to a service that do not carry its key (401 with the services' error body;
    a WebSocket upgrade is closed with 1008 before it is accepted)."""

    def __init__(self, app: ASGIApp, key: str, *, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        if not key:
            raise ValueError("the service key must not be empty")
        self.app = app
        self._expected = f"Bearer {key}".encode()
        self._open = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or scope.get("path") in self._open or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send(
                {"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": "service key required"}
            )
            return
        body = json.dumps(
            {
                "error": {
                    "code": "UNAUTHENTICATED",
                    "message": "this service needs its key: send Authorization: Bearer KEY",
                    "trace_id": str(uuid.uuid4()),
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return hmac.compare_digest(bytes(value), self._expected)
        return False
