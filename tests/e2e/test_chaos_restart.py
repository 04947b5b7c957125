"""Chaos: the orchestrator itself is restarted between turns (docs/resilience.md; reconnect and
resume: docs/protocol.md, "Reconnect").

A second app instance on the same storage (PostgreSQL, object store, secrets) and the same Redis
(task queue and session state, the compose placement) takes over; the client connects again to its
``ws_url`` with the same token, is told ``session_state.resumed`` with the turns so far, the next
turn is normal, and every turn, transcription and audio object of the conversation is stored
(counted). The instant engines answer: the dependency under test is the orchestrator process.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from avatar.bootstrap import build_container
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.e2e.harness import Client, create_session, running_server
from tests.e2e.test_chaos_postgres import assert_everything_stored, chaos_settings, instant_turn
from tests.support.servers import RestartableRedis

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    workdir = Path(tempfile.mkdtemp(prefix="avatar-chaos-redis-"))
    redis = RestartableRedis(workdir)
    try:
        yield redis
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def restart_settings(tmp: Path, database_url: str, redis_url: str) -> Settings:
    settings = chaos_settings(tmp, database_url, "http://127.0.0.1:9/v1")
    settings.engines = "instant"
    settings.queue.kind = "redis"
    settings.redis.url = settings.redis.url.__class__(redis_url)
    return settings


def on(base: str, ws_url: str) -> str:
    """``ws_url`` with the host and port of the server at ``base``."""
    return ws_url.replace(urlsplit(ws_url).netloc, urlsplit(base).netloc, 1)


async def test_the_orchestrator_restarted_between_turns_resumes_the_session(
    tmp_path: Path, module_database_url: str, own_redis: RestartableRedis
) -> None:
    settings = restart_settings(tmp_path, module_database_url, own_redis.url)
    first = await build_container(settings)
    try:
        async with running_server(create_app(settings, first)) as base:
            created = await create_session(base)
            session_id = uuid.UUID(created["session_id"])
            async with Client.connect(created["ws_url"]) as client:
                state = await client.until_type("session_state")
                assert state["resumed"] is False
                await instant_turn(client)
                await instant_turn(client)
                assert not client.of("error"), client.of("error")
        # the orchestrator stops between turns (its server is gone, its container closed)
    finally:
        await first.aclose()

    second = await build_container(settings)
    try:
        async with running_server(create_app(settings, second)) as base:
            async with Client.connect(on(base, created["ws_url"])) as client:
                state = await client.until_type("session_state")
                assert state["resumed"] is True and state["turns"] == 2, state
                await instant_turn(client)
                assert not client.of("error"), client.of("error")
            await assert_everything_stored(second, session_id, turns=3)
    finally:
        await second.aclose()
