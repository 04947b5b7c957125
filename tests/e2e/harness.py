"""A real uvicorn server of ``create_app`` on a free loopback port, and a small protocol client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import websockets

from tests.support.net import free_port, running_server

__all__ = ["Client", "create_session", "free_port", "running_server"]

Message = dict[str, Any]


async def create_session(base: str) -> Message:
    async with httpx.AsyncClient(base_url=base) as client:
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
        message: Message = json.loads(raw)
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


async def stream_realtime(
    client: Client,
    pcm: bytes,
    sr: int = 16000,
    chunk_ms: int = 100,
    speed: float = 1.0,
    trailing_silence_ms: int = 1200,
) -> None:
    """Send ``pcm`` in ``chunk_ms`` pieces at ``speed`` x real time, then silence for the endpoint."""
    step = sr * chunk_ms // 1000 * 2
    data = pcm + bytes(sr * trailing_silence_ms // 1000 * 2)
    for i, start in enumerate(range(0, len(data), step)):
        await client.send_audio(data[start : start + step], sr, timestamp=i * chunk_ms)
        await asyncio.sleep(chunk_ms / 1000.0 / speed)
