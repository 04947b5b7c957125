"""Prosody worker processes killed with SIGKILL: the supervisor replaces the pool (counted, logged,
reported in health) and the next analysis is served; the stand-alone engine heals by itself too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest
from prometheus_client import REGISTRY

from avatar.infrastructure.prosody import EmbeddedProsodyAnalyzer, build_prosody_analyzer
from avatar.settings import Settings
from avatar_common.audio import float_to_pcm16
from avatar_prosody.analyzer import ProsodyEngine
from avatar_prosody.synth import synthetic_voice

pytestmark = pytest.mark.slow

RATE = 16000


def voice() -> bytes:
    return float_to_pcm16(synthetic_voice(1.5))


async def test_a_killed_worker_is_replaced_and_the_next_analysis_served() -> None:
    settings = Settings()
    settings.prosody.workers = 1
    before = REGISTRY.get_sample_value("supervised_restarts_total", {"child": "prosody"}) or 0.0
    async with contextlib.AsyncExitStack() as stack:
        analyzer = await build_prosody_analyzer(settings, stack)
        assert isinstance(analyzer, EmbeddedProsodyAnalyzer) and analyzer.supervisor is not None
        assert (await analyzer.analyze(voice(), RATE)).reliable
        [pid] = analyzer.engine.worker_pids()
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(120):
            while True:
                health = await analyzer.health()
                process = health.extra["process"]
                assert isinstance(process, dict)
                if process["restarts"] >= 1 and process["state"] == "running":
                    break
                await asyncio.sleep(0.1)
        assert health.ok and process["last_error"]
        assert analyzer.engine.worker_pids() and pid not in analyzer.engine.worker_pids()  # warmed up
        assert (await analyzer.analyze(voice(), RATE)).reliable
        assert REGISTRY.get_sample_value("supervised_restarts_total", {"child": "prosody"}) == before + 1


async def test_the_stand_alone_engine_replaces_a_broken_pool_itself() -> None:
    engine = ProsodyEngine(1, executor="process")
    try:
        samples = synthetic_voice(1.5)
        assert (await engine.analyze(samples, RATE)).reliable
        [pid] = engine.worker_pids()
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            while True:
                if engine.dead_worker() is not None:
                    break
                await asyncio.sleep(0.05)
        assert (await engine.analyze(samples, RATE)).reliable
        assert engine.restarts == 1 and engine.dead_worker() is None and engine.worker_pids() != [pid]
    finally:
        await engine.aclose()
