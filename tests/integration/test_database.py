"""The PostgreSQL adapter against a real PostgreSQL 16 + pgvector server (tests/support/servers.py)."""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from sqlalchemy import event, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from avatar.application.conversation import BackgroundWriter
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.domain.errors import DependencyError, DomainError, InvalidInputError
from avatar.domain.feedback import Rating, TurnFeedback
from avatar.domain.models import (
    ConversationTurn,
    Emotion,
    ProsodyScore,
    Session,
    SessionStatus,
    SynthesizedAudio,
    Transcription,
    TTSMode,
    User,
    VoiceProfile,
    new_id,
)
from avatar.infrastructure.database import (
    RetryPolicy,
    SqlUnitOfWorkFactory,
    build_unit_of_work_factory,
    create_engine,
    migrate,
    repositories,
)
from avatar.infrastructure.database import tables as t
from avatar.infrastructure.instant.storage import InMemoryDatabase
from avatar.settings import DatabaseSettings, Placement, Settings
from tests.support.auth import seed_owner
from tests.support.net import free_port
from tests.support.servers import PostgresServer, fresh_database

NOW = datetime(2025, 11, 22, 12, 0, tzinfo=UTC)
#: The user the module's sessions and profiles belong to (created by ``uow_factory``).
OWNER = uuid.uuid4()


@pytest_asyncio.fixture(scope="module")
async def uow_factory(module_database_url: str) -> AsyncIterator[SqlUnitOfWorkFactory]:
    engine = create_engine(module_database_url, pool_size=4)
    await migrate.upgrade(engine)
    factory = SqlUnitOfWorkFactory(engine, policy=RetryPolicy(retries=3, base_delay_s=0.05))
    async with factory() as uow:
        await uow.accounts.add_user(User(user_id=OWNER, name="module-owner"))
        await uow.commit()
    yield factory
    await factory.aclose()


def _unit(seed: int, dim: int) -> tuple[float, ...]:
    vec = np.random.default_rng(seed).standard_normal(dim)
    return tuple(float(v) for v in vec / np.linalg.norm(vec))


def _profile(name: str, embedding: tuple[float, ...]) -> VoiceProfile:
    return VoiceProfile(
        profile_id=new_id(),
        name=name,
        audio_url=f"s3://avatar-audio/voice_profiles/{name}",
        embedding=embedding,
        duration_sec=7.5,
        sample_rate=16000,
        transcript="hello there",
        metadata={"format": "wav"},
        user_id=OWNER,
    )


async def _session_with_turn(
    factory: SqlUnitOfWorkFactory,
) -> tuple[Session, ConversationTurn, Transcription]:
    session = Session.start(NOW, {"client": "test"}, owner_id=await seed_owner(factory))
    turn = ConversationTurn(turn_id=new_id(), session_id=session.session_id, turn_number=1, user_input="hi")
    transcription = Transcription(text="hi", is_final=True, confidence=0.9, language="en", latency_ms=320.0)
    async with factory() as uow:
        await uow.sessions.add(session)
        await uow.turns.add(turn)
        await uow.transcriptions.add(turn.turn_id, transcription, "s3://avatar-audio/raw.wav", ["h", "hi"])
        await uow.commit()
    return session, turn, transcription


# ----------------------------------------------------------------------------------------- migrations


async def test_migrations_create_schema_indexes_and_go_back_down(postgres_server: PostgresServer) -> None:
    async with fresh_database(postgres_server) as url:
        engine = create_async_engine(url)
        try:
            assert await migrate.current_revision(engine) is None
            await migrate.upgrade(engine)
            assert await migrate.current_revision(engine) == "0004"

            async with engine.connect() as conn:
                tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
                indexes = {
                    row.indexname: row.indexdef
                    for row in await conn.execute(
                        text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
                    )
                }
                ext = (
                    await conn.execute(text("SELECT extname FROM pg_extension WHERE extname = 'vector'"))
                ).scalar()
            assert set(t.metadata.tables) <= tables
            assert ext == "vector"
            for name in (
                "ix_sessions_start_time",
                "ix_transcriptions_turn_id",
                "ix_prosody_scores_transcription_id",
                "ix_voice_profiles_user_id",
                "ix_synthesized_audios_mode",
                "ix_system_logs_level",
                "ix_system_logs_trace_id",
                "ix_memories_session_id",
                "ix_turn_feedback_created_at",
            ):
                assert name in indexes, name
            assert "USING hnsw" in indexes["ix_voice_profiles_embedding_hnsw"]
            assert "vector_cosine_ops" in indexes["ix_memories_embedding_hnsw"]

            await migrate.downgrade(engine, "base")
            async with engine.connect() as conn:
                left = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert left.isdisjoint(t.metadata.tables)
            await migrate.upgrade(engine)  # and up again on the same database
            assert await migrate.current_revision(engine) == "0004"
        finally:
            await engine.dispose()


async def test_table_definitions_match_the_migrated_schema(uow_factory: SqlUnitOfWorkFactory) -> None:
    async with uow_factory.engine.connect() as conn:

        def columns(sync_conn: object) -> dict[str, set[str]]:
            inspector = inspect(sync_conn)
            return {name: {c["name"] for c in inspector.get_columns(name)} for name in t.metadata.tables}

        migrated = await conn.run_sync(columns)
    for name, table in t.metadata.tables.items():
        assert migrated[name] == {c.name for c in table.columns}, name


async def test_health_reports_pgvector_and_revision(uow_factory: SqlUnitOfWorkFactory) -> None:
    health = await uow_factory.health()
    assert health.ok, health.detail
    assert health.extra["revision"] == "0004"
    assert health.extra["pgvector"]


# --------------------------------------------------------------------------------------- round trips


async def test_session_and_turn_round_trip(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, turn, _ = await _session_with_turn(uow_factory)
    second = ConversationTurn(
        turn_id=new_id(), session_id=session.session_id, turn_number=2, user_input="again"
    )
    async with uow_factory() as uow:
        turn.complete("Hello! How are you?", Emotion.HAPPY, interrupted=True)
        turn.stage_latency_ms.update({"asr_final": 410.5, "llm_ttft": 220.0})
        await uow.turns.update(turn)
        await uow.turns.add(second)
        session.end(NOW + timedelta(minutes=3))
        await uow.sessions.update(session)
        await uow.commit()

    async with uow_factory() as uow:
        stored = await uow.sessions.get(session.session_id)
        turns = await uow.turns.list_for_session(session.session_id)
        one = await uow.turns.get(turn.turn_id)
        recent = await uow.sessions.list_recent(limit=500)
    assert stored is not None
    assert stored.status is SessionStatus.ENDED
    assert stored.end_time == NOW + timedelta(minutes=3)
    assert stored.metadata == {"client": "test"}
    assert [x.turn_number for x in turns] == [1, 2]
    assert one is not None
    assert one.ai_response == "Hello! How are you?"
    assert one.emotion is Emotion.HAPPY
    assert one.interrupted
    assert one.stage_latency_ms == {"asr_final": 410.5, "llm_ttft": 220.0}
    assert session.session_id in {s.session_id for s in recent}


async def test_duplicate_turn_number_is_rejected_clearly(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, _, _ = await _session_with_turn(uow_factory)
    clash = ConversationTurn(turn_id=new_id(), session_id=session.session_id, turn_number=1, user_input="x")
    async with uow_factory() as uow:
        with pytest.raises(InvalidInputError) as err:
            await uow.turns.add(clash)
    assert err.value.code == "CONFLICT"
    assert "uq_conversation_turns_session_turn" in err.value.message


async def test_uncommitted_work_is_rolled_back(uow_factory: SqlUnitOfWorkFactory) -> None:
    session = Session.start(NOW, owner_id=OWNER)
    async with uow_factory() as uow:
        await uow.sessions.add(session)
        assert await uow.sessions.get(session.session_id) is not None  # read-your-writes inside
    async with uow_factory() as uow:
        assert await uow.sessions.get(session.session_id) is None


async def test_transcription_prosody_and_synthesized_round_trip(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, turn, transcription = await _session_with_turn(uow_factory)
    score = ProsodyScore(
        score_id=new_id(),
        transcription_id=transcription.transcription_id,
        confidence=78.5,
        stability=82.3,
        affability=75.1,
        features={"f0_mean": 180.2, "jitter": math.nan, "voiced": "yes"},
        analyzed_at=NOW,
        reliable=False,
        reason="too short",
    )
    fast = SynthesizedAudio(
        audio_id=new_id(),
        turn_id=turn.turn_id,
        mode=TTSMode.FAST,
        audio_url="file:///a.wav",
        duration_sec=1.2,
        synthesis_time_ms=80.0,
        engine="piper",
        voice="joe",
    )
    async with uow_factory() as uow:
        await uow.prosody.add(score)
        await uow.synthesized.add(fast)
        await uow.commit()

    async with uow_factory() as uow:
        got = await uow.transcriptions.get(transcription.transcription_id)
        url = await uow.transcriptions.audio_url(transcription.transcription_id)
        stored = await uow.prosody.get_for_transcription(transcription.transcription_id)
        by_session = await uow.prosody.list_for_session(session.session_id)
        audios = await uow.synthesized.list_for_turn(turn.turn_id)
        missing = await uow.transcriptions.get(uuid.uuid4())
    assert got is not None
    assert (got.text, got.language, got.confidence, got.latency_ms) == ("hi", "en", 0.9, 320.0)
    assert url == "s3://avatar-audio/raw.wav"
    assert stored is not None
    assert stored.features == {"f0_mean": 180.2, "jitter": None, "voiced": "yes"}  # NaN kept as null
    assert (stored.reliable, stored.reason) == (False, "too short")
    assert [s.score_id for s in by_session] == [score.score_id]
    assert audios == [fast]
    assert missing is None


async def _scored_session(factory: UnitOfWorkFactory) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A session of five scored turns, the transcription ids in turn order: turn 2 unreliable,
    turn 4 with two scores (a re-analysis), analyzed out of turn order (turn 1 analyzed last);
    plus another session's reliable score that must never show."""
    owner = await seed_owner(factory)
    session = Session.start(NOW, owner_id=owner)
    other = Session.start(NOW, owner_id=owner)
    ids: list[uuid.UUID] = []
    analyzed = {1: 50, 2: 10, 3: 20, 4: 30, 5: 40}  # minutes after NOW
    async with factory() as uow:
        await uow.sessions.add(session)
        await uow.sessions.add(other)
        for n in range(1, 6):
            turn = ConversationTurn(
                turn_id=new_id(), session_id=session.session_id, turn_number=n, user_input=f"t{n}"
            )
            tr = Transcription(text=f"t{n}", is_final=True, confidence=0.9)
            await uow.turns.add(turn)
            await uow.transcriptions.add(turn.turn_id, tr, None, [])
            ids.append(tr.transcription_id)
            for extra in range(2 if n == 4 else 1):
                await uow.prosody.add(
                    ProsodyScore(
                        score_id=new_id(),
                        transcription_id=tr.transcription_id,
                        confidence=float(10 * n + extra),
                        stability=50.0,
                        affability=50.0,
                        features={"n": float(n)},
                        analyzed_at=NOW + timedelta(minutes=analyzed[n] + extra),
                        reliable=n != 2,
                    )
                )
        foreign_turn = ConversationTurn(
            turn_id=new_id(), session_id=other.session_id, turn_number=1, user_input="other"
        )
        foreign = Transcription(text="other", is_final=True, confidence=0.9)
        await uow.turns.add(foreign_turn)
        await uow.transcriptions.add(foreign_turn.turn_id, foreign, None, [])
        await uow.prosody.add(
            ProsodyScore(new_id(), foreign.transcription_id, 99.0, 50.0, 50.0, {}, NOW + timedelta(hours=1))
        )
        await uow.commit()
    return session.session_id, ids


async def _assert_latest_reliable(factory: UnitOfWorkFactory) -> None:
    session_id, ids = await _scored_session(factory)
    async with factory() as uow:
        window = await uow.prosody.latest_reliable(session_id, 3, exclude_transcription_id=ids[4])
        everything = await uow.prosody.latest_reliable(session_id, 100)
        last = await uow.prosody.latest_reliable(session_id, 1)
        none = await uow.prosody.latest_reliable(session_id, 0)
        unknown = await uow.prosody.latest_reliable(uuid.uuid4(), 5)
    # turn order (not analysis order), the unreliable turn 2 and the excluded turn 5 left out
    assert [s.confidence for s in window] == [30.0, 40.0, 41.0]
    assert [s.confidence for s in everything] == [10.0, 30.0, 40.0, 41.0, 50.0]
    assert all(s.reliable for s in everything)
    assert [s.transcription_id for s in last] == [ids[4]]
    assert none == [] and unknown == []


async def test_latest_reliable_scores_are_the_newest_window_in_turn_order(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    await _assert_latest_reliable(uow_factory)


async def test_the_in_memory_store_answers_latest_reliable_the_same() -> None:
    await _assert_latest_reliable(InMemoryDatabase())


async def test_summary_upsert(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, _, _ = await _session_with_turn(uow_factory)
    async with uow_factory() as uow:
        assert await uow.summaries.load(session.session_id) is None
        await uow.summaries.save(session.session_id, "They said hi.", 1)
        await uow.summaries.save(session.session_id, "They said hi twice.", 2)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.summaries.load(session.session_id) == ("They said hi twice.", 2)


async def test_feedback_upsert_and_filters(uow_factory: SqlUnitOfWorkFactory) -> None:
    _session, turn, _ = await _session_with_turn(uow_factory)
    async with uow_factory() as uow:
        assert await uow.feedback.get(turn.turn_id) is None
        await uow.feedback.put(TurnFeedback(turn.turn_id, Rating.DOWN, "too long"))
        await uow.feedback.put(TurnFeedback(turn.turn_id, Rating.UP, "좋아요 — 好"))  # replaces
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.feedback.get(turn.turn_id)
        assert stored is not None and stored.rating is Rating.UP and stored.comment == "좋아요 — 好"
        assert [f.turn_id for f in await uow.feedback.list(rating=Rating.UP)] == [turn.turn_id]
        assert await uow.feedback.list(rating=Rating.DOWN) == []
        assert stored.created_at is not None
        assert await uow.feedback.list(since=stored.created_at + timedelta(seconds=1)) == []
    async with uow_factory() as uow:
        with pytest.raises(InvalidInputError, match="turn_feedback_turn_id_fkey"):
            await uow.feedback.put(TurnFeedback(uuid.uuid4(), Rating.UP))


# ------------------------------------------------------------------------------------ vector search


async def test_voice_profile_nearest_by_cosine(uow_factory: SqlUnitOfWorkFactory) -> None:
    base = np.array(_unit(1, 256))
    near = base + 0.2 * np.array(_unit(2, 256))
    profiles = [
        _profile("alice", tuple(base)),
        _profile("alice-ish", tuple(near / np.linalg.norm(near))),
        _profile("bob", _unit(3, 256)),
    ]
    async with uow_factory() as uow:
        for p in profiles:
            await uow.voice_profiles.add(p)
        await uow.commit()
    async with uow_factory() as uow:
        hits = await uow.voice_profiles.nearest(base.tolist(), limit=3)
        listed = await uow.voice_profiles.list()
        alice = await uow.voice_profiles.get(profiles[0].profile_id)
    names = [p.name for p, _ in hits]
    assert names[:2] == ["alice", "alice-ish"]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert hits[0][1] > hits[1][1] > hits[2][1]
    assert {p.profile_id for p in profiles} <= {p.profile_id for p in listed}
    assert alice is not None
    assert alice.embedding == pytest.approx(profiles[0].embedding, abs=1e-6)
    assert (alice.sample_rate, alice.transcript, alice.metadata) == (16000, "hello there", {"format": "wav"})

    async with uow_factory() as uow:
        with pytest.raises(DomainError):
            await uow.voice_profiles.nearest([0.1] * 10)


async def test_memory_search_ranks_by_meaning_and_filters_by_session(
    uow_factory: SqlUnitOfWorkFactory,
) -> None:
    first, turn, _ = await _session_with_turn(uow_factory)
    other, _, _ = await _session_with_turn(uow_factory)
    query = np.array(_unit(10, 512))
    close = query + 0.1 * np.array(_unit(11, 512))
    async with uow_factory() as uow:
        await uow.memories.add(first.session_id, turn.turn_id, "user", "I love hiking", close.tolist())
        await uow.memories.add(first.session_id, None, "assistant", "unrelated", list(_unit(12, 512)))
        await uow.memories.add(other.session_id, None, "user", "exact", query.tolist())
        await uow.commit()
    async with uow_factory() as uow:
        everywhere = await uow.memories.search(query.tolist(), limit=2)
        mine = await uow.memories.search(query.tolist(), limit=5, session_id=first.session_id)
    assert [h.text for h in everywhere] == ["exact", "I love hiking"]
    assert [h.text for h in mine] == ["I love hiking", "unrelated"]
    assert mine[0].turn_id == turn.turn_id
    assert mine[0].score > mine[1].score


@pytest.mark.parametrize("exact_up_to", [2000, 0], ids=["exact", "hnsw-walk"])
async def test_an_owners_memory_search_finds_their_nearest_among_many_other_owners(
    uow_factory: SqlUnitOfWorkFactory, monkeypatch: pytest.MonkeyPatch, exact_up_to: int
) -> None:
    # Few memories: an exact search. Many (here: forced with a limit of 0): the HNSW index is walked
    # and the iterative scan must keep walking until the owner's memories fill the answer, even
    # when other owners' memories are most of the table and nearer to the query.
    monkeypatch.setattr(repositories, "EXACT_MEMORY_SEARCH_MAX", exact_up_to)
    mine, _, _ = await _session_with_turn(uow_factory)
    assert mine.owner_id is not None
    query = np.array(_unit(30, 512))
    async with uow_factory() as uow:
        for k in range(6):
            others, _, _ = await _session_with_turn(uow_factory)
            for j in range(40):
                near = query + 0.05 * np.array(_unit(1000 + 40 * k + j, 512))
                await uow.memories.add(others.session_id, None, "user", f"other {k}/{j}", near.tolist())
        expected = []
        for j in range(8):
            vector = query + (0.3 + 0.1 * j) * np.array(_unit(2000 + j, 512))
            await uow.memories.add(mine.session_id, None, "user", f"mine {j}", vector.tolist())
            expected.append((float(vector @ query / np.linalg.norm(vector)), f"mine {j}"))
        await uow.commit()
    async with uow_factory() as uow:
        hits = await uow.memories.search(query.tolist(), limit=5, owner_id=mine.owner_id)
    assert [h.text for h in hits] == [t for _, t in sorted(expected, reverse=True)[:5]]
    assert all(h.session_id == mine.session_id for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# ----------------------------------------------------------------------------------------- cascades


async def test_deleting_a_session_cascades_to_everything_it_owns(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, turn, transcription = await _session_with_turn(uow_factory)
    profile = _profile("cascade", _unit(20, 256))
    async with uow_factory() as uow:
        await uow.voice_profiles.add(profile)
        await uow.prosody.add(
            ProsodyScore(
                score_id=new_id(),
                transcription_id=transcription.transcription_id,
                confidence=50,
                stability=50,
                affability=50,
                features={},
                analyzed_at=NOW,
            )
        )
        await uow.synthesized.add(
            SynthesizedAudio(
                audio_id=new_id(),
                turn_id=turn.turn_id,
                mode=TTSMode.HQ,
                audio_url="x",
                duration_sec=1,
                synthesis_time_ms=1,
                voice_profile_id=profile.profile_id,
            )
        )
        await uow.memories.add(session.session_id, turn.turn_id, "user", "hi", list(_unit(21, 512)))
        await uow.summaries.save(session.session_id, "s", 1)
        await uow.commit()

    # Deleting a voice profile keeps the audio it voiced, with the reference cleared.
    async with uow_factory() as uow:
        assert await uow.voice_profiles.delete(profile.profile_id)
        assert not await uow.voice_profiles.delete(profile.profile_id)
        await uow.commit()
    async with uow_factory() as uow:
        (audio,) = await uow.synthesized.list_for_turn(turn.turn_id)
    assert audio.voice_profile_id is None

    async with uow_factory.engine.begin() as conn:
        await conn.execute(text("DELETE FROM sessions WHERE session_id = :s"), {"s": session.session_id})
    async with uow_factory.engine.connect() as conn:
        for table, column, value in (
            ("conversation_turns", "session_id", session.session_id),
            ("transcriptions", "turn_id", turn.turn_id),
            ("prosody_scores", "transcription_id", transcription.transcription_id),
            ("synthesized_audios", "turn_id", turn.turn_id),
            ("memories", "session_id", session.session_id),
            ("conversation_summaries", "session_id", session.session_id),
        ):
            count = (
                await conn.execute(text(f"SELECT count(*) FROM {table} WHERE {column} = :v"), {"v": value})
            ).scalar_one()
            assert count == 0, table


# ------------------------------------------------------------------------------------ resilience


async def test_a_dropped_connection_is_retried_and_the_transaction_replayed(
    uow_factory: SqlUnitOfWorkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    first = Session.start(NOW, owner_id=OWNER)
    second = Session.start(NOW, owner_id=OWNER)
    async with uow_factory() as uow:
        await uow.sessions.add(first)
        async with uow_factory.engine.connect() as admin:
            killed = (
                await admin.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                        "AND state LIKE 'idle in%'"
                    )
                )
            ).scalar_one()
        assert killed >= 1
        with caplog.at_level(logging.WARNING, logger="avatar.infrastructure.database.transaction"):
            await uow.sessions.add(second)
            await uow.commit()
    assert any("retry 1/3" in r.getMessage() for r in caplog.records)
    async with uow_factory() as uow:
        assert await uow.sessions.get(first.session_id) is not None
        assert await uow.sessions.get(second.session_id) is not None


async def test_a_dead_database_is_retried_then_reported_loudly(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/avatar", connect_timeout_s=1.0
    )
    factory = SqlUnitOfWorkFactory(engine, policy=RetryPolicy(retries=2, base_delay_s=0.01))
    try:
        with caplog.at_level(logging.WARNING, logger="avatar.infrastructure.database.transaction"):
            async with factory() as uow:
                with pytest.raises(DependencyError) as err:
                    await uow.sessions.add(Session.start(NOW, owner_id=OWNER))
        health = await factory.health()
    finally:
        await factory.aclose()
    assert "after 3 attempts" in err.value.message
    assert err.value.code == "DEPENDENCY_UNAVAILABLE"
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "ERROR"]
    assert not health.ok


# ------------------------------------------------- one retry layer: the background writer over the SQL UoW


class _Failures:
    """What the background writer reported (it runs each write once and reports a failure)."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, BaseException]] = []

    async def __call__(self, what: str, exc: BaseException) -> None:
        self.reported.append((what, exc))


async def test_a_rejected_write_is_tried_once_and_reported_at_once(uow_factory: SqlUnitOfWorkFactory) -> None:
    session, _, _ = await _session_with_turn(uow_factory)
    clash = ConversationTurn(turn_id=new_id(), session_id=session.session_id, turn_number=1, user_input="x")
    inserts: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO conversation_turns"):
            inserts.append(statement)

    async def add_clash() -> None:
        async with uow_factory() as uow:
            await uow.turns.add(clash)
            await uow.commit()

    failures = _Failures()
    writer = BackgroundWriter(on_failure=failures, name="writer-test")
    event.listen(uow_factory.engine.sync_engine, "before_cursor_execute", count)
    try:
        writer.submit("turn 1 row", add_clash)
        await writer.drain()
    finally:
        event.remove(uow_factory.engine.sync_engine, "before_cursor_execute", count)
        await writer.aclose()
    assert len(inserts) == 1  # neither the transaction nor the writer tried the rejected row again
    [(what, exc)] = failures.reported
    assert what == "turn 1 row" and isinstance(exc, InvalidInputError) and exc.code == "CONFLICT"
    assert writer.failed == 1 and writer.completed == 0


async def test_a_lasting_outage_is_retried_a_bounded_number_of_times_in_one_layer() -> None:
    engine = create_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/avatar", connect_timeout_s=1.0
    )
    factory = SqlUnitOfWorkFactory(engine, policy=RetryPolicy(retries=2, base_delay_s=0.01))
    connects: list[object] = []

    def count(*args: object) -> None:
        connects.append(args)

    async def add_session() -> None:
        async with factory() as uow:
            await uow.sessions.add(Session.start(NOW, owner_id=OWNER))
            await uow.commit()

    failures = _Failures()
    writer = BackgroundWriter(on_failure=failures, name="writer-test")
    event.listen(engine.sync_engine, "do_connect", count)
    try:
        writer.submit("session row", add_session)
        await writer.drain()
    finally:
        await writer.aclose()
        await factory.aclose()
    assert len(connects) == 3  # 1 + RetryPolicy.retries, not multiplied by a second layer
    [(what, exc)] = failures.reported
    assert what == "session row" and isinstance(exc, DependencyError) and "after 3 attempts" in exc.message


# ------------------------------------------------------------------------------------ placements


async def test_remote_placement_migrates_on_start(postgres_server: PostgresServer) -> None:
    async with fresh_database(postgres_server) as url:
        settings = Settings(database=DatabaseSettings(placement=Placement.REMOTE, url=url))
        async with contextlib.AsyncExitStack() as stack:
            factory = await build_unit_of_work_factory(settings, stack)
            assert (await factory.health()).ok
            session, _, _ = await _session_with_turn(factory)
            async with factory() as uow:
                assert await uow.sessions.get(session.session_id) is not None


async def test_embedded_placement_starts_postgres_from_an_empty_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "pgdata"
    settings = Settings(database=DatabaseSettings(placement=Placement.EMBEDDED, data_dir=data_dir))
    async with contextlib.AsyncExitStack() as stack:
        factory = await build_unit_of_work_factory(settings, stack)
        health = await factory.health()
        assert health.ok, health.detail
        assert health.extra["placement"] == "embedded"
        session, _, _ = await _session_with_turn(factory)
        async with factory() as uow:
            assert await uow.sessions.get(session.session_id) is not None
    assert (data_dir / "PG_VERSION").read_text().strip() == "16"
    assert not (data_dir / "postmaster.pid").exists()  # stopped with the stack


async def test_migration_0002_gives_existing_rows_to_a_local_owner(postgres_server: PostgresServer) -> None:
    async with fresh_database(postgres_server) as url:
        engine = create_async_engine(url)
        try:
            await migrate.upgrade(engine, "0001")
            sid, pid = uuid.uuid4(), uuid.uuid4()
            vector = "[" + ",".join(["0.1"] * 256) + "]"
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO sessions (session_id, start_time) VALUES (:sid, now())"), {"sid": sid}
                )
                await conn.execute(
                    text(
                        "INSERT INTO voice_profiles (profile_id, name, audio_url, embedding, duration_sec,"
                        " sample_rate) VALUES (:pid, 'old', 'file:///x', CAST(:v AS vector), 6, 16000)"
                    ),
                    {"pid": pid, "v": vector},
                )
            await migrate.upgrade(engine)
            async with engine.connect() as conn:
                owner = (await conn.execute(text("SELECT user_id, name, role FROM users"))).one()
                assert (owner.name, owner.role) == ("owner", "admin")
                assert (
                    await conn.execute(
                        text("SELECT owner_id FROM sessions WHERE session_id = :s"), {"s": sid}
                    )
                ).scalar_one() == owner.user_id
                assert (
                    await conn.execute(
                        text("SELECT user_id FROM voice_profiles WHERE profile_id = :p"), {"p": pid}
                    )
                ).scalar_one() == owner.user_id
            await migrate.downgrade(engine, "0001")
            assert await migrate.current_revision(engine) == "0001"
        finally:
            await engine.dispose()
