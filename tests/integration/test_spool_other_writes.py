"""The rest of a conversation's writes through the storage spool, against a real PostgreSQL that
the test stops and starts again (docs/resilience.md): long-term memories, the rolling summary,
the HQ pass's audio row, prosody scores and the end of a session wait on disk while the database
is down, reach it in order once it is back, and land once only when replayed again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from avatar.application.conversation.records import SessionRecords
from avatar.application.durable_writes import Outcome
from avatar.application.storage_records import (
    MemoryInsert,
    MemoryItem,
    ProsodyInsert,
    SessionEnd,
    SpoolRecord,
    SummarySave,
    SynthesizedRow,
    TranscriptionInsert,
    TurnInsert,
)
from avatar.domain.models import (
    ConversationTurn,
    ProsodyScore,
    SessionStatus,
    SynthesizedAudio,
    Transcription,
    TTSMode,
    new_id,
)
from avatar.infrastructure.clock import SystemClock
from avatar.infrastructure.database import SqlUnitOfWorkFactory
from avatar.infrastructure.database import tables as t
from tests.integration.test_spool import (  # the same PostgreSQL-of-its-own rig
    Rig,
    keyring,
    new_session,
    outage,
    own_postgres,
    rig,
    uow,
    wait_drained,
)
from tests.support.servers import RestartablePostgres

__all__ = ["keyring", "own_postgres", "rig", "uow"]  # fixtures, used by name

DIM = t.TEXT_EMBEDDING_DIM


def other_writes(session_id: uuid.UUID) -> tuple[list[SpoolRecord], list[SpoolRecord]]:
    """(the turn and transcription the rest point at, then every other write of that turn)."""
    turn = ConversationTurn(
        turn_id=new_id(), session_id=session_id, turn_number=1, user_input="I love hiking"
    )
    transcription = Transcription(text=turn.user_input, is_final=True, confidence=0.9, language="en")
    heard = TranscriptionInsert(turn_id=turn.turn_id, transcription=transcription, audio_url="raw/1.wav")
    first: list[SpoolRecord] = [TurnInsert(turn=turn), heard]
    memories = MemoryInsert(
        session_id=session_id,
        items=[
            MemoryItem(
                turn_id=turn.turn_id, role="user", text="I love hiking", embedding=[1.0] + [0.0] * (DIM - 1)
            ),
            MemoryItem(
                turn_id=turn.turn_id,
                role="assistant",
                text="Me too!",
                embedding=[0.0, 1.0] + [0.0] * (DIM - 2),
            ),
        ],
    )
    summary = SummarySave(session_id=session_id, summary="The user loves hiking.", covered_turns=1)
    hq = SynthesizedRow(
        row=SynthesizedAudio(
            audio_id=new_id(),
            turn_id=turn.turn_id,
            mode=TTSMode.HQ,
            audio_url="synthesized/hq/1.wav",
            duration_sec=1.5,
            synthesis_time_ms=900.0,
        )
    )
    score = ProsodyInsert(
        score=ProsodyScore(
            score_id=new_id(),
            transcription_id=heard.transcription.transcription_id,
            confidence=60.0,
            stability=55.0,
            affability=70.0,
            features={"f0_mean": 180.0},
            analyzed_at=datetime.now(UTC),
        )
    )
    return first, [memories, summary, hq, score]


async def counted(uow: SqlUnitOfWorkFactory, session_id: uuid.UUID) -> dict[str, object]:
    """What the database holds of the session, counted in its tables."""
    async with uow() as tx:
        turn_ids = [turn.turn_id for turn in await tx.turns.list_for_session(session_id)]

        async def count(table: object, where: object) -> int:
            rows = await tx._tx.read(select(func.count()).select_from(table).where(where))  # type: ignore[arg-type]
            return int(rows.scalar_one())

        transcription_ids = select(t.transcriptions.c.transcription_id).where(
            t.transcriptions.c.turn_id.in_(turn_ids)
        )
        result: dict[str, object] = {
            "turns": len(turn_ids),
            "memories": await count(t.memories, t.memories.c.session_id == session_id),
            "hq_audio": await count(
                t.synthesized_audios,
                (t.synthesized_audios.c.turn_id.in_(turn_ids))
                & (t.synthesized_audios.c.mode == TTSMode.HQ.value),
            ),
            "prosody": await count(
                t.prosody_scores, t.prosody_scores.c.transcription_id.in_(transcription_ids)
            ),
            "summary": await tx.summaries.load(session_id),
        }
        session = await tx.sessions.get(session_id)
        result["status"] = session.status if session is not None else None
    return result


async def test_memories_summary_hq_row_prosody_and_session_end_wait_for_the_database(
    rig: Rig, own_postgres: RestartablePostgres
) -> None:
    session_id = await new_session(rig.uow)
    first, rest = other_writes(session_id)
    records = SessionRecords(rig.uow, SystemClock(), None, 60.0, rig.spooled.writer)
    with outage(own_postgres):
        # The turn's own rows went to the spool first: everything else must queue behind them.
        for record in first + rest:
            assert await rig.spooled.writer.write(record) is Outcome.SPOOLED
        await records.mark_ended(session_id)  # the session's end, through its real call site
        assert rig.spooled.spool.depth().records == len(first) + len(rest) + 1
    rig.spooled.start()
    await wait_drained(rig.spooled)
    want = {
        "turns": 1,
        "memories": 2,
        "hq_audio": 1,
        "prosody": 1,
        "summary": ("The user loves hiking.", 1),
        "status": SessionStatus.ENDED,
    }
    assert await counted(rig.uow, session_id) == want
    # A replay after a crash (records applied again) adds nothing twice.
    for record in [*first, *rest, SessionEnd(session_id=session_id, ended_at=datetime.now(UTC))]:
        assert await rig.spooled.writer.write(record) is Outcome.STORED
    assert await counted(rig.uow, session_id) == want


async def test_with_the_database_up_the_same_writes_land_at_once(rig: Rig) -> None:
    session_id = await new_session(rig.uow)
    first, rest = other_writes(session_id)
    for record in first + rest:
        assert await rig.spooled.writer.write(record) is Outcome.STORED
    await SessionRecords(rig.uow, SystemClock(), None, 60.0, rig.spooled.writer).mark_ended(session_id)
    assert not rig.spooled.spool.pending
    counts = await counted(rig.uow, session_id)
    assert counts["memories"] == 2 and counts["hq_audio"] == 1 and counts["prosody"] == 1
    assert counts["status"] is SessionStatus.ENDED
