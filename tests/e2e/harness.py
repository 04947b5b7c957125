"""A real uvicorn server of ``create_app`` on a free loopback port, and a small protocol client
(shared with the benchmarks: ``avatar.bench.live``), plus real-time streaming of a clip.

Every REST call is authenticated (docs/security.md): :func:`running_server` makes a user with an
API key in the app's database once the app has started, and :func:`create_session` uses it unless
the test passes another user's key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from avatar.bench import live
from avatar.bench.live import Client, Message, free_port

__all__ = ["Client", "create_session", "free_port", "running_server", "server_key", "stream_realtime"]

#: The app served at each base URL, and the API key of its test user once one was asked for.
_APPS: dict[str, Any] = {}
_KEYS: dict[str, str] = {}


@contextlib.asynccontextmanager
async def running_server(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """``avatar.bench.live.running_server``; :func:`server_key` makes its test user on demand."""
    async with live.running_server(app, port) as base:
        _APPS[base] = app
        try:
            yield base
        finally:
            _APPS.pop(base, None)
            _KEYS.pop(base, None)


async def server_key(base: str) -> str:
    """The API key of a test user of the server at ``base``, made on first use (so a test that
    counts users or signs in the local owner sees none it did not make)."""
    if base not in _KEYS:
        _KEYS[base] = await live.api_user(_APPS[base].state.container, "test")
    return _KEYS[base]


async def create_session(base: str, key: str | None = None) -> Message:
    """``POST /api/v1/sessions`` as the test user of ``base`` (or the owner of ``key``)."""
    return await live.create_session(base, key or await server_key(base))


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
