"""The storage spool against a real PostgreSQL that the tests stop and start again
(docs/resilience.md): writes made while it is down wait on disk, sealed, and reach the database in
order once it is back, also through a new owner of the spool (an orchestrator restarted during the
outage); an unreadable record is set aside and the others still land; a full spool refuses."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from avatar.application.durable_writes import Outcome, ReplayResult, SpooledStorage
from avatar.application.ports.spool import SpoolFullError
from avatar.application.ports.storage import ObjectStore
from avatar.application.storage_records import (
    SpoolRecord,
    StoredObject,
    SynthesizedInsert,
    TranscriptionInsert,
    TurnInsert,
    TurnUpdate,
)
from avatar.bootstrap import build_storage_spool
from avatar.domain.models import (
    ConversationTurn,
    Emotion,
    Session,
    SynthesizedAudio,
    Transcription,
    TTSMode,
    new_id,
)
from avatar.infrastructure.crypto import Keyring, generate_key
from avatar.infrastructure.database import RetryPolicy, SqlUnitOfWorkFactory, create_engine, migrate
from avatar.infrastructure.database import tables as t
from avatar.infrastructure.object_store import build_object_store
from avatar.settings import Settings
from tests.support.auth import seed_owner
from tests.support.servers import RestartablePostgres

#: Words only the sealed records hold: they must not be readable on disk.
SECRET_WORDS = "my grandmother's secret recipe"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[RestartablePostgres]:
    # Under /tmp (not pytest's 0700 tmp dirs): the server runs as an unprivileged user.
    workdir = Path(tempfile.mkdtemp(prefix="avatar-spool-pg-"))
    pg = RestartablePostgres(workdir)
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def uow(own_postgres: RestartablePostgres) -> AsyncIterator[SqlUnitOfWorkFactory]:
    engine = create_engine(own_postgres.server.url(), pool_size=2)
    await migrate.upgrade(engine)
    # One quick retry: the outage outlasts it, and the test does not wait for more.
    factory = SqlUnitOfWorkFactory(engine, policy=RetryPolicy(retries=1, base_delay_s=0.05))
    yield factory
    await factory.aclose()


@pytest.fixture(scope="module")
def keyring() -> Keyring:
    return Keyring.from_keys([generate_key()])


@dataclass
class Rig:
    settings: Settings
    keyring: Keyring
    uow: SqlUnitOfWorkFactory
    store: ObjectStore
    spooled: SpooledStorage

    def reopen(self) -> SpooledStorage:
        """A new owner of the same spool directory (the process restarted)."""
        spooled = build_storage_spool(self.settings, self.keyring, self.uow, self.store)
        assert spooled is not None
        return spooled


@pytest_asyncio.fixture
async def rig(tmp_path: Path, keyring: Keyring, uow: SqlUnitOfWorkFactory) -> AsyncIterator[Rig]:
    settings = Settings(environment="test")
    settings.data_dir = tmp_path
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp_path / "objects"
    settings.spool.replay_min_delay_s = 0.1
    settings.spool.replay_max_delay_s = 0.5
    async with contextlib.AsyncExitStack() as stack:
        store = await build_object_store(settings, stack, keyring)
        spooled = build_storage_spool(settings, keyring, uow, store)
        assert spooled is not None
        yield Rig(settings, keyring, uow, store, spooled)
        await spooled.aclose()


@contextlib.contextmanager
def outage(pg: RestartablePostgres) -> Iterator[None]:
    pg.stop()
    try:
        yield
    finally:
        pg.start()


async def new_session(uow: SqlUnitOfWorkFactory) -> uuid.UUID:
    owner = await seed_owner(uow)
    session = Session.start(datetime.now(UTC), owner_id=owner)
    async with uow() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    return session.session_id


def conversation(session_id: uuid.UUID, turns: int) -> list[SpoolRecord]:
    """Every record a spoken conversation of ``turns`` turns writes, in the recorder's order."""
    records: list[SpoolRecord] = []
    for n in range(1, turns + 1):
        turn = ConversationTurn(
            turn_id=new_id(), session_id=session_id, turn_number=n, user_input=f"{SECRET_WORDS} {n}"
        )
        heard = Transcription(text=turn.user_input, is_final=True, confidence=0.9, language="en")
        records.append(TurnInsert(turn=turn))
        records.append(
            TranscriptionInsert(
                turn_id=turn.turn_id,
                transcription=heard,
                partials=["my grandmother"],
                audio=StoredObject(key=f"raw_inputs/{session_id}/{turn.turn_id}.wav", data=b"RIFF" * 50),
            )
        )
        replied = replace(turn, stage_latency_ms={"llm_ttft": 100.0})
        replied.complete(f"reply {n}", Emotion.HAPPY)
        records.append(TurnUpdate(turn=replied))
        row = SynthesizedAudio(
            audio_id=new_id(),
            turn_id=turn.turn_id,
            mode=TTSMode.FAST,
            audio_url="",
            duration_sec=1.0,
            synthesis_time_ms=10.0,
        )
        audio = StoredObject(key=f"synthesized/fast/{turn.turn_id}.wav", data=b"WAVE" * 50)
        records.append(SynthesizedInsert(row=row, audio=audio))
    return records


async def stored(uow: SqlUnitOfWorkFactory, session_id: uuid.UUID) -> tuple[int, int, int, list[str]]:
    """(turns, transcriptions, reply audios, the turns' replies) of the session in the database."""
    async with uow() as tx:
        turns = await tx.turns.list_for_session(session_id)
        audios = [len(await tx.synthesized.list_for_turn(turn.turn_id)) for turn in turns]
        rows = await tx._tx.read(  # a count the repositories do not offer
            select(func.count())
            .select_from(t.transcriptions)
            .where(t.transcriptions.c.turn_id.in_([turn.turn_id for turn in turns]))
        )
        transcriptions = int(rows.scalar_one())
    return len(turns), transcriptions, sum(audios), [turn.ai_response for turn in turns]


async def object_count(store: ObjectStore, records: list[SpoolRecord]) -> int:
    keys = [
        r.audio.key for r in records if isinstance(r, TranscriptionInsert | SynthesizedInsert) and r.audio
    ]
    return sum([await store.exists(key) for key in keys])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_writes_during_an_outage_wait_sealed_and_land_in_order(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    session_id = await new_session(rig.uow)
    records = conversation(session_id, 2)
    replayed_before = metric("storage_spool_replayed_total")
    with outage(own_postgres):
        outcomes = [await rig.spooled.writer.write(record) for record in records]
        assert outcomes == [Outcome.SPOOLED] * len(records)
        depth = rig.spooled.spool.depth()
        assert depth.records == len(records) and depth.bytes > 0
        assert metric("storage_spool_records") == len(records)
        health = await rig.spooled.health()
        assert health.ok and health.extra["records"] == len(records)
        files = sorted(rig.settings.data_dir.joinpath("spool").glob("*.rec"))
        assert len(files) == len(records)
        assert not any(b"grandmother" in f.read_bytes() for f in files)  # sealed on disk
        assert await rig.spooled.replayer.replay() is ReplayResult.BLOCKED  # still down: kept
        assert rig.spooled.spool.depth().records == len(records)
    # back: the replayer (as the app runs it) applies everything in order
    rig.spooled.start()
    await wait_drained(rig.spooled)
    assert await stored(rig.uow, session_id) == (2, 2, 2, ["reply 1", "reply 2"])
    assert await object_count(rig.store, records) == 4
    assert metric("storage_spool_replayed_total") - replayed_before == len(records)
    # a record applied twice is harmless (a replay after a crash before the record was removed)
    for record in records:
        await rig.spooled.writer.write(record)
    assert await stored(rig.uow, session_id) == (2, 2, 2, ["reply 1", "reply 2"])


async def wait_drained(spooled: SpooledStorage, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if not spooled.spool.pending:
                return
            await asyncio.sleep(0.05)


async def test_a_new_owner_replays_what_a_stopped_one_left(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    session_id = await new_session(rig.uow)
    records = conversation(session_id, 1)
    with outage(own_postgres):
        for record in records:
            assert await rig.spooled.writer.write(record) is Outcome.SPOOLED
        await rig.spooled.aclose()  # the process ends during the outage; nothing was replayed
    assert await stored(rig.uow, session_id) == (0, 0, 0, [])
    after_restart = rig.reopen()
    assert after_restart.spool.depth().records == len(records)
    after_restart.start()  # what ``running`` does at start-up
    try:
        await wait_drained(after_restart)
    finally:
        await after_restart.aclose()
    assert await stored(rig.uow, session_id) == (1, 1, 1, ["reply 1"])
    assert await object_count(rig.store, records) == 2


async def test_an_altered_record_is_set_aside_and_the_others_still_land(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    session_id = await new_session(rig.uow)
    records = conversation(session_id, 2)
    corrupt_before = metric("storage_spool_failed_total", reason="corrupt")
    with outage(own_postgres):
        for record in records:
            await rig.spooled.writer.write(record)
    files = sorted(rig.settings.data_dir.joinpath("spool").glob("*.rec"))
    # the second turn's reply audio: one byte flipped in its ciphertext
    tampered = bytearray(files[7].read_bytes())
    tampered[-5] ^= 0x01
    files[7].write_bytes(bytes(tampered))
    # the second turn's reply update: cut short, as by a crash in the middle of a write
    files[6].write_bytes(files[6].read_bytes()[:40])
    assert await rig.spooled.replayer.replay() is ReplayResult.DRAINED
    turns, transcriptions, audios, replies = await stored(rig.uow, session_id)
    assert (turns, transcriptions, audios) == (2, 2, 1)
    assert replies == ["reply 1", ""]  # turn 2's reply update was the cut record
    assert metric("storage_spool_failed_total", reason="corrupt") - corrupt_before == 2
    depth = rig.spooled.spool.depth()
    assert depth.records == 0 and depth.set_aside == 2
    aside = sorted(p.name for p in rig.settings.data_dir.joinpath("spool", "set_aside").iterdir())
    assert all(".corrupt." in name for name in aside)


async def test_a_record_moved_to_another_place_in_the_order_does_not_open(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    session_id = await new_session(rig.uow)
    records = conversation(session_id, 1)
    with outage(own_postgres):
        for record in records:
            await rig.spooled.writer.write(record)
    files = sorted(rig.settings.data_dir.joinpath("spool").glob("*.rec"))
    # swap the turn row and its reply: each is sealed to its own place, so neither opens
    a, b = files[0].read_bytes(), files[2].read_bytes()
    files[0].write_bytes(b)
    files[2].write_bytes(a)
    rejected_before = metric("storage_spool_failed_total", reason="rejected")
    assert await rig.spooled.replayer.replay() is ReplayResult.DRAINED
    aside = sorted(p.name for p in rig.settings.data_dir.joinpath("spool", "set_aside").iterdir())
    assert [name.split(".")[1] for name in aside] == ["corrupt", "rejected", "corrupt", "rejected"]
    # without its turn row the rest is refused by the database (set aside, kept for the operator)
    assert metric("storage_spool_failed_total", reason="rejected") - rejected_before == 2
    assert await stored(rig.uow, session_id) == (0, 0, 0, [])


async def test_a_full_spool_refuses_the_write_and_counts_it(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    rig.settings.spool.max_records = 3
    await rig.spooled.aclose()  # one owner per directory: the small spool replaces it
    small = rig.reopen()
    try:
        session_id = await new_session(rig.uow)
        records = conversation(session_id, 1)
        full_before = metric("storage_spool_full_total")
        with outage(own_postgres):
            for record in records[:3]:
                assert await small.writer.write(record) is Outcome.SPOOLED
            with pytest.raises(SpoolFullError) as refused:
                await small.writer.write(records[3])
            health = await small.health()
        assert refused.value.code == "SPOOL_FULL"
        assert metric("storage_spool_full_total") - full_before == 1
        assert not health.ok and health.detail.startswith("full")
        assert await small.replayer.replay() is ReplayResult.DRAINED
        assert await stored(rig.uow, session_id) == (1, 1, 0, ["reply 1"])
        # room again: the write that was refused is accepted now (and stored at once)
        assert await small.writer.write(records[3]) is Outcome.STORED
        assert await stored(rig.uow, session_id) == (1, 1, 1, ["reply 1"])
    finally:
        await small.aclose()


async def test_writes_go_straight_to_the_database_while_it_is_up(rig: Rig) -> None:
    session_id = await new_session(rig.uow)
    for record in conversation(session_id, 1):
        assert await rig.spooled.writer.write(record) is Outcome.STORED
    assert not rig.spooled.spool.pending
    assert await stored(rig.uow, session_id) == (1, 1, 1, ["reply 1"])
