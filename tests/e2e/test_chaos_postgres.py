"""Chaos on the real stack (Whisper, SmolLM2 on llama.cpp, Piper, a filesystem object store):
PostgreSQL is stopped in the middle of a spoken conversation and started again (docs/resilience.md).

The client is told once (``notice`` ``STORAGE_DEFERRED``), the conversation goes on, nothing is
reported lost, the spool is replayed once the database is back, the next spoken turn is normal,
and afterwards every turn, transcription and audio object of the conversation is stored (counted
in PostgreSQL and in the object store). A second orchestrator started on the same data directory
while the database is still down replays what the first one left (a restart during the outage).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from avatar.application.conversation.recorder import STORAGE_DEFERRED
from avatar.bootstrap import Container, build_container
from avatar.domain.models import TTSMode
from avatar.domain.storage_keys import RAW_INPUTS, SYNTHESIZED
from avatar.presentation.app import create_app
from avatar.settings import Placement, Settings
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.support.audio import SpeechClip
from tests.support.servers import RestartablePostgres

pytestmark = pytest.mark.slow

#: Generous bounds for a loaded test machine; nothing here measures speed.
TURN_TIMEOUT_S = 180.0
RECOVERY_TIMEOUT_S = 60.0


def chaos_settings(tmp: Path, database_url: str, llm_url: str) -> Settings:
    settings = Settings(environment="test")
    settings.data_dir = tmp
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(database_url)
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.placement = Placement.REMOTE
    settings.llm.base_url = llm_url
    settings.llm.max_tokens = 30
    settings.llm.embedded_first_token_timeout_s = 60.0  # a loaded test machine must not look like an outage
    settings.asr.language = "en"
    return settings


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[RestartablePostgres]:
    # Under /tmp (not pytest's 0700 tmp dirs): the server runs as an unprivileged user.
    workdir = Path(tempfile.mkdtemp(prefix="avatar-chaos-pg-"))
    pg = RestartablePostgres(workdir)
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def settings(
    tmp_path_factory: pytest.TempPathFactory, own_postgres: RestartablePostgres, llama_server: str
) -> Settings:
    return chaos_settings(tmp_path_factory.mktemp("chaos-pg"), own_postgres.server.url(), llama_server)


@pytest_asyncio.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[tuple[str, Container]]:
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


async def speak(client: Client, clip: SpeechClip) -> dict[str, Any]:
    """Stream ``clip`` at real-time pace; return the ``turn_completed`` of the turn it starts once
    its reply has been heard to the end (speaking sooner would interrupt it: barge-in)."""
    await stream_realtime(client, clip.pcm)
    started = await client.until_type("turn_started", TURN_TIMEOUT_S)
    turn = started["turn_id"]
    done: dict[str, Any] = await client.until(
        lambda m: m["type"] == "turn_completed" and m["turn_id"] == turn, TURN_TIMEOUT_S
    )
    audio = [m for m in client.of("audio_chunk") if m.get("turn_id") == turn]
    await asyncio.sleep(sum(float(m["duration_ms"]) for m in audio) / 1000.0 + 0.5)
    assert not done["interrupted"]
    return done


async def seen_or_until(client: Client, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first message received so far that satisfies ``done``, else the next one that does."""
    for message in client.messages:
        if done(message):
            return message
    found: dict[str, Any] = await client.until(done, TURN_TIMEOUT_S)
    return found


async def spool_health(http: httpx.AsyncClient) -> dict[str, Any]:
    body = (await http.get("/api/v1/health")).json()
    spool: dict[str, Any] = body["services"]["spool"]
    return spool


async def until_spool_empty(http: httpx.AsyncClient) -> dict[str, Any]:
    async with asyncio.timeout(RECOVERY_TIMEOUT_S):
        while True:
            spool = await spool_health(http)
            if spool["records"] == 0:
                return spool
            await asyncio.sleep(0.2)


async def stored(container: Container, session_id: uuid.UUID) -> dict[str, int]:
    """Turns, transcriptions and reply audio rows of the session, and its objects in the store."""
    async with container.uow() as tx:
        turns = await tx.turns.list_for_session(session_id)
        replies = [await tx.synthesized.list_for_turn(turn.turn_id) for turn in turns]
    turn_ids = {str(turn.turn_id) for turn in turns}
    inputs = [k for k in await container.object_store.list_keys(RAW_INPUTS) if str(session_id) in k]
    fast = await container.object_store.list_keys(f"{SYNTHESIZED}{TTSMode.FAST.value}/")
    return {
        "turns": len(turns),
        "answered": sum(1 for turn in turns if turn.ai_response),
        "reply_rows": sum(len(rows) for rows in replies),
        "input_objects": len(inputs),
        "reply_objects": sum(1 for k in fast if k.rsplit("/", 1)[-1].split("_")[0] in turn_ids),
    }


async def transcriptions_of(container: Container, session_id: uuid.UUID) -> int:
    """Transcription rows of the session's turns (read back through the turns' final texts)."""
    from sqlalchemy import func, select

    from avatar.infrastructure.database import tables as t

    async with container.uow() as tx:
        stmt = (
            select(func.count())
            .select_from(t.transcriptions.join(t.conversation_turns))
            .where(t.conversation_turns.c.session_id == session_id)
        )
        count = (await tx._tx.read(stmt)).scalar_one()  # type: ignore[attr-defined]
    return int(count)


async def test_postgres_stopped_and_restarted_during_a_spoken_conversation(
    stack: tuple[str, Container], own_postgres: RestartablePostgres, librivox: list[SpeechClip]
) -> None:
    base, container = stack
    created = await create_session(base)
    session_id = uuid.UUID(created["session_id"])
    async with httpx.AsyncClient(base_url=base) as http, Client.connect(created["ws_url"]) as client:
        await client.until_type("session_state")
        first = await speak(client, librivox[0])
        assert first["text"] and not client.of("notice")

        # the database goes away; the person keeps talking
        await asyncio.to_thread(own_postgres.stop)
        second = await speak(client, librivox[1])
        assert second["text"], client.messages[-5:]
        notice = await seen_or_until(
            client, lambda m: m["type"] == "notice" and m["code"] == STORAGE_DEFERRED
        )
        assert "saved when it returns" in notice["message"]
        third = await speak(client, librivox[2])
        assert third["text"], client.messages[-5:]
        waiting = await spool_health(http)
        assert waiting["ok"] and waiting["records"] > 0

        # the database returns: the spool drains and the next turn is an ordinary one
        await asyncio.to_thread(own_postgres.start)
        drained = await until_spool_empty(http)
        assert drained["ok"] and drained["set_aside"] == 0
        last = await speak(client, librivox[3])
        assert last["text"] and not last["interrupted"]

        errors = [m for m in client.messages if m["type"] == "error"]
        assert not errors, errors
        assert [m["code"] for m in client.of("notice")] == [STORAGE_DEFERRED]
        metrics = (await http.get("/api/v1/metrics")).text
        assert "storage_spool_replayed_total" in metrics

    await assert_everything_stored(container, session_id, turns=4)


async def assert_everything_stored(container: Container, session_id: uuid.UUID, turns: int) -> None:
    """Every turn (answered), transcription, reply row, input and reply object of the session; the
    last turn's writes leave in the background, so this waits for them (a generous bound)."""
    want = {
        "turns": turns,
        "answered": turns,
        "transcriptions": turns,
        "reply_rows": turns,
        "input_objects": turns,
        "reply_objects": turns,
    }
    counts: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECOVERY_TIMEOUT_S
    while loop.time() < deadline:
        counts = await stored(container, session_id)
        counts["transcriptions"] = await transcriptions_of(container, session_id)
        if counts == want:
            break
        await asyncio.sleep(0.2)
    async with container.uow() as tx:
        turns_now = await tx.turns.list_for_session(session_id)
    assert counts == want, [(t.turn_number, t.user_input, t.ai_response) for t in turns_now]


def tone_pcm(ms: int, sr: int = 16000) -> bytes:
    t = np.arange(sr * ms // 1000) / sr
    return (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


async def test_an_orchestrator_restarted_during_the_outage_loses_nothing(
    tmp_path: Path, own_postgres: RestartablePostgres
) -> None:
    """The instant engines (the orchestrator's own code, real PostgreSQL and object store, no
    models): the first process ends while the database is down, the next one replays at start."""
    settings = chaos_settings(tmp_path, own_postgres.server.url(), "http://127.0.0.1:9/v1")
    settings.engines = "instant"
    first = await build_container(settings)
    try:
        async with running_server(create_app(settings, first)) as base:
            created = await create_session(base)
            session_id = uuid.UUID(created["session_id"])
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await stream_realtime(client, tone_pcm(800))
                await client.until_type("turn_completed", TURN_TIMEOUT_S)
                await asyncio.to_thread(own_postgres.stop)
                await stream_realtime(client, tone_pcm(800))
                await client.until_type("turn_completed", TURN_TIMEOUT_S)
                await seen_or_until(client, lambda m: m["type"] == "notice" and m["code"] == STORAGE_DEFERRED)
            # the server stops with the database still down; its sessions' writes are flushed
    finally:
        await first.aclose()
    spool_dir = settings.data_dir / "spool"
    assert list(spool_dir.glob("*.rec")), "the outage's writes should wait on disk"

    await asyncio.to_thread(own_postgres.start)
    second = await build_container(settings)
    try:
        async with (
            running_server(create_app(settings, second)) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            drained = await until_spool_empty(http)
            assert drained["set_aside"] == 0
            await assert_everything_stored(second, session_id, turns=2)
    finally:
        await second.aclose()


async def database_health(http: httpx.AsyncClient) -> dict[str, Any]:
    body = (await http.get("/api/v1/health")).json()
    database: dict[str, Any] = body["services"]["database"]
    return database


async def test_the_embedded_postgres_killed_during_a_conversation_loses_nothing(tmp_path: Path) -> None:
    """The embedded placement: the supervised postmaster is killed (SIGKILL) in the middle of a
    conversation and restarted by its supervisor. Whether a write outlasted its retries and waited
    in the spool depends on how fast the restart is; either way nothing is reported lost and
    everything is stored afterwards. Instant engines; the database and the spool are the real ones,
    put into the container by the test (``build_container`` serves instant engines from memory)."""
    from contextlib import AsyncExitStack

    from avatar.bootstrap import (
        INSTANT_ENDPOINT_SILENCE_MS,
        INSTANT_MAX_UTTERANCE_MS,
        INSTANT_REPLY,
        build_instant_container,
        build_storage_spool,
    )
    from avatar.infrastructure.database import build_unit_of_work_factory
    from avatar.infrastructure.instant import InstantChatModel, InstantRecognizer
    from avatar.infrastructure.object_store import build_object_store
    from avatar.infrastructure.secrets import load_keyring

    settings = chaos_settings(tmp_path, "", "http://127.0.0.1:9/v1")
    settings.database.placement = Placement.EMBEDDED
    settings.database.data_dir = tmp_path / "pgdata"
    async with AsyncExitStack() as stack:
        container = build_instant_container(settings)
        # the engines as the served instant set has them: an utterance ends on silence
        container.recognizer = InstantRecognizer(
            utterance_ms=INSTANT_MAX_UTTERANCE_MS,
            silence_rms=200.0,
            endpoint_silence_ms=INSTANT_ENDPOINT_SILENCE_MS,
        )
        container.chat_model = InstantChatModel((INSTANT_REPLY,))
        keyring = load_keyring(settings)
        container.uow = await build_unit_of_work_factory(settings, stack, keyring)
        container.object_store = await build_object_store(settings, stack, keyring)
        container.storage_spool = build_storage_spool(
            settings, keyring, container.uow, container.object_store
        )
        async with (
            running_server(create_app(settings, container)) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            created = await create_session(base)
            session_id = uuid.UUID(created["session_id"])
            async with Client.connect(created["ws_url"]) as client:
                await client.until_type("session_state")
                await instant_turn(client)
                before = (await database_health(http))["process"]
                os.kill(int(before["pid"]), signal.SIGKILL)  # the next turn's writes meet it down
                await instant_turn(client)
                await instant_turn(client)
                async with asyncio.timeout(90):  # the supervisor starts it again
                    while True:
                        now = await database_health(http)
                        if now["ok"] and now["process"]["restarts"] >= 1:
                            break
                        await asyncio.sleep(0.2)
                await until_spool_empty(http)
                await instant_turn(client)
                assert not client.of("error"), client.of("error")
            await assert_everything_stored(container, session_id, turns=4)


async def instant_turn(client: Client) -> None:
    """One spoken turn of the instant engines, heard to the end before the next one."""
    await stream_realtime(client, tone_pcm(800))
    done = await client.until_type("turn_completed", TURN_TIMEOUT_S)
    assert done["text"] and not done["interrupted"]
    await asyncio.sleep(2.0)
