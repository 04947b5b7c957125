"""One loaded Whisper model for every ASR test, and a real uvicorn server of the service app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from avatar_asr.app import create_app
from avatar_asr.service import ASRService
from services.asr.tests.helpers import asr_config
from tests.support.net import serve_in_thread


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
    app = create_app(asr_service.config, service=asr_service)
    with serve_in_thread(app) as url:
        yield RunningServer(url, asr_service)
