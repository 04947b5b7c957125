"""``WS /ws/{session_id}/avatar`` over a real uvicorn server (fake engines): authentication like the
conversation socket, bad input, and a turn whose avatar events line up with the audio chunks the
conversation socket carries, while the VTube Studio bridge (to the stand-in) shows in the health."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from pydantic import SecretStr
from websockets.exceptions import ConnectionClosedError

from avatar.application.conversation import issue_token
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.fakes import FakeChatModel, FakeSynthesizer, fake_container
from tests.support.vtube_studio import VTubeStudioStandIn

SECRET = "avatar-test-secret"


@pytest_asyncio.fixture(scope="module")
async def standin() -> AsyncIterator[VTubeStudioStandIn]:
    server = VTubeStudioStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def base(standin: VTubeStudioStandIn, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    settings = Settings(environment="test")
    settings.security.secret_key = SecretStr(SECRET)
    settings.vts.enabled = True
    settings.vts.url = standin.url
    settings.vts.token_file = tmp_path_factory.mktemp("vts") / "token.txt"
    container = fake_container(
        settings,
        chat_model=FakeChatModel(("[happy] Hello there! It is so nice to meet you today.",)),
        fast_tts=FakeSynthesizer(delay_s=0.05),
    )
    async with running_server(create_app(settings, container)) as url:
        yield url


def avatar_url(created: dict[str, Any], token: str | None = None) -> str:
    ws = str(created["ws_url"]).split("?")[0]
    return f"{ws}/avatar?token={token if token is not None else created['token']}"


async def _closed_with(url: str) -> int:
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        assert ws.close_code is not None
        return ws.close_code


async def test_the_avatar_stream_needs_the_session_token(base: str) -> None:
    created = await create_session(base)
    other = await create_session(base)
    assert await _closed_with(avatar_url(created, "")) == 4401
    assert await _closed_with(avatar_url(created, "garbage")) == 4401
    assert await _closed_with(avatar_url(created, other["token"])) == 4401
    forged = issue_token("another-secret", uuid.UUID(created["session_id"]), 0, 10**10)
    assert await _closed_with(avatar_url(created, forged)) == 4401
    expired = issue_token(SECRET, uuid.UUID(created["session_id"]), 0, 1)
    assert await _closed_with(avatar_url(created, expired)) == 4401
    ws_base = str(created["ws_url"]).split("/ws/")[0]
    assert await _closed_with(f"{ws_base}/ws/not-a-uuid/avatar?token=x") == 4404


async def test_bad_input_gets_error_events_and_the_stream_goes_on(base: str) -> None:
    created = await create_session(base)
    async with websockets.connect(avatar_url(created)) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello" and hello["protocol_version"] == 1 and hello["frame_ms"] == 20
        assert {p["name"] for p in hello["parameters"]} >= {"AvatarMouthOpen", "AvatarVowelA"}
        cases: list[tuple[str | bytes, str]] = [
            ("{nope", "INVALID_JSON"),
            ('{"type": "ping", "t": NaN}', "INVALID_JSON"),
            ('{"type": "ping", "t": 1e400}', "INVALID_JSON"),
            ("[" * 1000 + "]" * 1000, "INVALID_JSON"),  # nested deeper than the strict parser allows
            ("[1]", "INVALID_MESSAGE"),
            (json.dumps({"type": "audio_chunk"}), "UNKNOWN_MESSAGE_TYPE"),
            (json.dumps({"type": "ping", "t": "soon"}), "INVALID_MESSAGE"),
            (json.dumps({"type": "ping", "extra": 1}), "INVALID_MESSAGE"),
            (b"\x00\x01", "BINARY_NOT_ACCEPTED"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            while (message := json.loads(await ws.recv()))["type"] == "idle":
                pass
            assert message == {"type": "error", "code": code, "message": message["message"]}, raw
            assert message["message"]
        await ws.send(json.dumps({"type": "ping", "t": 7}))
        while (message := json.loads(await ws.recv()))["type"] != "pong":
            pass
        assert message["t"] == 7
        await ws.send("x" * 5000)
        while (message := json.loads(await ws.recv()))["type"] != "error":
            pass
        assert message["code"] == "FRAME_TOO_LARGE"
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        assert ws.close_code == 1009


async def test_a_turn_drives_the_avatar_stream_in_step_with_the_audio(
    base: str, standin: VTubeStudioStandIn
) -> None:
    created = await create_session(base)
    events: list[dict[str, Any]] = []

    async def follow(ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            events.append(json.loads(raw))

    async with websockets.connect(avatar_url(created)) as avatar_ws:
        follower = asyncio.create_task(follow(avatar_ws))
        async with Client.connect(created["ws_url"]) as client:
            await client.until_type("session_state")
            await client.send({"type": "text_input", "text": "hello"})
            await client.until_type("audio_chunk")
            await asyncio.sleep(0.3)
            await client.send({"type": "interrupt"})
            done = await client.until_type("turn_completed")
            assert done["interrupted"] is True
        await asyncio.sleep(0.3)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "hello"
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[:2] == ["thinking", "speaking"] and states[-1] == "listening"
    (expression,) = [e for e in events if e["type"] == "expression"]
    assert expression["emotion"] == "happy" and expression["turn_id"] == done["turn_id"]
    assert 100 <= expression["transition_ms"] <= 500 and expression["parameters"]["AvatarSmile"] > 0.5
    mouths = [e for e in events if e["type"] == "mouth"]
    audio = client.of("audio_chunk")
    assert mouths and len(mouths) <= len(audio)
    by_seq = {a["seq"]: a for a in audio}
    offset = 0.0
    for mouth in mouths:
        chunk = by_seq[mouth["seq"]]
        assert mouth["turn_id"] == chunk["turn_id"] == done["turn_id"]
        assert mouth["duration_ms"] == chunk["duration_ms"]
        assert mouth["chunk_offset_ms"] == pytest.approx(offset, abs=0.2)
        assert len(mouth["frames"]) == pytest.approx(chunk["duration_ms"] / 20, abs=1)
        offset += chunk["duration_ms"]
    assert max(f["open"] for m in mouths for f in m["frames"]) > 0.5
    interrupted = kinds.index("interrupted")
    assert events[interrupted]["turn_id"] == done["turn_id"]
    assert "mouth" not in kinds[interrupted:]
    # The same turn reached VTube Studio (the stand-in) through the bridge.
    assert any(v.get("AvatarMouthOpen", 0) > 0.5 for _, v in standin.injections)
    async with httpx.AsyncClient(base_url=base) as http:
        health = (await http.get("/api/v1/health")).json()["services"]["vtube_studio"]
    assert health["ok"] and health["state"] == "running" and health["authenticated"] is True
    assert health["connected"] and health["model_loaded"] and health["injections"] > 0


async def test_the_stream_closes_when_the_conversation_ends() -> None:
    settings = Settings(environment="test")
    settings.security.reconnect_grace_s = 1  # the session ends 1 s after its socket goes
    container = fake_container(settings)
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as url:
            created = await create_session(url)
            async with websockets.connect(avatar_url(created)) as avatar_ws:
                assert json.loads(await avatar_ws.recv())["type"] == "hello"
                async with Client.connect(created["ws_url"]) as client:
                    await client.until_type("session_state")
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await asyncio.wait_for(avatar_ws.recv(), 10)
                assert avatar_ws.close_code == 4410
    finally:
        await container.queue.stop()
