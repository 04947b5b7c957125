"""A real uvicorn server of ``create_app`` on a free loopback port, and a small protocol client
(shared with the benchmarks: ``avatar.bench.live``), plus real-time streaming of a clip."""

from __future__ import annotations

import asyncio

from avatar.bench.live import Client, create_session, free_port, running_server

__all__ = ["Client", "create_session", "free_port", "running_server", "stream_realtime"]


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
