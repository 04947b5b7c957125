"""A real uvicorn server of an ASGI app on a free loopback port, and a small protocol client
(docs/protocol.md) that records every message: what the benchmarks (and the end-to-end tests)
drive the orchestrator with."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import uvicorn
import websockets

from avatar.presentation.audio_frames import decode_audio_out
from avatar.presentation.wire import to_wire
from avatar.presentation.ws_protocol import BoundedHandshakeProtocol

Message = dict[str, Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(app: Any, port: int) -> uvicorn.Config:
    """How the benchmarks and tests serve an app: loopback, lifespan on, quiet logs. Shutdown waits
    at most 20 s for open connections (uvicorn then logs an error and cancels them): two bench runs
    went idle for minutes at their end (see docs/adr/0014-voice-latency.md, "Open")."""
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws=BoundedHandshakeProtocol,
        timeout_graceful_shutdown=20,
    )


@contextlib.asynccontextmanager
async def running_server(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` in the current event loop; yields the base URL."""
    port = port or free_port()
    server = uvicorn.Server(server_config(app, port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during start-up")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def api_user(container: Any, name: str = "bench") -> str:
    """A new user in the container's database (a unique name); returns its API key
    (docs/security.md: every REST call is authenticated)."""
    import uuid

    from avatar.application.accounts import AccountService

    accounts = AccountService(container.uow, container.clock)
    _user, key = await accounts.create_user(f"{name}-{uuid.uuid4().hex[:8]}")
    return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_session(base: str, key: str) -> Message:
    """``POST /api/v1/sessions`` as the owner of ``key``; the body has ``session_id``, ``token``
    and ``ws_url``."""
    async with httpx.AsyncClient(base_url=base, headers=auth(key)) as client:
        response = await client.post("/api/v1/sessions", json={})
        response.raise_for_status()
        body: Message = response.json()
        return body


class Client:
    """A protocol client over a real ``websockets`` connection that records every message."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[Message] = []
        self.first_audio_at: float | None = None
        #: Reply audio frames that arrived binary (decoded into ``messages`` like JSON ones).
        self.binary_frames = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[Client]:
        async with websockets.connect(url, max_size=None) as ws:
            yield cls(ws)

    async def send(self, message: Message) -> None:
        await self.ws.send(json.dumps(message))

    async def send_audio(self, pcm: bytes, sr: int = 16000, timestamp: float = 0.0) -> None:
        await self.send(
            {"type": "audio_chunk", "data": base64.b64encode(pcm).decode(), "sr": sr, "timestamp": timestamp}
        )

    async def recv(self) -> Message:
        raw = await self.ws.recv()
        if isinstance(raw, bytes):  # a reply audio frame (docs/protocol.md, "Binary audio frames")
            message: Message = to_wire(decode_audio_out(raw))
            self.binary_frames += 1
        else:
            message = json.loads(raw)
        if message["type"] == "audio_chunk" and self.first_audio_at is None:
            self.first_audio_at = asyncio.get_running_loop().time()
        self.messages.append(message)
        return message

    async def until(self, done: Callable[[Message], bool], timeout_s: float = 120.0) -> Message:
        """Receive until a message satisfies ``done`` (a guard against hangs, not a speed check)."""

        async def loop() -> Message:
            while True:
                message = await self.recv()
                if done(message):
                    return message

        return await asyncio.wait_for(loop(), timeout_s)

    async def until_type(self, kind: str, timeout_s: float = 120.0) -> Message:
        return await self.until(lambda m: m["type"] == kind, timeout_s)

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.messages if m["type"] == kind]
