"""Finding F4 (docs/security.md): WebSocket upgrades were accepted from any Origin and any Host,
and the token had to travel in the URL.

Replayed against a real server: a page on another site (cross-site WebSocket hijacking) and a
rebound DNS name (Host: attacker's name) both held a valid token and got a live session before.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from avatar.presentation.ws_security import WebSocketPolicy
from avatar.settings import Settings
from tests.e2e.harness import create_session
from tests.security.conftest import orchestrator, security_settings


def _socket_url(base: str, session_id: str) -> str:
    return f"{base.replace('http', 'ws')}/ws/{session_id}?v=1"


async def _session_state(ws: websockets.ClientConnection) -> dict[str, object]:
    while True:
        message: dict[str, object] = json.loads(await ws.recv())
        if message["type"] == "session_state":
            return message


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return security_settings(tmp_path / "var", allowed_origins=["https://app.example.org"])


async def test_cross_site_origin_is_refused_before_the_socket_opens(settings: Settings) -> None:
    async with orchestrator(settings) as base:
        created = await create_session(base)
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(created["ws_url"], origin=Origin("https://evil.example")):
                pass
        assert refused.value.response.status_code == 403
        body = json.loads(refused.value.response.body or b"{}")
        assert body["error"]["code"] == "FORBIDDEN_ORIGIN"
        assert "evil.example" in body["error"]["message"]
        for bad in ("null", "file://", "https://127.0.0.1.evil.example"):
            with pytest.raises(InvalidStatus):
                async with websockets.connect(created["ws_url"], origin=Origin(bad)):
                    pass


async def test_a_rebound_host_name_is_refused(settings: Settings) -> None:
    async with orchestrator(settings) as base:
        created = await create_session(base)
        port = int(base.rsplit(":", 1)[1])
        # What a browser sends after the attacker's name was rebound to 127.0.0.1.
        rebound = created["ws_url"].replace("127.0.0.1", "rebind.attacker.example")
        with socket.create_connection(("127.0.0.1", port)) as sock:
            with pytest.raises(InvalidStatus) as refused:
                async with websockets.connect(rebound, sock=sock):
                    pass
        assert refused.value.response.status_code == 403
        # A second Host header cannot smuggle the name past the check either.
        with pytest.raises(InvalidStatus):
            async with websockets.connect(
                created["ws_url"], additional_headers={"Host": f"rebind.attacker.example:{port}"}
            ):
                pass


async def test_own_origin_listed_origins_and_non_browsers_are_let_in(settings: Settings) -> None:
    async with orchestrator(settings) as base:
        port = base.rsplit(":", 1)[1]
        for origin in (Origin(f"http://127.0.0.1:{port}"), Origin("https://app.example.org"), None):
            created = await create_session(base)
            async with websockets.connect(created["ws_url"], origin=origin) as ws:
                assert (await _session_state(ws))["resumed"] is False
        # localhost is one of the server's own names, and its page is same-origin.
        created = await create_session(base)
        url = created["ws_url"].replace("127.0.0.1", "localhost")
        async with websockets.connect(url, origin=Origin(f"http://localhost:{port}")) as ws:
            assert (await _session_state(ws))["resumed"] is False


async def test_the_token_travels_in_the_subprotocol_header(settings: Settings) -> None:
    async with orchestrator(settings) as base:
        created = await create_session(base)
        url = _socket_url(base, created["session_id"])
        assert "token" not in url
        async with websockets.connect(
            url,
            subprotocols=[Subprotocol("avatar.v1"), Subprotocol(f"avatar.token.{created['token']}")],
        ) as ws:
            assert ws.subprotocol == "avatar.v1"  # the token is never echoed back
            assert (await _session_state(ws))["protocol_version"] == 1
        other = await create_session(base)
        async with websockets.connect(
            _socket_url(base, other["session_id"]),
            subprotocols=[Subprotocol("avatar.v1"), Subprotocol(f"avatar.token.{created['token']}")],
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_the_token_travels_in_the_first_message(settings: Settings) -> None:
    async with orchestrator(settings) as base:
        created = await create_session(base)
        async with websockets.connect(_socket_url(base, created["session_id"])) as ws:
            await ws.send(json.dumps({"type": "auth", "token": created["token"]}))
            assert (await _session_state(ws))["resumed"] is False
        # Anything else first is refused with a reason.
        async with websockets.connect(_socket_url(base, created["session_id"])) as ws:
            await ws.send(json.dumps({"type": "ping", "t": 1}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert "auth" in closed.value.rcvd.reason


@pytest.mark.parametrize(
    ("host", "origin", "allowed"),
    [
        ("127.0.0.1:8000", None, True),
        ("localhost:8000", "http://localhost:8000", True),
        ("[::1]:8000", "http://[::1]:8000", True),
        ("avatar.example.org", "https://avatar.example.org", True),  # server.public_url
        ("avatar.example.org", "https://app.example.org", True),  # allowed_origins
        ("localhost:8000", "http://localhost:5173", False),  # another local port is another origin
        ("evil.example", None, False),
        ("", None, False),
    ],
)
def test_policy_decisions(tmp_path: Path, host: str, origin: str | None, allowed: bool) -> None:
    settings = security_settings(tmp_path, allowed_origins=["https://app.example.org"])
    settings.server.public_url = "https://avatar.example.org"
    policy = WebSocketPolicy.from_settings(settings)
    assert (policy.refusal(host, origin) is None) is allowed
