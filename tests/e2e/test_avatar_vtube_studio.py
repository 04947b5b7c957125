"""A spoken turn on the real embedded stack (Whisper, SmolLM2 via llama.cpp, Piper, PostgreSQL)
moving a VTube Studio model: the protocol-level stand-in (tests/support/vtube_studio.py) records
what the bridge sends. Shows the auth flow, parameter creation, mouth values that rise and fall with
the reply audio and stop at barge-in, the emotion's pose reached by interpolation, idle motion
before and after but not during speech, and recovery after VTube Studio restarts
(docs/avatar-control.md)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from avatar.application.avatar import PARAMETERS, load_pose_config
from avatar.bootstrap import Container, build_container
from avatar.domain.models import Emotion
from avatar.presentation.app import create_app
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.e2e.test_conversation import e2e_settings
from tests.support.audio import SpeechClip
from tests.support.vtube_studio import VTubeStudioStandIn

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module")
async def standin() -> AsyncIterator[VTubeStudioStandIn]:
    server = VTubeStudioStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    module_database_url: str,
    llama_server: str,
    standin: VTubeStudioStandIn,
) -> AsyncIterator[tuple[str, Container]]:
    tmp = tmp_path_factory.mktemp("e2e-vts")
    settings = e2e_settings(tmp, module_database_url, llama_server)
    settings.vts.enabled = True
    settings.vts.url = standin.url
    settings.vts.token_file = tmp / "vts-token.txt"
    settings.vts.reconnect_min_s = 0.2
    settings.vts.reconnect_max_s = 1.0
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


async def test_a_spoken_turn_moves_the_vtube_studio_model(
    stack: tuple[str, Container], standin: VTubeStudioStandIn, librivox: list[SpeechClip]
) -> None:
    base, container = stack
    await standin.wait_for(lambda: len(standin.injections) > 10, timeout_s=30)
    assert [r.message_type for r in standin.received[:3]] == [
        "APIStateRequest",
        "AuthenticationTokenRequest",
        "AuthenticationRequest",
    ]
    assert {r.data["parameterName"] for r in standin.of("ParameterCreationRequest")} == set(PARAMETERS)

    created = await create_session(base)
    avatar_events: list[dict[str, Any]] = []

    async def follow() -> None:
        ws_url = str(created["ws_url"]).split("?")[0] + f"/avatar?token={created['token']}"
        async with websockets.connect(ws_url) as ws:
            async for raw in ws:
                avatar_events.append(json.loads(raw))
                watching.set()

    watching = asyncio.Event()
    follower = asyncio.create_task(follow())
    async with Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        # The watched session takes the empty stage, so the bridge idles with it from here on.
        await asyncio.wait_for(watching.wait(), 10)
        t_start = time.monotonic()
        await stream_realtime(client, librivox[0].pcm)
        await client.until_type("audio_chunk", timeout_s=120)
        t_audio = time.monotonic()
        await asyncio.sleep(1.6)
        await client.send({"type": "interrupt"})
        done = await client.until_type("turn_completed")
        t_interrupt = time.monotonic()
    await asyncio.sleep(3.0)  # idle resumes after the barge-in
    t_end = time.monotonic()

    def window(t0: float, t1: float) -> list[dict[str, float]]:
        return [v for t, v in standin.injections if t0 <= t < t1]

    # The mouth rises and falls with the reply audio, and is shut right after the barge-in.
    speech = [v["AvatarMouthOpen"] for v in window(t_audio, t_interrupt - 0.05)]
    assert max(speech) > 0.5 and min(speech) < 0.2, speech
    after = [v["AvatarMouthOpen"] for v in window(t_interrupt + 0.1, t_end)]
    assert after and max(after) == 0.0
    # The reply's emotion reaches its pose by interpolation (values between start and target).
    (expression,) = [e for e in avatar_events if e["type"] == "expression"]
    assert expression["turn_id"] == done["turn_id"]
    pose = load_pose_config(container.settings.vts.poses_file).pose(Emotion(expression["emotion"]))
    # The face parameter this pose moves most (head angles also carry idle motion).
    name = max(
        ("AvatarSmile", "AvatarBrows", "AvatarEyeOpen"),
        key=lambda k: abs(pose.parameters.get(k, PARAMETERS[k].default) - PARAMETERS[k].default),
    )
    start, target = PARAMETERS[name].default, pose.parameters[name]
    values = [v[name] for v in window(t_start, t_end)]
    assert values[-1] == pytest.approx(target, abs=1e-3)
    low, high = min(start, target), max(start, target)
    assert any(low + 0.01 < x < high - 0.01 for x in values), (expression, sorted(set(values)))
    # Idle head motion before the reply and after the barge-in, none while speaking.
    assert any(abs(v["AvatarHeadX"]) > 0.05 for v in window(0, t_audio))
    during = [v["AvatarHeadX"] for v in window(t_audio + 0.9, t_interrupt - 0.05)]
    assert during and max(during) - min(during) < 0.01
    assert any(abs(v["AvatarHeadX"]) > 0.05 for v in window(t_interrupt + 0.5, t_end))
    kinds = [e["type"] for e in avatar_events]
    assert {"hello", "state", "mouth", "expression", "idle", "interrupted"} <= set(kinds)
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)

    # VTube Studio restarts: the bridge reconnects with the stored token and keeps feeding.
    await standin.stop()
    await asyncio.sleep(1.0)
    await standin.start()
    count = len(standin.injections)
    await standin.wait_for(lambda: len(standin.injections) > count + 20, timeout_s=30)
    assert len(standin.of("AuthenticationTokenRequest")) == 1
    async with httpx.AsyncClient(base_url=base) as http:
        health = (await http.get("/api/v1/health")).json()["services"]["vtube_studio"]
    assert health["state"] == "running" and health["connections"] == 2
