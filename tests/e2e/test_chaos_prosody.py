"""Chaos: a prosody worker process is killed (SIGKILL) in the middle of a conversation
(docs/resilience.md, "Supervised processes").

The embedded prosody pool is supervised: the pool is replaced (health reports the restart), later
turns are analysed again (their prosody scores are stored), the client gets no ``error``, and every turn,
transcription and audio object of the conversation is stored afterwards (counted in PostgreSQL and
the object store). The instant engines answer (the dependency under test is the prosody pool, which
is the real one); storage is a real PostgreSQL and a filesystem object store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from avatar.bootstrap import Container, build_container
from avatar.infrastructure.prosody import EmbeddedProsodyAnalyzer, build_prosody_analyzer
from avatar.presentation.app import create_app
from tests.e2e.harness import Client, create_session, running_server
from tests.e2e.test_chaos_postgres import assert_everything_stored, chaos_settings, instant_turn

pytestmark = pytest.mark.slow

#: Generous bounds for a loaded test machine; nothing here measures speed.
WAIT_S = 120.0


async def prosody_process(http: httpx.AsyncClient) -> dict[str, Any]:
    body = (await http.get("/api/v1/health")).json()
    process: dict[str, Any] = body["services"]["prosody"]["process"]
    return process


async def until_analyses(container: Container, session_id: uuid.UUID, count: int) -> None:
    """Until ``count`` prosody scores of the session are stored (the analyses of its turns)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            async with container.uow() as tx:
                scores = await tx.prosody.list_for_session(session_id)
            if len(scores) >= count:
                assert len(scores) == count, scores
                return
            await asyncio.sleep(0.2)


async def test_a_prosody_worker_killed_during_a_conversation_is_replaced(
    tmp_path: Path, module_database_url: str
) -> None:
    settings = chaos_settings(tmp_path, module_database_url, "http://127.0.0.1:9/v1")
    settings.engines = "instant"
    settings.prosody.enabled = True
    settings.prosody.workers = 1
    container = await build_container(settings)
    try:
        async with contextlib.AsyncExitStack() as stack:
            # the real supervised pool in place of the instant analyzer
            analyzer = await build_prosody_analyzer(settings, stack)
            assert isinstance(analyzer, EmbeddedProsodyAnalyzer) and analyzer.supervisor is not None
            container.prosody = analyzer
            async with (
                running_server(create_app(settings, container)) as base,
                httpx.AsyncClient(base_url=base) as http,
            ):
                created = await create_session(base)
                session_id = uuid.UUID(created["session_id"])
                async with Client.connect(created["ws_url"]) as client:
                    await client.until_type("session_state")
                    await instant_turn(client)
                    await until_analyses(container, session_id, 1)
                    [pid] = analyzer.engine.worker_pids()

                    os.kill(pid, signal.SIGKILL)
                    async with asyncio.timeout(WAIT_S):  # the supervisor replaces the pool
                        while True:
                            process = await prosody_process(http)
                            if process["restarts"] >= 1 and process["state"] == "running":
                                break
                            await asyncio.sleep(0.2)
                    assert process["last_error"]
                    assert pid not in analyzer.engine.worker_pids()

                    # later turns are ordinary and analysed again
                    await instant_turn(client)
                    await until_analyses(container, session_id, 2)
                    await instant_turn(client)
                    await until_analyses(container, session_id, 3)
                    assert not client.of("error"), client.of("error")
                    assert (await prosody_process(http))["restarts"] == 1
                await assert_everything_stored(container, session_id, turns=3)
    finally:
        await container.aclose()
