"""The embedded recognizer (one loaded model for this package's tests) and a real remote ASR service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from avatar.application.ports.asr import SpeechRecognizer
from avatar.infrastructure.asr import build_recognizer, create_service_app
from avatar.settings import ASRSettings, Environment, Settings
from tests.support.net import free_port, serve_in_thread

#: The remote service in these tests runs keyed, as in compose (docs/security.md, "Service keys").
SERVICE_KEY = "asr-service-key-for-the-tests"


def asr_settings(**asr: object) -> Settings:
    return Settings(
        environment=Environment.TEST, asr=ASRSettings(**asr), security={"service_key": SERVICE_KEY}
    )


@pytest_asyncio.fixture(scope="session")
async def embedded_recognizer() -> AsyncIterator[SpeechRecognizer]:
    async with contextlib.AsyncExitStack() as stack:
        yield await build_recognizer(asr_settings(), stack)


@pytest.fixture(scope="session")
def asr_service_url() -> Iterator[str]:
    """`avatar serve asr`'s app (built from Settings) under uvicorn on a free loopback port."""
    port = free_port()
    with serve_in_thread(create_service_app(asr_settings(port=port)), port) as url:
        yield url
