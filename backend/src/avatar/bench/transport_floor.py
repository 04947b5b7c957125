"""The transport's own cost at a load level: what ``avatar bench load`` sets the orchestrator beside.

A bare FastAPI app with one WebSocket route that only receives (and counts) frames, served by
uvicorn exactly as the orchestrator is served (``uvicorn_ws_options``, uvloop), in a process of its
own; ``sessions`` clients in another process each stream the load bench's microphone frames at real
time (10 a second). Its CPU is what receiving that many frames costs before any of the
orchestrator's own work: the rest of the orchestrator's CPU at the same level is the application's
(docs/benchmarks.md, "load").
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass

from fastapi import FastAPI, WebSocket

from avatar.bench.load import CHUNK_MS, SAMPLE_RATE, _frames, _free_port, _pcm

#: Seconds measured once every client streams (after the connections ramp up).
MEASURE_S = 8.0


@dataclass(frozen=True)
class TransportFloor:
    sessions: int
    frames_received: int
    #: The bare server's CPU over the measured window, per cent of one core.
    cpu_percent: float

    @property
    def us_per_frame(self) -> float:
        return 1e4 * self.cpu_percent / (self.sessions * 1000.0 / CHUNK_MS) if self.sessions else float("nan")


def bare_app() -> FastAPI:
    """FastAPI with one route, ``/ws``, that accepts and receives frames until the client leaves."""
    app = FastAPI()
    app.state.frames = 0

    @app.websocket("/ws")
    async def receive_only(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            app.state.frames += 1

    @app.get("/frames")
    async def frames() -> dict[str, int]:
        return {"frames": int(app.state.frames)}

    return app


def _serve(port: int) -> None:
    import uvicorn

    from avatar.presentation.ws_protocol import uvicorn_ws_options

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", **uvicorn_ws_options(65536))


async def _clients(port: int, sessions: int, seconds: float) -> None:
    import websockets

    frames = _frames(_pcm(1000, 6000), True)
    silence = _frames(bytes(SAMPLE_RATE * CHUNK_MS // 1000 * 2), True)[0]
    ramp_s = min(5.0, 0.02 * sessions)

    async def one(i: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(ramp_s * i / max(1, sessions))
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None, open_timeout=30) as ws:
            next_at = loop.time()
            end = next_at + seconds
            n = 0
            while next_at < end:
                await ws.send(frames[n % len(frames)] if (n // 10) % 3 == 0 else silence)
                n += 1
                next_at += CHUNK_MS / 1000.0
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    await asyncio.gather(*[one(i) for i in range(sessions)])


def _client_process(port: int, sessions: int, seconds: float) -> None:
    import uvloop

    uvloop.run(_clients(port, sessions, seconds))


def measure(sessions: int) -> TransportFloor:
    """The bare server's CPU while ``sessions`` clients stream at real time."""
    import httpx
    import psutil

    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/frames", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or not server.is_alive():
                    raise RuntimeError("the bare transport server did not start") from None
                time.sleep(0.1)
        ramp_s = min(5.0, 0.02 * sessions)
        clients = ctx.Process(target=_client_process, args=(port, sessions, ramp_s + MEASURE_S + 3.0))
        clients.start()
        time.sleep(ramp_s + 1.5)
        process = psutil.Process(server.pid)
        cpu0, t0 = process.cpu_times(), time.monotonic()
        frames0 = httpx.get(f"http://127.0.0.1:{port}/frames", timeout=5).json()["frames"]
        time.sleep(MEASURE_S)
        cpu1, t1 = process.cpu_times(), time.monotonic()
        frames1 = httpx.get(f"http://127.0.0.1:{port}/frames", timeout=5).json()["frames"]
        clients.join(60)
        if clients.exitcode != 0:
            raise RuntimeError(f"the transport floor's clients failed (exit {clients.exitcode})")
    finally:
        server.terminate()
        server.join(10)
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return TransportFloor(sessions, frames1 - frames0, 100.0 * busy / (t1 - t0))
