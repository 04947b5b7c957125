"""The model services' shared key (docs/security.md, "Service keys"): a keyed service refuses
requests and WebSocket upgrades without it, keeps health and metrics open, and the orchestrator's
adapters built from the same settings send it. Here with the real prosody service over HTTP; the
ASR and TTS services run keyed in their own adapter tests (backend/tests/asr, backend/tests/tts)."""

from __future__ import annotations

import contextlib

import httpx
import pytest
import websockets
from fastapi import FastAPI, WebSocket
from pydantic import ValidationError

from avatar.domain.errors import DependencyError
from avatar.infrastructure.prosody import build_prosody_analyzer, create_service_app
from avatar.infrastructure.secrets import guard_service, service_headers
from avatar.settings import Environment, Placement, Settings
from avatar_common.audio import float_to_pcm16
from avatar_prosody.synth import synthetic_voice
from tests.support.net import serve_in_thread

KEY = "service-key-for-tests-0123456789"


def keyed(**prosody: object) -> Settings:
    settings = Settings(_env_file=None, environment=Environment.TEST, security={"service_key": KEY})
    for name, value in prosody.items():
        setattr(settings.prosody, name, value)
    return settings


def test_production_needs_a_service_key() -> None:
    with pytest.raises(ValidationError, match="AVATAR_SECURITY__SERVICE_KEY"):
        Settings(_env_file=None, environment=Environment.PRODUCTION)
    assert service_headers(Settings(_env_file=None, environment=Environment.TEST)) == {}
    assert service_headers(keyed()) == {"Authorization": f"Bearer {KEY}"}


async def test_a_keyed_prosody_service_and_the_adapter_that_sends_the_key() -> None:
    settings = keyed(workers=1)
    with serve_in_thread(create_service_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            wav = {"audio": ("a.wav", b"RIFF....", "audio/wav")}
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                refused = await http.post("/analyze", files=wav, headers=headers)
                assert refused.status_code == 401, refused.text
                assert refused.json()["error"]["code"] == "UNAUTHENTICATED"
                assert KEY not in refused.text
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200
        remote = settings.model_copy(deep=True)
        remote.prosody.placement = Placement.REMOTE
        remote.prosody.url = url
        async with contextlib.AsyncExitStack() as stack:
            analyzer = await build_prosody_analyzer(remote, stack)
            result = await analyzer.analyze(float_to_pcm16(synthetic_voice(2.0)), 16000)
            assert result.reliable, result.reason
        # The same adapter without the key is refused, and says so (not a crash).
        unkeyed = remote.model_copy(deep=True)
        unkeyed.security.service_key = None
        async with contextlib.AsyncExitStack() as stack:
            analyzer = await build_prosody_analyzer(unkeyed, stack)
            with pytest.raises(DependencyError) as refused_key:
                await analyzer.analyze(float_to_pcm16(synthetic_voice(2.0)), 16000)
            assert refused_key.value.code == "SERVICE_KEY_REFUSED"
            assert "AVATAR_SECURITY__SERVICE_KEY" in str(refused_key.value)


async def test_a_websocket_upgrade_without_the_key_is_refused() -> None:
    app = FastAPI()

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        await ws.close()

    guard_service(app, keyed())
    with serve_in_thread(app) as url:
        ws_url = url.replace("http://", "ws://") + "/v1/stream"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url):
                pass
        assert refused.value.response.status_code == 403
        async with websockets.connect(ws_url, additional_headers=service_headers(keyed())) as ws:
            assert await ws.recv() == "ready"
