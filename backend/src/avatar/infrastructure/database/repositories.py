"""Repositories over the tables (docs/design-notes.md §5): map domain dataclasses to rows and back.

No ORM identity map.
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import any_, delete, func, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping

from avatar.application.ports.storage import MemoryHit
from avatar.domain.errors import DomainError
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
    VoiceProfile,
)
from avatar.infrastructure.database import tables as t
from avatar.infrastructure.database.transaction import Transaction


def _json_safe(value: Any) -> Any:
    """JSONB refuses NaN and infinities (prosody features can contain them): store them as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _vector(embedding: Sequence[float], dim: int, what: str) -> list[float]:
    values = [float(v) for v in embedding]
    if len(values) != dim:
        raise DomainError(f"{what} must have {dim} values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise DomainError(f"{what} contains NaN or infinite values")
    return values


class SqlSessionRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, session: Session) -> None:
        if session.owner_id is None:
            raise DomainError("a session needs an owner (docs/security.md)")
        values: dict[str, Any] = {
            "session_id": session.session_id,
            "owner_id": session.owner_id,
            "start_time": session.start_time,
            "end_time": session.end_time,
            "status": session.status.value,
            "metadata": _json_safe(session.metadata),
        }
        if session.created_at is not None:
            values["created_at"] = session.created_at
        await self._tx.write(insert(t.sessions).values(**values))

    async def get(self, session_id: uuid.UUID) -> Session | None:
        row = (
            (await self._tx.read(select(t.sessions).where(t.sessions.c.session_id == session_id)))
            .mappings()
            .first()
        )
        return _session(row) if row is not None else None

    async def update(self, session: Session) -> None:
        await self._tx.write(
            update(t.sessions)
            .where(t.sessions.c.session_id == session.session_id)
            .values(
                end_time=session.end_time, status=session.status.value, metadata=_json_safe(session.metadata)
            )
        )

    async def list_recent(self, limit: int = 50, owner_id: uuid.UUID | None = None) -> list[Session]:
        stmt = select(t.sessions)
        if owner_id is not None:
            stmt = stmt.where(t.sessions.c.owner_id == owner_id)
        rows = await self._tx.read(stmt.order_by(t.sessions.c.start_time.desc()).limit(limit))
        return [_session(row) for row in rows.mappings()]


def _session(row: RowMapping) -> Session:
    return Session(
        session_id=row["session_id"],
        start_time=row["start_time"],
        status=SessionStatus(row["status"]),
        end_time=row["end_time"],
        metadata=dict(row["metadata"]),
        created_at=row["created_at"],
        owner_id=row["owner_id"],
    )


class SqlTurnRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, turn: ConversationTurn) -> None:
        values: dict[str, Any] = {
            "turn_id": turn.turn_id,
            "session_id": turn.session_id,
            "turn_number": turn.turn_number,
            **self._mutable(turn),
        }
        if turn.created_at is not None:
            values["created_at"] = turn.created_at
        # Keyed by its id: a replayed write (docs/resilience.md) leaves the existing row alone.
        stmt = pg_insert(t.conversation_turns).values(**values)
        await self._tx.write(stmt.on_conflict_do_nothing(index_elements=["turn_id"]))

    async def update(self, turn: ConversationTurn) -> None:
        await self._tx.write(
            update(t.conversation_turns)
            .where(t.conversation_turns.c.turn_id == turn.turn_id)
            .values(**self._mutable(turn))
        )

    async def get(self, turn_id: uuid.UUID) -> ConversationTurn | None:
        stmt = select(t.conversation_turns).where(t.conversation_turns.c.turn_id == turn_id)
        row = (await self._tx.read(stmt)).mappings().first()
        return _turn(row) if row is not None else None

    async def list_for_session(self, session_id: uuid.UUID) -> list[ConversationTurn]:
        stmt = (
            select(t.conversation_turns)
            .where(t.conversation_turns.c.session_id == session_id)
            .order_by(t.conversation_turns.c.turn_number)
        )
        return [_turn(row) for row in (await self._tx.read(stmt)).mappings()]

    @staticmethod
    def _mutable(turn: ConversationTurn) -> dict[str, Any]:
        return {
            "user_input": turn.user_input,
            "ai_response": turn.ai_response,
            "emotion": turn.emotion.value,
            "interrupted": turn.interrupted,
            "stage_latency_ms": _json_safe(dict(turn.stage_latency_ms)),
        }


def _turn(row: RowMapping) -> ConversationTurn:
    return ConversationTurn(
        turn_id=row["turn_id"],
        session_id=row["session_id"],
        turn_number=row["turn_number"],
        user_input=row["user_input"],
        ai_response=row["ai_response"],
        emotion=Emotion.parse(row["emotion"]),
        interrupted=row["interrupted"],
        stage_latency_ms={k: float(v) for k, v in row["stage_latency_ms"].items() if v is not None},
        created_at=row["created_at"],
    )


class SqlTranscriptionRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(
        self,
        turn_id: uuid.UUID,
        transcription: Transcription,
        audio_url: str | None,
        partial_results: Sequence[str],
    ) -> None:
        stmt = pg_insert(t.transcriptions).values(
            transcription_id=transcription.transcription_id,
            turn_id=turn_id,
            final_text=transcription.text,
            partial_results=list(partial_results),
            confidence=transcription.confidence,
            latency_ms=transcription.latency_ms,
            audio_url=audio_url,
            language=transcription.language,
            low_confidence=transcription.low_confidence,
        )
        # Keyed by its id: a replayed write (docs/resilience.md) leaves the existing row alone.
        await self._tx.write(stmt.on_conflict_do_nothing(index_elements=["transcription_id"]))

    async def get(self, transcription_id: uuid.UUID) -> Transcription | None:
        stmt = select(t.transcriptions).where(t.transcriptions.c.transcription_id == transcription_id)
        row = (await self._tx.read(stmt)).mappings().first()
        if row is None:
            return None
        return Transcription(
            text=row["final_text"],
            is_final=True,
            confidence=row["confidence"],
            language=row["language"],
            latency_ms=row["latency_ms"],
            low_confidence=row["low_confidence"],
            transcription_id=row["transcription_id"],
        )

    async def audio_url(self, transcription_id: uuid.UUID) -> str | None:
        stmt = select(t.transcriptions.c.audio_url).where(
            t.transcriptions.c.transcription_id == transcription_id
        )
        value = (await self._tx.read(stmt)).scalar_one_or_none()
        return str(value) if value is not None else None

    async def owner_of(self, transcription_id: uuid.UUID) -> uuid.UUID | None:
        stmt = (
            select(t.sessions.c.owner_id)
            .select_from(t.transcriptions)
            .join(t.conversation_turns, t.conversation_turns.c.turn_id == t.transcriptions.c.turn_id)
            .join(t.sessions, t.sessions.c.session_id == t.conversation_turns.c.session_id)
            .where(t.transcriptions.c.transcription_id == transcription_id)
        )
        value = (await self._tx.read(stmt)).scalar_one_or_none()
        return value if isinstance(value, uuid.UUID) else None

    async def audio_expired_at(self, transcription_id: uuid.UUID) -> datetime | None:
        stmt = select(t.transcriptions.c.audio_expired_at).where(
            t.transcriptions.c.transcription_id == transcription_id
        )
        value = (await self._tx.read(stmt)).scalar_one_or_none()
        return value if isinstance(value, datetime) else None


class SqlProsodyRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, score: ProsodyScore) -> None:
        # Keyed by its id: a replayed spool record adds nothing twice (docs/resilience.md).
        await self._tx.write(
            pg_insert(t.prosody_scores)
            .values(
                score_id=score.score_id,
                transcription_id=score.transcription_id,
                confidence=score.confidence,
                stability=score.stability,
                affability=score.affability,
                features=_json_safe(score.features),
                reliable=score.reliable,
                reason=score.reason,
                analyzed_at=score.analyzed_at,
            )
            .on_conflict_do_nothing(index_elements=["score_id"])
        )

    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None:
        stmt = (
            select(t.prosody_scores)
            .where(t.prosody_scores.c.transcription_id == transcription_id)
            .order_by(t.prosody_scores.c.analyzed_at.desc())
            .limit(1)
        )
        row = (await self._tx.read(stmt)).mappings().first()
        return _prosody(row) if row is not None else None

    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]:
        stmt = (
            select(t.prosody_scores)
            .join(
                t.transcriptions, t.transcriptions.c.transcription_id == t.prosody_scores.c.transcription_id
            )
            .join(t.conversation_turns, t.conversation_turns.c.turn_id == t.transcriptions.c.turn_id)
            .where(t.conversation_turns.c.session_id == session_id)
            .order_by(t.conversation_turns.c.turn_number, t.prosody_scores.c.analyzed_at)
        )
        return [_prosody(row) for row in (await self._tx.read(stmt)).mappings()]

    async def latest_reliable(
        self, session_id: uuid.UUID, limit: int, *, exclude_transcription_id: uuid.UUID | None = None
    ) -> list[ProsodyScore]:
        if limit <= 0:
            return []
        scores = t.prosody_scores
        stmt = (
            select(scores)
            .join(t.transcriptions, t.transcriptions.c.transcription_id == scores.c.transcription_id)
            .join(t.conversation_turns, t.conversation_turns.c.turn_id == t.transcriptions.c.turn_id)
            .where(t.conversation_turns.c.session_id == session_id, scores.c.reliable.is_(True))
            .order_by(t.conversation_turns.c.turn_number.desc(), scores.c.analyzed_at.desc())
            .limit(limit)
        )
        if exclude_transcription_id is not None:
            stmt = stmt.where(scores.c.transcription_id != exclude_transcription_id)
        newest_first = [_prosody(row) for row in (await self._tx.read(stmt)).mappings()]
        return newest_first[::-1]


def _prosody(row: RowMapping) -> ProsodyScore:
    return ProsodyScore(
        score_id=row["score_id"],
        transcription_id=row["transcription_id"],
        confidence=row["confidence"],
        stability=row["stability"],
        affability=row["affability"],
        features=dict(row["features"]),
        analyzed_at=row["analyzed_at"],
        reliable=row["reliable"],
        reason=row["reason"],
    )


class SqlVoiceProfileRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, profile: VoiceProfile) -> None:
        if profile.user_id is None:
            raise DomainError("a voice profile needs an owner (docs/security.md)")
        values: dict[str, Any] = {
            "profile_id": profile.profile_id,
            "user_id": profile.user_id,
            "name": profile.name,
            "audio_url": profile.audio_url,
            "embedding": _vector(profile.embedding, t.SPEAKER_DIM, "speaker embedding"),
            "duration_sec": profile.duration_sec,
            "sample_rate": profile.sample_rate,
            "transcript": profile.transcript,
            "metadata": _json_safe(profile.metadata),
        }
        if profile.created_at is not None:
            values["created_at"] = profile.created_at
        await self._tx.write(insert(t.voice_profiles).values(**values))

    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None:
        stmt = select(t.voice_profiles).where(t.voice_profiles.c.profile_id == profile_id)
        row = (await self._tx.read(stmt)).mappings().first()
        return _profile(row) if row is not None else None

    async def list(self, owner_id: uuid.UUID | None = None) -> builtins.list[VoiceProfile]:
        stmt = select(t.voice_profiles)
        if owner_id is not None:
            stmt = stmt.where(t.voice_profiles.c.user_id == owner_id)
        stmt = stmt.order_by(t.voice_profiles.c.created_at, t.voice_profiles.c.name)
        return [_profile(row) for row in (await self._tx.read(stmt)).mappings()]

    async def delete(self, profile_id: uuid.UUID) -> bool:
        stmt = (
            delete(t.voice_profiles)
            .where(t.voice_profiles.c.profile_id == profile_id)
            .returning(t.voice_profiles.c.profile_id)
        )
        return (await self._tx.write(stmt)).first() is not None

    async def nearest(
        self, embedding: Sequence[float], limit: int = 5, owner_id: uuid.UUID | None = None
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        distance = t.voice_profiles.c.embedding.cosine_distance(
            _vector(embedding, t.SPEAKER_DIM, "speaker embedding")
        )
        stmt = select(t.voice_profiles, distance.label("distance"))
        if owner_id is not None:
            stmt = stmt.where(t.voice_profiles.c.user_id == owner_id)
        stmt = stmt.order_by(distance).limit(limit)
        rows = (await self._tx.read(stmt)).mappings()
        return [(_profile(row), 1.0 - float(row["distance"])) for row in rows]


def _profile(row: RowMapping) -> VoiceProfile:
    return VoiceProfile(
        profile_id=row["profile_id"],
        name=row["name"],
        audio_url=row["audio_url"],
        embedding=tuple(float(v) for v in row["embedding"]),
        duration_sec=row["duration_sec"],
        sample_rate=row["sample_rate"],
        transcript=row["transcript"],
        user_id=row["user_id"],
        metadata=dict(row["metadata"]),
        created_at=row["created_at"],
    )


class SqlSynthesizedAudioRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(self, audio: SynthesizedAudio) -> None:
        stmt = pg_insert(t.synthesized_audios).values(
            audio_id=audio.audio_id,
            turn_id=audio.turn_id,
            voice_profile_id=audio.voice_profile_id,
            mode=audio.mode.value,
            audio_url=audio.audio_url,
            duration_sec=audio.duration_sec,
            synthesis_time_ms=audio.synthesis_time_ms,
            engine=audio.engine,
            voice=audio.voice,
        )
        # Keyed by its id: a replayed write (docs/resilience.md) leaves the existing row alone.
        await self._tx.write(stmt.on_conflict_do_nothing(index_elements=["audio_id"]))

    async def list_for_turn(self, turn_id: uuid.UUID) -> list[SynthesizedAudio]:
        stmt = (
            select(t.synthesized_audios)
            .where(t.synthesized_audios.c.turn_id == turn_id)
            .order_by(t.synthesized_audios.c.created_at, t.synthesized_audios.c.mode)
        )
        return [
            SynthesizedAudio(
                audio_id=row["audio_id"],
                turn_id=row["turn_id"],
                mode=TTSMode(row["mode"]),
                audio_url=row["audio_url"],
                duration_sec=row["duration_sec"],
                synthesis_time_ms=row["synthesis_time_ms"],
                voice_profile_id=row["voice_profile_id"],
                engine=row["engine"],
                voice=row["voice"],
                expired_at=row["expired_at"],
            )
            for row in (await self._tx.read(stmt)).mappings()
        ]


#: The object key inside a stored URL (``s3://bucket/KEY``, ``file:///root/KEY``): from the first
#: folder of the key layout on (docs/design-notes.md §5), as ``application.erasure.key_of`` does.
_KEY_IN_URL = r"((raw_inputs|synthesized|voice_profiles)/.*)$"


def _key_of(column: Any) -> Any:
    return func.substring(column, _KEY_IN_URL)


class SqlRetentionRepository:
    """Rows touched by the retention sweep (docs/security.md, "Retention")."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def mark_expired(self, keys: Sequence[str], when: datetime) -> int:
        if not keys:
            return 0
        tr, sa = t.transcriptions, t.synthesized_audios
        inputs = (
            update(tr)
            .where(tr.c.audio_expired_at.is_(None), _key_of(tr.c.audio_url).in_(list(keys)))
            .values(audio_expired_at=when)
            .returning(tr.c.transcription_id)
        )
        replies = (
            update(sa)
            .where(sa.c.expired_at.is_(None), _key_of(sa.c.audio_url).in_(list(keys)))
            .values(expired_at=when)
            .returning(sa.c.audio_id)
        )
        return len((await self._tx.write(inputs)).all()) + len((await self._tx.write(replies)).all())

    async def replace_input_audio(self, old_key: str, new_url: str) -> int:
        tr = t.transcriptions
        stmt = (
            update(tr)
            .where(_key_of(tr.c.audio_url) == old_key)
            .values(audio_url=new_url)
            .returning(tr.c.transcription_id)
        )
        return len((await self._tx.write(stmt)).all())


#: Up to this many memories an owner's recall is an exact search; above, it walks the HNSW index.
EXACT_MEMORY_SEARCH_MAX = 2000


class SqlMemoryRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def add(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        role: str,
        text: str,
        embedding: Sequence[float],
    ) -> None:
        if turn_id is not None:
            # One memory per turn and role: a replayed spool record adds nothing twice
            # (docs/resilience.md).
            stored = await self._tx.read(
                select(t.memories.c.memory_id)
                .where(t.memories.c.turn_id == turn_id, t.memories.c.role == role)
                .limit(1)
            )
            if stored.first() is not None:
                return
        await self._tx.write(
            insert(t.memories).values(
                session_id=session_id,
                turn_id=turn_id,
                role=role,
                text=text,
                embedding=_vector(embedding, t.TEXT_EMBEDDING_DIM, "text embedding"),
            )
        )

    async def search(
        self,
        embedding: Sequence[float],
        limit: int = 5,
        session_id: uuid.UUID | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> list[MemoryHit]:
        distance = t.memories.c.embedding.cosine_distance(
            _vector(embedding, t.TEXT_EMBEDDING_DIM, "text embedding")
        )
        stmt = select(
            t.memories.c.session_id,
            t.memories.c.turn_id,
            t.memories.c.role,
            t.memories.c.text,
            distance.label("distance"),
        )
        if session_id is not None:
            stmt = stmt.where(t.memories.c.session_id == session_id)
        # Exact unless the index is chosen below: ``+ 0`` keeps the planner off the HNSW index,
        # whose plain walk (40 candidates) could leave a filtered answer short.
        order = distance + 0.0
        if owner_id is not None:
            owned = select(t.sessions.c.session_id).where(t.sessions.c.owner_id == owner_id)
            if session_id is None and await self._count_owned(owner_id) > EXACT_MEMORY_SEARCH_MAX:
                # Many memories: the owner's sessions as an array, not a join, so the planner walks
                # the HNSW index, and the iterative scan keeps walking until ``limit`` memories pass
                # the filter (pgvector >= 0.8). The join measured every memory of the owner (~50-150
                # ms at 11 000 memories, growing; docs/benchmarks.md, soak). Few memories: the
                # exact search below is cheap, and an index walk for a rare owner would have to
                # pass over most of the other owners' memories first.
                stmt = stmt.where(t.memories.c.session_id == any_(func.array(owned.scalar_subquery())))
                await self._tx.write(sql_text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                order = distance
            else:
                stmt = stmt.where(t.memories.c.session_id.in_(owned))
        rows = (await self._tx.read(stmt.order_by(order).limit(limit))).mappings()
        hits = [
            MemoryHit(
                session_id=row["session_id"],
                turn_id=row["turn_id"],
                role=row["role"],
                text=row["text"],
                score=1.0 - float(row["distance"]),
            )
            for row in rows
        ]
        return sorted(hits, key=lambda h: -h.score)  # the relaxed scan's order is approximate

    async def _count_owned(self, owner_id: uuid.UUID) -> int:
        owned = select(t.sessions.c.session_id).where(t.sessions.c.owner_id == owner_id)
        stmt = select(func.count()).select_from(t.memories).where(t.memories.c.session_id.in_(owned))
        return int((await self._tx.read(stmt)).scalar_one())


class SqlSummaryRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def save(self, session_id: uuid.UUID, summary: str, covered_turns: int) -> None:
        stmt = pg_insert(t.conversation_summaries).values(
            session_id=session_id, summary=summary, covered_turns=covered_turns
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.conversation_summaries.c.session_id],
            set_={
                "summary": stmt.excluded.summary,
                "covered_turns": stmt.excluded.covered_turns,
                "updated_at": func.now(),
            },
        )
        await self._tx.write(stmt)

    async def load(self, session_id: uuid.UUID) -> tuple[str, int] | None:
        stmt = select(t.conversation_summaries.c.summary, t.conversation_summaries.c.covered_turns).where(
            t.conversation_summaries.c.session_id == session_id
        )
        row = (await self._tx.read(stmt)).mappings().first()
        return (str(row["summary"]), int(row["covered_turns"])) if row is not None else None


class SqlFeedbackRepository:
    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def put(self, feedback: TurnFeedback) -> None:
        values: dict[str, Any] = {
            "turn_id": feedback.turn_id,
            "rating": feedback.rating.value,
            "comment": feedback.comment,
        }
        if feedback.created_at is not None:
            values["created_at"] = feedback.created_at
        stmt = pg_insert(t.turn_feedback).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.turn_feedback.c.turn_id],
            set_={
                "rating": stmt.excluded.rating,
                "comment": stmt.excluded.comment,
                "created_at": stmt.excluded.created_at,
            },
        )
        await self._tx.write(stmt)

    async def get(self, turn_id: uuid.UUID) -> TurnFeedback | None:
        stmt = select(t.turn_feedback).where(t.turn_feedback.c.turn_id == turn_id)
        row = (await self._tx.read(stmt)).mappings().first()
        return _feedback(row) if row is not None else None

    async def list(
        self, *, rating: Rating | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[TurnFeedback]:
        stmt = select(t.turn_feedback).order_by(t.turn_feedback.c.created_at)
        if rating is not None:
            stmt = stmt.where(t.turn_feedback.c.rating == rating.value)
        if since is not None:
            stmt = stmt.where(t.turn_feedback.c.created_at >= since)
        if until is not None:
            stmt = stmt.where(t.turn_feedback.c.created_at < until)
        return [_feedback(row) for row in (await self._tx.read(stmt)).mappings()]


def _feedback(row: RowMapping) -> TurnFeedback:
    return TurnFeedback(
        turn_id=row["turn_id"],
        rating=Rating(row["rating"]),
        comment=row["comment"],
        created_at=row["created_at"],
    )
