"""Chaos in the S3 placement: the S3 server is stopped during a spoken conversation and started again
(docs/resilience.md). The orchestrator runs the instant engines (its own code end to end, no
models) with a real PostgreSQL and a real S3 server. The client is told (``STORAGE_DEFERRED``),
the conversation goes on, the spool drains once S3 is back, the next turn is normal, and every
turn, transcription and audio object is stored (counted in PostgreSQL and in the bucket)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from avatar.application.conversation.recorder import STORAGE_DEFERRED
from avatar.bootstrap import build_container
from avatar.presentation.app import create_app
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.e2e.test_chaos_postgres import (
    TURN_TIMEOUT_S,
    assert_everything_stored,
    chaos_settings,
    seen_or_until,
    spool_health,
    tone_pcm,
    until_spool_empty,
)
from tests.support.servers import RestartableS3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_s3() -> Iterator[RestartableS3]:
    workdir = Path(tempfile.mkdtemp(prefix="avatar-chaos-s3-"))
    s3 = RestartableS3(workdir)
    try:
        yield s3
    finally:
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def turn(client: Client) -> None:
    """One spoken turn (the instant recognizer ends it after the silence that follows the tone)."""
    await stream_realtime(client, tone_pcm(800))
    done = await client.until_type("turn_completed", TURN_TIMEOUT_S)
    assert done["text"] and not done["interrupted"]
    await asyncio.sleep(2.0)  # the reply's tone plays out before the next utterance


async def test_s3_stopped_and_restarted_during_a_spoken_conversation(
    tmp_path: Path, own_s3: RestartableS3, module_database_url: str
) -> None:
    settings = chaos_settings(tmp_path, module_database_url, "http://127.0.0.1:9/v1")
    settings.engines = "instant"
    settings.object_store.kind = "s3"
    settings.object_store.endpoint = own_s3.server.endpoint
    settings.object_store.access_key = SecretStr(own_s3.server.access_key)
    settings.object_store.secret_key = SecretStr(own_s3.server.secret_key)
    settings.object_store.bucket = f"chaos-{uuid.uuid4().hex[:8]}"
    container = await build_container(settings)
    try:
        async with (
            running_server(create_app(settings, container)) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            created = await create_session(base)
            session_id = uuid.UUID(created["session_id"])
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await turn(client)

                await asyncio.to_thread(own_s3.stop)
                await turn(client)
                await seen_or_until(client, lambda m: m["type"] == "notice" and m["code"] == STORAGE_DEFERRED)
                await turn(client)
                waiting = await spool_health(http)
                assert waiting["records"] > 0

                await asyncio.to_thread(own_s3.start)
                drained = await until_spool_empty(http)
                assert drained["set_aside"] == 0
                await turn(client)
                assert not client.of("error"), client.of("error")
                assert [m["code"] for m in client.of("notice")] == [STORAGE_DEFERRED]
            await assert_everything_stored(container, session_id, turns=4)
    finally:
        await container.aclose()
