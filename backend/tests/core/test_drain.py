"""Graceful drain on SIGTERM, on a real orchestrator process (uvicorn in its main thread, as
``avatar serve orchestrator`` runs it) with fake engines whose reply takes a few seconds:
readiness turns 503, new sessions and sockets are refused with a retry hint, the reply in flight
finishes, then the sockets close with 1012 and the process exits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.harness import Client, create_session
from tests.support.auth import bearer
from tests.support.net import free_port, wait_for_port
from tests.support.servers import stop_process

Served = tuple[str, "subprocess.Popen[bytes]", str]
ROOT = Path(__file__).resolve().parents[3]
REPLY_WORDS = 40
TOKEN_DELAY_S = 0.05

SERVER = f"""
import uvicorn
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.fakes import FakeChatModel, fake_container

settings = Settings(environment="test")
settings.server.drain_timeout_s = 30.0
settings.server.drain_retry_after_s = 7
reply = "[happy] " + " ".join(["word"] * {REPLY_WORDS})
container = fake_container(settings, chat_model=FakeChatModel((reply,), token_delay_s={TOKEN_DELAY_S}))

async def make_user(services):
    _user, key = await services.accounts.create_user("tester")
    __import__("pathlib").Path(__import__("sys").argv[2]).write_text(key)

uvicorn.run(create_app(settings, container, on_ready=make_user), host="127.0.0.1",
            port=int(__import__("sys").argv[1]), log_level="warning")
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), str(tmp_path / "key")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}", proc, (tmp_path / "key").read_text()
    finally:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL)
        log.close()


async def _until_draining(http: httpx.AsyncClient) -> httpx.Response:
    for _ in range(250):
        ready = await http.get("/api/v1/health/ready")
        if ready.status_code == 503:
            return ready
        await asyncio.sleep(0.02)
    raise AssertionError("readiness never turned 503 after SIGTERM")


async def test_sigterm_drains_then_exits(server: Served) -> None:
    base, proc, key = server
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/api/v1/health/ready")).json() == {"status": "ready"}
        assert (await http.get("/api/v1/health/live")).status_code == 200
    created = await create_session(base, key)
    waiting = await create_session(base, key)  # created before the drain, connected during it
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "text_input", "text": "tell me something long"})
        started = await client.until_type("turn_started")
        await client.until_type("llm_token")
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=base) as http:
            ready = await _until_draining(http)
            assert ready.headers["retry-after"] == "7"
            assert ready.json()["status"] == "draining" and ready.json()["replies_in_flight"] == 1
            assert (await http.get("/api/v1/health/live")).status_code == 200
            refused = await http.post("/api/v1/sessions", json={}, headers=bearer(key))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
            assert refused.json()["error"]["code"] == "DRAINING"
        async with websockets.connect(waiting["ws_url"]) as other:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await other.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        done = await client.until(lambda m: m["type"] == "turn_completed", timeout_s=30)
        assert done["turn_id"] == started["turn_id"] and not done["interrupted"]
        assert done["text"] == " ".join(["word"] * REPLY_WORDS)
        with pytest.raises(websockets.ConnectionClosed) as ended:
            while True:
                await client.recv()
        assert ended.value.rcvd is not None and ended.value.rcvd.code == 1012
    # the reply took REPLY_WORDS x TOKEN_DELAY_S: the drain waited for it, not for its timeout
    assert await asyncio.to_thread(proc.wait, 20) is not None
    assert time.monotonic() - t_term < 15


async def test_a_second_sigterm_stops_waiting(server: Served) -> None:
    base, proc, key = server
    created = await create_session(base, key)
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        await client.send({"type": "text_input", "text": "tell me something long"})
        await client.until_type("llm_token")
        proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=base) as http:
            await _until_draining(http)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed):
            await client.until(lambda m: m["type"] == "turn_completed", timeout_s=30)
    assert await asyncio.to_thread(proc.wait, 20) is not None


async def test_without_a_signal_the_probes_answer_ready(
    server: Served,
) -> None:
    base, _, _key = server
    async with httpx.AsyncClient(base_url=base) as http:
        ready = await http.get("/api/v1/health/ready")
        live = await http.get("/api/v1/health/live")
    assert ready.status_code == 200 and "retry-after" not in ready.headers
    assert live.json()["status"] == "alive"
