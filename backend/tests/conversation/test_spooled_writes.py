"""A session's writes during a storage outage (docs/resilience.md), with the pipeline's fakes and a
real on-disk spool: the client is told once (``STORAGE_DEFERRED``), nothing is reported lost, the
turn lands in order once storage is back; a full spool reports ``SPOOL_FULL``."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Self

from avatar.application.brain import BrainConfig, BrainDeps, ConversationBrain, load_persona
from avatar.application.conversation import ConversationSession
from avatar.application.durable_writes import DurableWriter, ReplayResult, SpoolReplayer
from avatar.application.storage_records import StorageApplier
from avatar.domain.errors import DependencyError
from avatar.domain.models import new_id
from avatar.infrastructure.crypto import Envelope, Keyring, generate_key
from avatar.infrastructure.instant.storage import InMemoryDatabase, InMemoryUnitOfWork
from avatar.infrastructure.spool import FileSpool
from avatar.presentation.wire import to_wire
from avatar.settings import Settings
from backend.tests.conversation.test_pipeline import Rig, is_type, tone
from tests.fakes import FakeChatModel, FakeTextEmbedder


class OutageUnitOfWork(InMemoryUnitOfWork):
    async def __aenter__(self) -> Self:
        db = self.db
        if isinstance(db, OutageDatabase) and db.down:
            raise DependencyError("database unavailable: write failed after 4 attempts")
        return await super().__aenter__()


class OutageDatabase(InMemoryDatabase):
    """Refuses every unit of work as unreachable (after its retries) while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def __call__(self) -> OutageUnitOfWork:
        return OutageUnitOfWork(self)


class RecordingSpoolMetrics:
    def __init__(self) -> None:
        self.events: list[str] = []

    def depth(self, records: int, nbytes: int) -> None:
        pass

    def spooled(self) -> None:
        self.events.append("spooled")

    def replayed(self) -> None:
        self.events.append("replayed")

    def failed(self, reason: str) -> None:
        self.events.append(f"failed:{reason}")

    def full(self) -> None:
        self.events.append("full")


def spooled_rig(tmp_path: Path, max_records: int = 100) -> tuple[Rig, OutageDatabase, SpoolReplayer]:
    rig = Rig()
    db = OutageDatabase()
    rig.db = db  # type: ignore[assignment]
    rig.deps.uow = db
    spool = FileSpool(
        tmp_path / "spool",
        Envelope(Keyring.from_keys([generate_key()])),
        max_records=max_records,
        max_bytes=10_000_000,
    )
    applier = StorageApplier(db, rig.store)
    metrics = RecordingSpoolMetrics()
    replayer = SpoolReplayer(spool, applier, metrics)
    rig.deps.durable = DurableWriter(applier, spool, metrics)
    return rig, db, replayer


async def spoken_turn(rig: Rig, session: ConversationSession) -> None:
    await session.push_audio(tone(1000))
    await rig.until(session, is_type("turn_completed"))
    await session.writer.drain()
    while len(session.outbox):
        rig.messages.append(to_wire(await session.outbox.get()))
    rig.clock.advance(60.0)  # the reply has played out: the next utterance does not interrupt it


async def test_an_outage_is_told_once_and_the_turns_land_when_storage_returns(tmp_path: Path) -> None:
    rig, db, replayer = spooled_rig(tmp_path)
    session = await rig.session()
    db.down = True
    await spoken_turn(rig, session)
    await spoken_turn(rig, session)
    notices = [m for m in rig.messages if m["type"] == "notice"]
    assert [n["code"] for n in notices] == ["STORAGE_DEFERRED"]
    assert not [m for m in rig.messages if m["type"] == "error"]
    assert session.writer.failed == 0
    assert not db.tables.turns and not rig.store.objects  # all of it waits in the spool
    db.down = False
    assert await replayer.replay() is ReplayResult.DRAINED
    turns = sorted(db.tables.turns.values(), key=lambda t: t.turn_number)
    assert [t.turn_number for t in turns] == [1, 2]
    told = {m["turn_id"]: m["text"] for m in rig.messages if m["type"] == "turn_completed"}
    assert [t.ai_response for t in turns] == [told[str(t.turn_id)] for t in turns]
    assert all(t.ai_response and not t.interrupted for t in turns)
    assert len(db.tables.transcriptions) == 2
    assert all(url for _, _, url, _ in db.tables.transcriptions.values())  # the audio went first
    assert len(db.tables.synthesized) == 2
    assert sum(k.startswith("raw_inputs/") for k in rig.store.objects) == 2
    assert sum(k.startswith("synthesized/fast/") for k in rig.store.objects) == 2
    # storage is back: the next turn goes straight in, and nobody is told again
    await spoken_turn(rig, session)
    assert len(db.tables.turns) == 3 and len(db.tables.synthesized) == 3
    assert [m["code"] for m in rig.messages if m["type"] == "notice"] == ["STORAGE_DEFERRED"]
    await session.aclose()


async def test_a_full_spool_is_reported_for_each_write_it_cannot_keep(tmp_path: Path) -> None:
    rig, db, _ = spooled_rig(tmp_path, max_records=1)
    session = await rig.session()
    db.down = True
    await spoken_turn(rig, session)
    errors = [m for m in rig.messages if m["type"] == "error"]
    assert errors and all(e["code"] == "SPOOL_FULL" for e in errors)
    assert any("turn 1 transcription row" in e["message"] for e in errors)
    assert all("spool is full" in e["message"] for e in errors)
    assert session.writer.failed == len(errors)
    assert rig.deps.durable is not None
    await session.aclose()


async def test_the_brains_memories_and_summary_wait_in_the_spool_during_an_outage(tmp_path: Path) -> None:
    """The brain's own writes (docs/resilience.md): with the database down its long-term memories
    and its rolling summary go to the spool, and land once it is replayed."""
    db = OutageDatabase()
    spool = FileSpool(
        tmp_path / "spool", Envelope(Keyring.from_keys([generate_key()])), max_records=100, max_bytes=10**7
    )
    applier = StorageApplier(db, None)
    metrics = RecordingSpoolMetrics()
    config = BrainConfig(context_tokens=2048, history_keep_tokens=40, summarize_at_tokens=80)
    deps = BrainDeps(
        FakeChatModel(replies=("[happy] Hiking in the hills is lovely, tell me more about it!",)),
        FakeTextEmbedder(),
        db,
        load_persona(Settings().llm.persona_file),
        config,
        durable=DurableWriter(applier, spool, metrics),
    )
    brain = ConversationBrain(uuid.uuid4(), deps)
    db.down = True
    try:
        for n in range(1, 5):
            async for _ in brain.reply(
                f"I went hiking in the hills on day {n} with my sister", turn_id=new_id()
            ):
                pass
            await brain.wait_idle()
        assert brain.summaries_written >= 1  # kept: it waits in the spool, not lost
        assert spool.pending and "spooled" in metrics.events
        assert db.tables.memories == [] and db.tables.summaries == {}
        db.down = False
        assert await SpoolReplayer(spool, applier, metrics).replay() is ReplayResult.DRAINED
        roles = sorted(role for _, _, role, _, _ in db.tables.memories)
        assert roles == ["assistant"] * 4 + ["user"] * 4  # every turn once, none twice
        assert db.tables.summaries[brain.session_id][0]
    finally:
        spool.close()
