"""One loaded Whisper model for every ASR test, and a real uvicorn server of the service app."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
import uvicorn

from avatar_asr.app import create_app
from avatar_asr.service import ASRService
from services.asr.tests.helpers import asr_config
from tests.support.servers import free_port


@pytest_asyncio.fixture(scope="session")
async def asr_service() -> AsyncIterator[ASRService]:
    service = ASRService(asr_config())
    await service.start(warm_up=False)
    yield service
    service.close()


@dataclass
class RunningServer:
    url: str
    service: ASRService


@pytest.fixture(scope="session")
def asr_server(asr_service: ASRService) -> Iterator[RunningServer]:
    """The real app under uvicorn on a free loopback port, in a thread, sharing the loaded model."""
    port = free_port()
    app = create_app(asr_service.config, service=asr_service)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="asr-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the ASR server did not start")
        time.sleep(0.05)
    yield RunningServer(f"http://127.0.0.1:{port}", asr_service)
    server.should_exit = True
    thread.join(timeout=30)
