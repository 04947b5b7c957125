"""The compose reverse proxy (nginx/nginx.conf): syntax-checked with ``nginx -t``, then run for real
against a stand-in orchestrator to show it serves the app, proxies REST and the WebSocket upgrade,
redirects plain HTTP and rate-limits session creation."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from websockets.typing import Subprotocol

from tests.browser.support import free_port, serve_in_thread, wait_for_port

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is installed by `make setup-test`")


def _upstream() -> FastAPI:
    app = FastAPI()
    app.state.sessions = 0

    @app.get("/api/v1/health")
    async def health(request: Request) -> dict[str, str | None]:
        return {"status": "ok", "forwarded_proto": request.headers.get("x-forwarded-proto")}

    @app.post("/api/v1/sessions")
    async def create() -> dict[str, str]:
        app.state.sessions += 1
        return {"session_id": f"s{app.state.sessions}", "ws_url": "", "token": "t"}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.05)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.websocket("/ws/{session_id}")
    async def ws(websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        text = await websocket.receive_text()
        await websocket.send_text(f"{session_id}:{websocket.query_params.get('token')}:{text}")
        data = await websocket.receive_bytes()
        await websocket.send_bytes(data[::-1])
        await websocket.close()

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="realtime")
        await websocket.send_text(
            f"{websocket.headers.get('authorization')}:{websocket.query_params['model']}"
        )
        await websocket.close()

    return app


def _make_cert(directory: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(directory / "privkey.pem"),
            "-out",
            str(directory / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )


def _render(tmp: Path, upstream: int, http_port: int, https_port: int) -> Path:
    """The compose config with only host-specific values replaced (ports, paths, upstream host)."""
    text = CONF.read_text()
    replacements = {
        "server orchestrator:8000;": f"server 127.0.0.1:{upstream};",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/nginx/certs": str(tmp / "certs"),
        "/usr/share/nginx/html": str(tmp / "html"),
        "/tmp/nginx-": str(tmp / "nginx-"),
    }
    for old, new in replacements.items():
        assert old in text, f"nginx.conf no longer contains {old!r}"
        text = text.replace(old, new)
    out = tmp / "nginx.conf"
    out.write_text(text)
    return out


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, int]]:
    (tmp_path / "certs").mkdir()
    _make_cert(tmp_path / "certs")
    html = tmp_path / "html"
    (html / "assets").mkdir(parents=True)
    (html / "index.html").write_text('<!doctype html><div id="root"></div>')
    (html / "assets" / "app-123.js").write_text("console.log(1)")
    up, p80, p443 = free_port(), free_port(), free_port()
    conf = _render(tmp_path, up, p80, p443)
    globals_ = f"pid {tmp_path / 'nginx.pid'};"
    if os.geteuid() == 0:  # workers would drop to `nobody`, who cannot read pytest's private tmp dir
        globals_ += " user root;"
    check = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-g", globals_], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    assert "syntax is ok" in check.stderr
    app = _upstream()
    with serve_in_thread(app, up):
        proc = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", f"daemon off; {globals_}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(p443)
            yield {"http": p80, "https": p443, "upstream": up}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            assert proc.stderr is not None
            proc.stderr.close()


def test_nginx_rejects_a_broken_config(tmp_path: Path) -> None:
    broken = tmp_path / "nginx.conf"
    broken.write_text(CONF.read_text().replace("upstream orchestrator {", "upstream orchestrator"))
    res = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(broken), "-g", f"pid {tmp_path}/x.pid;"],
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0


async def test_nginx_serves_app_proxies_api_and_websocket(site: dict[str, int]) -> None:
    base = f"https://127.0.0.1:{site['https']}"
    async with httpx.AsyncClient(verify=False) as http:
        index = await http.get(f"{base}/")
        assert index.status_code == 200
        assert 'id="root"' in index.text
        assert index.headers["permissions-policy"] == "microphone=(self)"
        assert index.headers["cache-control"] == "no-cache"
        spa = await http.get(f"{base}/history/some-session")  # client-side route falls back to the app
        assert spa.status_code == 200
        assert 'id="root"' in spa.text
        asset = await http.get(f"{base}/assets/app-123.js")
        assert asset.headers["cache-control"] == "max-age=315360000"  # hashed names: cache for good
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert (await http.get(f"{base}/assets/missing.js")).status_code == 404
        health = await http.get(f"{base}/api/v1/health")
        assert health.json() == {"status": "ok", "forwarded_proto": "https"}

        plain = await http.get(f"http://127.0.0.1:{site['http']}/talk")
        assert plain.status_code == 301
        assert plain.headers["location"].startswith("https://")

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with websockets.connect(f"wss://127.0.0.1:{site['https']}/ws/abc?token=tok&v=1", ssl=ctx) as ws:
        await ws.send("hello")
        assert await ws.recv() == "abc:tok:hello"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"


async def test_nginx_rate_limits_session_creation(site: dict[str, int]) -> None:
    base = f"https://127.0.0.1:{site['https']}"
    async with httpx.AsyncClient(verify=False) as http:
        codes = [(await http.post(f"{base}/api/v1/sessions")).status_code for _ in range(16)]
    # burst of 10 beyond the first request passes, the rest are refused before reaching the app
    assert codes.count(200) == 11
    assert set(codes[11:]) == {429}


async def test_nginx_proxies_the_openai_realtime_socket(site: dict[str, int]) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"wss://127.0.0.1:{site['https']}/v1/realtime?model=avatar"
    headers = {"Authorization": "Bearer k"}
    protocols = [Subprotocol("realtime")]
    async with websockets.connect(url, ssl=ctx, additional_headers=headers, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        assert await ws.recv() == "Bearer k:avatar"


async def test_nginx_proxies_the_openai_endpoints_with_uploads_and_streams(site: dict[str, int]) -> None:
    """``/v1`` reaches the orchestrator (not the web app): a 5 MB upload (over the 1 MB of ``/api/``)
    and a server-sent event stream, passed on unbuffered."""
    base = f"https://127.0.0.1:{site['https']}"
    async with httpx.AsyncClient(verify=False, timeout=30) as http:
        upload = await http.post(f"{base}/v1/audio/transcriptions", content=b"\x00" * 5_000_000)
        assert upload.status_code == 200 and upload.json() == {"received": 5_000_000}
        async with http.stream("POST", f"{base}/v1/chat/completions") as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in answer.aiter_lines() if line]
        assert lines == ["data: 0", "data: 1", "data: 2", "data: [DONE]"]
