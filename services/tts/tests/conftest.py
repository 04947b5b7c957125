"""Real packaged voices for the TTS tests: one started service shared by the tests, engines, servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from avatar_common.modelstore import Manifest
from avatar_tts.app import create_app
from avatar_tts.service import ServiceConfig, TTSService
from tests.support.net import serve_in_thread

REPO = Path(__file__).resolve().parents[3]


def manifest() -> Manifest:
    return Manifest.load(REPO / "models" / "manifest.json", REPO / "models" / "cache")


def packaged_config(**overrides: object) -> ServiceConfig:
    """The embedded default: Piper fast, Kokoro HQ, espeak-ng fallback, from the model manifest."""
    m = manifest()
    config = ServiceConfig(
        piper_model=m.path("piper-en_US-joe-medium", "en_US-joe-medium.onnx"),
        kokoro_model=m.path("kokoro-82m-int8"),
        kokoro_voices=m.path("kokoro-voices-ja", "voices_ja.npz"),
        kokoro_vocab=m.path("kokoro-voices-ja", "vocab.json"),
        memory_budget_mb=4096,
        idle_unload_s=0,
    )
    return replace(config, **overrides)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="session")
async def tts_service() -> AsyncIterator[TTSService]:
    service = TTSService(packaged_config())
    await service.start()
    yield service
    await service.aclose()


@dataclass
class RunningServer:
    url: str
    service: TTSService


@pytest.fixture(scope="session")
def tts_server() -> Iterator[RunningServer]:
    # Its own service: asyncio primitives belong to the server thread's loop, not the tests' loop.
    service = TTSService(packaged_config())
    with serve_in_thread(create_app(service)) as url:
        yield RunningServer(url, service)
