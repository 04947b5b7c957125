"""Chaos: the Redis of the Redis placement (task queue, session state) is stopped in the middle of
a conversation and started again (docs/resilience.md).

The conversation goes on during the outage; the prosody task of the turn spoken while Redis is down
cannot be queued and the client is told so (``error`` ``PERSISTENCE_FAILED`` naming it,
docs/protocol.md) rather than losing it silently; after Redis returns (empty, as without a
volume), tasks flow again (the next turns are analysed), and every
turn, transcription and audio object of the conversation is stored (counted). The instant engines
answer and analyse: the dependency under test is Redis; storage is a real PostgreSQL and a
filesystem object store.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from tests.e2e.harness import Client, create_session, running_server
from tests.e2e.test_chaos_postgres import assert_everything_stored, instant_turn, seen_or_until
from tests.e2e.test_chaos_restart import restart_settings
from tests.support.servers import RestartableRedis

pytestmark = pytest.mark.slow

#: Generous bounds for a loaded test machine; nothing here measures speed.
WAIT_S = 120.0


@pytest.fixture
def own_redis() -> Iterator[RestartableRedis]:
    workdir = Path(tempfile.mkdtemp(prefix="avatar-chaos-redis-"))
    redis = RestartableRedis(workdir)
    try:
        yield redis
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def analysed(container: Container, session_id: uuid.UUID) -> int:
    async with container.uow() as tx:
        return len(await tx.prosody.list_for_session(session_id))


async def until_analysed(container: Container, session_id: uuid.UUID, count: int) -> None:
    async with asyncio.timeout(WAIT_S):
        while True:
            if await analysed(container, session_id) >= count:
                return
            await asyncio.sleep(0.2)


async def test_redis_stopped_and_restarted_during_a_conversation(
    tmp_path: Path, module_database_url: str, own_redis: RestartableRedis
) -> None:
    settings = restart_settings(tmp_path, module_database_url, own_redis.url)
    settings.prosody.enabled = True
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            created = await create_session(base)
            session_id = uuid.UUID(created["session_id"])
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await instant_turn(client)
                await until_analysed(container, session_id, 1)

                await asyncio.to_thread(own_redis.stop)
                await instant_turn(client)  # the conversation goes on without Redis
                reported = await seen_or_until(
                    client, lambda m: m["type"] == "error" and "turn 2 prosody request" in m["message"]
                )
                assert reported["code"] == "PERSISTENCE_FAILED"

                # Redis returns (empty: no persistence): tasks flow again, the next turns are normal
                await asyncio.to_thread(own_redis.start)
                await instant_turn(client)
                await instant_turn(client)
                await until_analysed(container, session_id, 3)  # turns 1, 3 and 4
                errors = client.of("error")
                assert {m["code"] for m in errors} == {"PERSISTENCE_FAILED"}, errors
                failed = {m["message"] for m in errors if "prosody request" in m["message"]}
                assert failed == {
                    "could not save turn 2 prosody request (DependencyError); see the server log"
                }
                assert await analysed(container, session_id) == 3
            await assert_everything_stored(container, session_id, turns=4)
    finally:
        await container.aclose()
