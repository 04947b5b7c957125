"""A real orchestrator (uvicorn + create_app) over fakes, with keys of its own in a temporary data dir."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container


def security_settings(data_dir: Path, **security: object) -> Settings:
    """Development settings with nothing secret configured: keys are generated into ``data_dir``."""
    settings = Settings(_env_file=None, environment="development", data_dir=data_dir)
    for name, value in security.items():
        setattr(settings.security, name, value)
    return settings


@contextlib.asynccontextmanager
async def orchestrator(settings: Settings) -> AsyncIterator[str]:
    """The app served on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    container = fake_container(
        settings,
        recognizer=FakeRecognizer(utterance_ms=500),
        chat_model=FakeChatModel(("[happy] Hello!",)),
    )
    await container.queue.start()
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base
    finally:
        await container.queue.stop()
