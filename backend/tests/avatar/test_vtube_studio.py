"""The VTube Studio bridge against the protocol-level stand-in (tests/support/vtube_studio.py):
the token flow, a denied request, parameter creation, injection rate and ranges, mouth values that
follow the audio and stop at barge-in, the emotion's pose reached by interpolation, idle motion
outside speech, and recovery after VTube Studio restarts."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from avatar.application.avatar import PARAMETERS, AvatarHub
from avatar.application.avatar.poses import parse_pose_config
from avatar.domain.models import AudioChunk, Emotion
from avatar.infrastructure.vtube_studio import VTubeStudioBridge
from avatar.settings import VTubeStudioSettings
from tests.support.vtube_studio import VTubeStudioStandIn

SR = 16000


def tone(ms: float, amplitude: float) -> bytes:
    n = int(SR * ms / 1000)
    return b"".join(
        int(amplitude * 32767 * math.sin(2 * math.pi * 180 * i / SR)).to_bytes(2, "little", signed=True)
        for i in range(n)
    )


def _hub() -> AvatarHub:
    raw = {
        "emotions": {
            "happy": {
                "parameters": {"AvatarSmile": 0.9, "AvatarHeadZ": 4.0},
                "transition_s": 0.4,
                "hotkey": "SmileExpression",
            },
            "sad": {"parameters": {"AvatarSmile": -0.5}, "transition_s": 0.2, "hotkey": "NoSuchHotkey"},
        },
        "idle": {"interval_s": [0.3, 0.4], "transition_s": 0.2, "return_steps": 3, "return_step_s": 0.05},
    }
    return AvatarHub(parse_pose_config(raw), rng=random.Random(3))


def _settings(url: str, tmp_path: Path, **kw: object) -> VTubeStudioSettings:
    return VTubeStudioSettings(
        enabled=True,
        url=url,
        token_file=tmp_path / "vts" / "token.txt",
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        request_timeout_s=2.0,
        **kw,
    )


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[VTubeStudioStandIn]:
    server = VTubeStudioStandIn()
    await server.start()
    yield server
    await server.stop()


async def _bridge(hub: AvatarHub, settings: VTubeStudioSettings) -> VTubeStudioBridge:
    bridge = VTubeStudioBridge(settings, hub.subscribe_stage, hub.poses)
    await bridge.start()
    return bridge


async def test_token_once_parameters_created_and_fed_at_rate(
    standin: VTubeStudioStandIn, tmp_path: Path
) -> None:
    hub = _hub()
    settings = _settings(standin.url, tmp_path)
    bridge = await _bridge(hub, settings)
    try:
        await standin.wait_for(lambda: len(standin.injections) >= 40)
        kinds = [r.message_type for r in standin.received if r.message_type != "InjectParameterDataRequest"]
        assert kinds[:4] == [
            "APIStateRequest",
            "AuthenticationTokenRequest",
            "AuthenticationRequest",
            "CurrentModelRequest",
        ]
        assert settings.token_file.read_text() in standin.tokens
        assert settings.token_file.stat().st_mode & 0o777 == 0o600
        created = standin.of("ParameterCreationRequest")
        assert [r.data["parameterName"] for r in created] == list(PARAMETERS)
        assert created[0].data["min"] == 0.0 and created[0].data["max"] == 1.0
        times = [t for t, _ in standin.injections[10:]]
        rate = (len(times) - 1) / (times[-1] - times[0])
        assert rate >= 30.0, f"{rate:.1f} injections/s"
        assert set(standin.injections[-1][1]) == set(PARAMETERS)
        status = (await bridge.health()).extra
        assert status["state"] == "running" and status["authenticated"] and status["model_loaded"]
    finally:
        await bridge.aclose()
    # The next start reuses the stored token: no new popup in VTube Studio.
    bridge = await _bridge(hub, settings)
    try:
        await standin.wait_for(lambda: standin.connections == 2 and bridge.status.state == "running")
        assert len(standin.of("AuthenticationTokenRequest")) == 1
        assert len([r for r in standin.of("AuthenticationRequest") if r.connection == 2]) == 1
    finally:
        await bridge.aclose()
        await hub.aclose()


async def test_a_revoked_token_is_replaced_and_a_denial_is_a_status_not_a_loop(
    standin: VTubeStudioStandIn, tmp_path: Path
) -> None:
    hub = _hub()
    settings = _settings(standin.url, tmp_path)
    settings.token_file.parent.mkdir(parents=True)
    settings.token_file.write_text("revoked-token")
    standin.allow = False
    bridge = await _bridge(hub, settings)
    try:
        await standin.wait_for(lambda: bridge.status.state == "denied")
        await asyncio.sleep(0.6)  # longer than the reconnect backoff: nothing is retried
        assert len(standin.of("AuthenticationTokenRequest")) == 1 and standin.connections == 1
        assert not settings.token_file.exists()  # the refused token was dropped
        health = await bridge.health()
        assert health.ok and "denied in VTube Studio" in health.detail
        assert health.extra["authenticated"] is False and health.extra["connected"] is False
    finally:
        await bridge.aclose()
        await hub.aclose()


async def test_mouth_pose_idle_and_barge_in_reach_vtube_studio(
    standin: VTubeStudioStandIn, tmp_path: Path
) -> None:
    hub = _hub()
    bridge = await _bridge(hub, _settings(standin.url, tmp_path))
    sid, turn = uuid.uuid4(), uuid.uuid4()
    try:
        await standin.wait_for(lambda: bridge.status.state == "running")
        hub.phase_changed(sid, "thinking")  # the session becomes the stage
        await asyncio.sleep(0.5)
        before = len(standin.injections)
        hub.reply_emotion(sid, turn, Emotion.HAPPY)
        hub.phase_changed(sid, "speaking")
        t_speech = asyncio.get_running_loop().time()
        # 1.2 s of reply audio: loud 200 ms, quiet 200 ms, three times; then a barge-in at ~0.9 s.
        seq = 0
        for _ in range(3):
            for pcm in (tone(200, 0.5), tone(200, 0.0)):
                hub.reply_audio(sid, turn, seq, AudioChunk(pcm=pcm, sample_rate=SR))
                seq += 1
        await asyncio.sleep(0.9 - (asyncio.get_running_loop().time() - t_speech))
        hub.reply_interrupted(sid, turn)
        interrupt_at = standin.injections[-1][0]
        hub.phase_changed(sid, "listening")
        await asyncio.sleep(1.0)
        speech = standin.injections[before:]
        mouth = [(t, v["AvatarMouthOpen"]) for t, v in speech]
        opened = [v for t, v in mouth if t < interrupt_at]
        assert max(opened) > 0.8 and min(opened[5:]) < 0.1  # rises and falls with the audio
        # Closed within two injection periods of the barge-in, and stays closed.
        after = [v for t, v in mouth if t > interrupt_at + 0.06]
        assert after and max(after) == 0.0
        # The pose is reached by interpolation over 0.4 s, not in one jump.
        smile = [v["AvatarSmile"] for _, v in speech]
        assert smile[-1] == pytest.approx(0.9)
        assert any(0.2 < v < 0.7 for v in smile)
        assert standin.triggered == ["SmileExpression"]
        # Idle head motion before speech, none while speaking (the head returns to centre).
        idle_before = [v["AvatarHeadX"] for _, v in standin.injections[:before]]
        assert any(abs(v) > 0.01 for v in idle_before)
        during = [v["AvatarHeadX"] for t, v in speech if t_speech + 0.3 < t < interrupt_at - 0.05]
        assert during and max(abs(v) for v in during) < 0.01
        # An unknown hotkey is recorded, not fatal.
        hub.reply_emotion(sid, uuid.uuid4(), Emotion.SAD)
        await standin.wait_for(lambda: "NoSuchHotkey" in bridge.status.last_error)
        assert bridge.status.state == "running"
    finally:
        await bridge.aclose()
        await hub.aclose()


async def test_recovers_after_vtube_studio_restarts_and_recreates_lost_parameters(
    standin: VTubeStudioStandIn, tmp_path: Path
) -> None:
    hub = _hub()
    bridge = await _bridge(hub, _settings(standin.url, tmp_path))
    try:
        await standin.wait_for(lambda: bridge.status.state == "running")
        await standin.stop()
        await standin.wait_for(lambda: not bridge.status.connected)
        assert bridge.status.last_error
        await asyncio.sleep(0.5)  # a few refused attempts while it is down
        standin.parameters.clear()  # e.g. deleted by the streamer meanwhile
        await standin.start()
        await standin.wait_for(lambda: bridge.status.state == "running" and standin.connections == 2)
        count = len(standin.injections)
        await standin.wait_for(lambda: len(standin.injections) > count + 10)
        assert len(standin.of("AuthenticationTokenRequest")) == 1  # the stored token still works
        # Parameters deleted while connected: the 453 error makes the bridge create them again.
        standin.parameters.clear()
        await standin.wait_for(lambda: "453" in bridge.status.last_error)
        count = len(standin.injections)
        await standin.wait_for(lambda: len(standin.injections) > count + 5)
        assert set(standin.parameters) == set(PARAMETERS)
    finally:
        await bridge.aclose()
        await hub.aclose()
