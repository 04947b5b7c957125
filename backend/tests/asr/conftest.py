"""The embedded recognizer (one loaded model for this package's tests) and a real remote ASR service."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import uvicorn

from avatar.application.ports.asr import SpeechRecognizer
from avatar.infrastructure.asr import build_recognizer, create_service_app
from avatar.settings import ASRSettings, Environment, Settings
from tests.support.servers import free_port


def asr_settings(**asr: object) -> Settings:
    return Settings(environment=Environment.TEST, asr=ASRSettings(**asr))


@pytest_asyncio.fixture(scope="session")
async def embedded_recognizer() -> AsyncIterator[SpeechRecognizer]:
    async with contextlib.AsyncExitStack() as stack:
        yield await build_recognizer(asr_settings(), stack)


@pytest.fixture(scope="session")
def asr_service_url() -> Iterator[str]:
    """`avatar serve asr`'s app (built from Settings) under uvicorn on a free loopback port."""
    port = free_port()
    app = create_service_app(asr_settings(port=port))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio")
    )
    thread = threading.Thread(target=server.run, name="asr-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ASR service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
