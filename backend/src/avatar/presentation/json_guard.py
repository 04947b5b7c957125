"""Strict, bounded JSON request bodies for the whole REST API (docs/protocol.md, Limits).

FastAPI parses bodies with Python's ``json``, which accepts ``NaN``/``Infinity`` and fails with
a 500 on very deep nesting. This ASGI middleware reads a JSON body first (at most
``MAX_JSON_BODY_BYTES``), parses it strictly and answers in the documented error body: 413
``PAYLOAD_TOO_LARGE`` or 422 ``INVALID_JSON``; a body that passes is handed on unchanged.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar.application.validation import MAX_JSON_BODY_BYTES, JsonInputError, strict_json_loads
from avatar.presentation.errors import error_body

_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonBodyGuard:
    """Refuses oversized or non-strict JSON bodies before any route sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_JSON_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        too_large = f"the JSON body exceeds the {self.max_bytes}-byte limit"
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _refuse(send, 413, "PAYLOAD_TOO_LARGE", too_large)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, "PAYLOAD_TOO_LARGE", too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                strict_json_loads(body)
            except JsonInputError as exc:
                await _refuse(send, 422, "INVALID_JSON", f"the request body is refused: {exc}")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
