"""Finding F1, logs (docs/security.md): session tokens and URL signatures were logged in clear.

``avatar up`` is run with uvicorn replaced by a recorder to get the exact logging configuration it
passes; a real uvicorn process is then started with that configuration, a client authenticates
with the (deprecated) ``?token=`` form and downloads a presigned URL, and the process's whole log
is searched for the secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from click.testing import CliRunner

from avatar import cli
from avatar.presentation.log_redaction import REDACTED, redact_urls
from tests.support.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]

_SERVER = textwrap.dedent(
    """
    import json, sys
    import uvicorn
    from avatar.presentation.app import create_app
    from avatar.settings import Settings
    from tests.fakes import fake_container

    from avatar.application.accounts import AccountService

    settings = Settings(_env_file=None, data_dir=sys.argv[3])
    container = fake_container(settings)

    async def write_key(services):
        # every REST call is authenticated: a user whose key the test reads from a file
        _user, key = await AccountService(container.uow, container.clock).create_user("logs")
        open(sys.argv[4], "w").write(key)

    app = create_app(settings, container, on_ready=write_key)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_config=json.loads(sys.argv[1]))
    """
)


def _config_of_avatar_up(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(cli.main, ["up", "--port", "1"])
    assert result.exit_code == 0, result.output
    config: dict[str, Any] | None = seen.get("log_config")
    assert isinstance(config, dict), "avatar up must hand uvicorn a logging configuration that redacts"
    return config


@contextlib.contextmanager
def _server_process(config: dict[str, Any], port: int, tmp_path: Path) -> Iterator[Path]:
    """The orchestrator in its own process with ``config``; yields its log file once it listens."""
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SERVER,
                json.dumps(config),
                str(port),
                str(tmp_path / "var"),
                str(tmp_path / "key"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        wait_for_port(port, timeout_s=60)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _use_secrets(base: str, key: str) -> tuple[str, str]:
    """Authenticate with ``?token=`` and fetch a presigned URL; returns (token, signature)."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        created = (await client.post("/api/v1/sessions", json={})).json()
        signature = "f" * 64
        await client.get(f"/api/v1/objects/raw_inputs/a.wav?expires=1&sig={signature}")
        await client.get("/api/v1/sessions?limit=5")
    async with websockets.connect(created["ws_url"]) as ws:
        await ws.recv()
    await asyncio.sleep(0.5)
    return str(created["token"]), signature


def test_tokens_and_signatures_never_reach_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config_of_avatar_up(monkeypatch)
    port = free_port()
    with _server_process(config, port, tmp_path) as log:
        key = (tmp_path / "key").read_text()
        token, signature = asyncio.run(_use_secrets(f"http://127.0.0.1:{port}", key))
    text = log.read_text()
    assert key not in text  # nor the API key
    assert "WebSocket /ws/" in text and "/api/v1/objects/" in text  # the requests were logged...
    assert token not in text  # ...without the token
    assert signature not in text  # ...or the URL signature
    assert REDACTED in text and "limit=5" in text  # harmless parameters stay readable


def test_redaction_keeps_paths_and_safe_parameters() -> None:
    line = '127.0.0.1:5000 - "GET /ws/abc?token=1.n.m&v=1 HTTP/1.1" 101'
    assert redact_urls(line) == f'127.0.0.1:5000 - "GET /ws/abc?token={REDACTED}&v=1 HTTP/1.1" 101'
    assert redact_urls("/a?opaque") == f"/a?{REDACTED}"
    assert redact_urls("no query here") == "no query here"
