"""The HTTP adapter against the real prosody service app, through the port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from avatar.application.ports.prosody import ProsodyAnalyzer
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.infrastructure.prosody import HttpProsodyAnalyzer, create_service_app
from avatar.settings import Settings
from avatar_common.audio import float_to_pcm16
from avatar_prosody.app import ServiceConfig, create_app
from avatar_prosody.synth import synthetic_voice
from tests.support.audio import SpeechClip


@pytest.fixture(scope="module")
async def remote() -> AsyncIterator[HttpProsodyAnalyzer]:
    app = create_app(ServiceConfig(workers=1, executor="thread", warm_up=False))
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://prosody")
        analyzer = HttpProsodyAnalyzer("http://prosody", client=client)
        try:
            yield analyzer
        finally:
            await analyzer.aclose()


async def test_remote_analysis_matches_the_port(
    remote: HttpProsodyAnalyzer, librivox: list[SpeechClip]
) -> None:
    port: ProsodyAnalyzer = remote
    clip = librivox[3]
    result = await port.analyze(clip.pcm, clip.sample_rate)
    assert result.reliable and result.reason is None
    assert 60.0 <= float(result.features["f0_mean_hz"] or 0) <= 400.0
    assert "z=" in result.explanation["stability"]
    usual = {"intensity_mean_db": float(result.features["intensity_mean_db"] or 0) + 10}
    quieter_than_usual = await port.analyze(clip.pcm, clip.sample_rate, baseline=usual)
    assert quieter_than_usual.confidence < result.confidence
    health = await port.health()
    assert health.ok and health.extra["workers"] == 1


async def test_remote_bad_input(remote: HttpProsodyAnalyzer) -> None:
    silent = await remote.analyze(bytes(16000 * 4), 16000)
    assert (silent.reliable, silent.reason) == (False, "silent")
    short = await remote.analyze(float_to_pcm16(synthetic_voice(0.2)), 16000)
    assert (short.reliable, short.reason) == (False, "too_short")
    with pytest.raises(InvalidInputError):
        await remote.analyze(b"\x00\x01\x02", 16000)
    with pytest.raises(InvalidInputError):
        await remote.analyze(float_to_pcm16(np.zeros(4000, dtype=np.float32)), 4000)


async def test_unreachable_service_is_a_dependency_error() -> None:
    analyzer = HttpProsodyAnalyzer("http://127.0.0.1:9", timeout_s=2.0)
    try:
        with pytest.raises(DependencyError):
            await analyzer.analyze(float_to_pcm16(synthetic_voice(1.0)), 16000)
        health = await analyzer.health()
        assert not health.ok and "unreachable" in health.detail
    finally:
        await analyzer.aclose()


def test_service_app_from_settings() -> None:
    settings = Settings()
    settings.prosody.workers = 2
    app = create_service_app(settings)
    assert {"/analyze", "/health", "/metrics"} <= {getattr(r, "path", "") for r in app.routes}
    assert app.state.engine.workers == 2 and app.state.engine.executor_kind == "process"
