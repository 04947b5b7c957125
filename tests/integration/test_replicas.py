"""Two orchestrator replicas (real ``avatar serve orchestrator --instant-engines`` processes) sharing
a real PostgreSQL and a real Redis (docs/deploy.md, "Many replicas"): background results produced
on one replica reach the socket held by the other, and a reconnect to the other replica resumes,
directly and through the compose nginx (nginx/nginx.conf) balancing over both."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import websockets

from avatar.bench.live import Client
from tests.browser.test_nginx import NGINX, _make_cert, _render
from tests.support.net import free_port, wait_for_port
from tests.support.servers import PostgresServer, fresh_database, stop_process

SECRET = "replica-test-signing-key"
MASTER = base64.b64encode(bytes(range(32))).decode()


def _tone(ms: int, sr: int = 16000) -> bytes:
    n = sr * ms // 1000
    return b"".join(
        int(6000 * math.sin(2 * math.pi * 200 * i / sr)).to_bytes(2, "little", signed=True) for i in range(n)
    )


def _replica(name: str, port: int | None, env: dict[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    """An orchestrator on ``port``, or with no port a worker process (``avatar worker``)."""
    avatar = Path(sys.executable).with_name("avatar")
    if port is None:
        command = [str(avatar), "worker", "--instant-engines"]
    else:
        command = [str(avatar), "serve", "orchestrator", "--instant-engines", "--port", str(port)]
    with (workdir / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            command,
            # each process its own data directory: one owner per storage spool (docs/resilience.md)
            env={**os.environ, **env, "AVATAR_DATA_DIR": str(workdir / f"data-{name}")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"replica on {port} not ready:\n{log.read_text()[-3000:]}")


def _environment(db_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "AVATAR_ENVIRONMENT": "test",
        "AVATAR_SECURITY__SECRET_KEY": SECRET,
        "AVATAR_SECURITY__MASTER_KEY": MASTER,
        "AVATAR_DATABASE__PLACEMENT": "remote",
        "AVATAR_DATABASE__URL": db_url,
        "AVATAR_QUEUE__KIND": "redis",
        "AVATAR_REDIS__URL": redis_url,
        "AVATAR_OBJECT_STORE__KIND": "filesystem",
        "AVATAR_OBJECT_STORE__ROOT": str(tmp_path / "objects"),
        "AVATAR_DATA_DIR": str(tmp_path / "data"),
        "AVATAR_SECURITY__RECONNECT_GRACE_S": "60",
    }


@pytest_asyncio.fixture
async def replicas(
    postgres_server: PostgresServer, redis_url: str, tmp_path: Path
) -> AsyncIterator[tuple[int, int]]:
    """Replica A serves sockets only (``queue.consume`` off); replica B also does the background
    work, so every ``hq_ready``/``prosody_analysis`` for a socket on A is produced on B."""
    async with fresh_database(postgres_server) as db_url:
        common = _environment(db_url, redis_url, tmp_path)
        port_a, port_b = free_port(), free_port()
        procs = [
            _replica("a", port_a, {**common, "AVATAR_QUEUE__CONSUME": "false"}, tmp_path),
            _replica("b", port_b, common, tmp_path),
        ]
        try:
            _wait_healthy(procs[0], port_a, tmp_path / "a.log")
            _wait_healthy(procs[1], port_b, tmp_path / "b.log")
            _KEYS[port_a] = _api_key(common)
            yield port_a, port_b
        finally:
            for proc in procs:
                stop_process(proc)


def _api_key(env: dict[str, str]) -> str:
    """A user made with ``avatar users create`` against the replicas' shared database (the
    replicas authenticate every REST call, docs/security.md); returns its API key."""
    avatar = Path(sys.executable).with_name("avatar")
    out = subprocess.run(
        [str(avatar), "users", "create", f"replica-{uuid.uuid4().hex[:8]}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


#: The API key of each replicas fixture, by replica A's port.
_KEYS: dict[int, str] = {}


async def _speak(client: Client) -> str:
    """One utterance (1 s of tone, then the 300 ms of silence the instant engines endpoint on)."""
    pcm = _tone(1000) + bytes(16000 * 2 * 400 // 1000)
    step = 3200
    for start in range(0, len(pcm), step):
        await client.send_audio(pcm[start : start + step])
    started = await client.until_type("turn_started", timeout_s=20)
    await client.until(lambda m: m["type"] == "turn_completed" and m["turn_id"] == started["turn_id"], 20)
    return str(started["turn_id"])


async def test_background_events_reach_the_socket_on_the_other_replica_and_reconnects_resume(
    replicas: tuple[int, int],
) -> None:
    port_a, port_b = replicas
    headers = {"Authorization": f"Bearer {_KEYS[port_a]}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_a}", headers=headers) as http:
        created = (await http.post("/api/v1/sessions", json={})).json()
    url_a = created["ws_url"]
    assert f":{port_a}/" in url_a
    async with Client.connect(url_a) as client:
        assert (await client.until_type("session_state"))["resumed"] is False
        await client.send({"type": "set_tts_mode", "mode": "hq"})
        turn_id = await _speak(client)
        # Replica A consumes no queue: both results were produced on replica B.
        hq = await client.until(lambda m: m["type"] == "hq_ready" and m["turn_id"] == turn_id, 30)
        assert hq["url"]
        if not client.of("prosody_analysis"):  # either may come first
            await client.until_type("prosody_analysis", 30)
        (prosody,) = client.of("prosody_analysis")
        assert prosody["scores"]
    # The socket closes on A; the reconnect lands on B and resumes the conversation.
    url_b = url_a.replace(f":{port_a}/", f":{port_b}/")
    async with Client.connect(url_b) as client:
        state = await client.until_type("session_state")
        assert state["resumed"] is True and state["turns"] == 1 and state["tts_mode"] == "hq"
        turn_id = await _speak(client)
        hq = await client.until(lambda m: m["type"] == "hq_ready" and m["turn_id"] == turn_id, 30)
        async with httpx.AsyncClient(headers=headers) as http:
            # A released its parked copy when B claimed the session.
            for _ in range(100):
                seen_a = (
                    await http.get(f"http://127.0.0.1:{port_a}/api/v1/sessions/{created['session_id']}")
                ).json()
                if not seen_a["live"]:
                    break
                await asyncio.sleep(0.05)
            assert seen_a["live"] is False
            seen_b = (
                await http.get(f"http://127.0.0.1:{port_b}/api/v1/sessions/{created['session_id']}")
            ).json()
            assert seen_b["live"] is True and seen_b["status"] == "active"


@pytest.fixture
def nginx(replicas: tuple[int, int], tmp_path: Path) -> Iterator[int]:
    """The compose nginx config, its upstream the two replicas (round robin); yields its TLS port."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is installed by `make setup-test`")
    port_a, port_b = replicas
    site = tmp_path / "nginx"
    (site / "certs").mkdir(parents=True)
    (site / "html").mkdir()
    _make_cert(site / "certs")
    http_port, https_port = free_port(), free_port()
    conf = _render(site, port_a, http_port, https_port)
    one = f"server 127.0.0.1:{port_a};"
    conf.write_text(conf.read_text().replace(one, f"{one}\n        server 127.0.0.1:{port_b};"))
    globals_ = f"pid {site / 'nginx.pid'};" + (" user root;" if os.geteuid() == 0 else "")
    proc = subprocess.Popen(
        [NGINX, "-p", str(site), "-c", str(conf), "-g", f"daemon off; {globals_}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(https_port)
        yield https_port
    finally:
        stop_process(proc)


async def _hq_ready(client: Client, turn_id: str) -> None:
    await client.until(lambda m: m["type"] == "hq_ready" and m["turn_id"] == turn_id, 30)


async def _live_on(ports: tuple[int, int], session_id: str) -> list[int]:
    headers = {"Authorization": f"Bearer {_KEYS[ports[0]]}"}
    async with httpx.AsyncClient(headers=headers) as http:
        return [
            port
            for port in ports
            if (await http.get(f"http://127.0.0.1:{port}/api/v1/sessions/{session_id}")).json()["live"]
        ]


async def test_a_reconnect_through_nginx_lands_on_the_other_replica_and_resumes(
    replicas: tuple[int, int], nginx: int
) -> None:
    base = f"https://127.0.0.1:{nginx}"
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": f"Bearer {_KEYS[replicas[0]]}"}
    async with httpx.AsyncClient(base_url=base, verify=False, headers=headers) as http:
        created = (await http.post("/api/v1/sessions", json={})).json()
    sid, token = created["session_id"], created["token"]
    url = f"wss://127.0.0.1:{nginx}/ws/{sid}"
    protocols = [websockets.Subprotocol("avatar.v1"), websockets.Subprotocol(f"avatar.token.{token}")]

    async def connect() -> websockets.ClientConnection:
        return await websockets.connect(url, ssl=tls, subprotocols=protocols, max_size=None)

    async with await connect() as ws:
        client = Client(ws)
        assert (await client.until_type("session_state"))["resumed"] is False
        await client.send({"type": "set_tts_mode", "mode": "hq"})
        await _hq_ready(client, await _speak(client))
        (first,) = await _live_on(replicas, sid)
    # Reconnect through nginx until round robin lands the socket on the other replica.
    for _ in range(6):
        async with await connect() as ws:
            client = Client(ws)
            state = await client.until_type("session_state")
            assert state["resumed"] is True and state["turns"] == 1 and state["tts_mode"] == "hq"
            await asyncio.sleep(0.2)
            now = await _live_on(replicas, sid)
            if now and now != [first]:
                await _hq_ready(client, await _speak(client))
                return
    raise AssertionError("nginx never sent the reconnect to the other replica")


async def test_a_worker_process_does_the_background_work_for_sockets_it_does_not_hold(
    postgres_server: PostgresServer, redis_url: str, tmp_path: Path
) -> None:
    """The production path of background work: an orchestrator that consumes nothing, and an
    ``avatar worker`` process (no sockets) whose results reach the orchestrator's socket."""
    async with fresh_database(postgres_server) as db_url:
        env = _environment(db_url, redis_url, tmp_path)
        port = free_port()
        procs = [
            _replica("orchestrator", port, {**env, "AVATAR_QUEUE__CONSUME": "false"}, tmp_path),
            _replica("worker", None, env, tmp_path),
        ]
        try:
            _wait_healthy(procs[0], port, tmp_path / "orchestrator.log")
            headers = {"Authorization": f"Bearer {_api_key(env)}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
                created = (await http.post("/api/v1/sessions", json={})).json()
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await client.send({"type": "set_tts_mode", "mode": "hq"})
                await _hq_ready(client, await _speak(client))
                if not client.of("prosody_analysis"):
                    await client.until_type("prosody_analysis", 30)
            assert procs[1].poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
        finally:
            for proc in procs:
                stop_process(proc)
        assert procs[1].returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
