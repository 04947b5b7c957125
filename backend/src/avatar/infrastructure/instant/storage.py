"""In-memory storage for the instant engine set: an object store and a transactional database.

Both satisfy the storage ports (``ObjectStore``, ``UnitOfWorkFactory``) for one process: a unit
of work stages its changes on a snapshot and makes them visible on ``commit``.
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.storage import MemoryHit
from avatar.domain.errors import InvalidInputError, NotFoundError
from avatar.domain.models import (
    ConversationTurn,
    ProsodyScore,
    Session,
    SynthesizedAudio,
    Transcription,
    VoiceProfile,
)


class InMemoryObjectStore:
    """Objects in a dict; URLs are ``s3://{bucket}/{key}`` so they map back to keys as S3's do."""

    def __init__(self, bucket: str = "avatar-audio") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.objects[key] = (bytes(data), content_type)
        return f"s3://{self.bucket}/{key}"

    async def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise NotFoundError(f"no object {key}")
        return self.objects[key][0]

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            del self.objects[k]
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return f"http://in-memory/{self.bucket}/{key}?expires={int(expires.total_seconds())}"

    async def health(self) -> ComponentHealth:
        return ComponentHealth("object_store", True, "in memory")


@dataclass
class Tables:
    sessions: dict[uuid.UUID, Session] = field(default_factory=dict)
    turns: dict[uuid.UUID, ConversationTurn] = field(default_factory=dict)
    transcriptions: dict[uuid.UUID, tuple[uuid.UUID, Transcription, str | None, list[str]]] = field(
        default_factory=dict
    )
    prosody: dict[uuid.UUID, ProsodyScore] = field(default_factory=dict)
    profiles: dict[uuid.UUID, VoiceProfile] = field(default_factory=dict)
    synthesized: dict[uuid.UUID, SynthesizedAudio] = field(default_factory=dict)
    #: (session, turn, role, text, unit-length embedding): searched as one matrix product.
    memories: list[tuple[uuid.UUID, uuid.UUID | None, str, str, npt.NDArray[np.float64]]] = field(
        default_factory=list
    )
    summaries: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)

    def copy(self) -> Tables:
        return Tables(
            dict(self.sessions),
            dict(self.turns),
            dict(self.transcriptions),
            dict(self.prosody),
            dict(self.profiles),
            dict(self.synthesized),
            list(self.memories),
            dict(self.summaries),
        )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


class _Repo:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self.uow = uow

    @property
    def t(self) -> Tables:
        return self.uow.staged


class InMemorySessionRepository(_Repo):
    async def add(self, session: Session) -> None:
        self.t.sessions[session.session_id] = replace(session)

    async def get(self, session_id: uuid.UUID) -> Session | None:
        s = self.t.sessions.get(session_id)
        return replace(s) if s else None

    async def update(self, session: Session) -> None:
        if session.session_id not in self.t.sessions:
            raise NotFoundError(f"session {session.session_id} not found")
        self.t.sessions[session.session_id] = replace(session)

    async def list_recent(self, limit: int = 50) -> list[Session]:
        return sorted(self.t.sessions.values(), key=lambda s: s.start_time, reverse=True)[:limit]


class InMemoryTurnRepository(_Repo):
    async def add(self, turn: ConversationTurn) -> None:
        for other in self.t.turns.values():
            if other.session_id == turn.session_id and other.turn_number == turn.turn_number:
                raise InvalidInputError("duplicate (session_id, turn_number)", code="CONFLICT")
        self.t.turns[turn.turn_id] = replace(turn)

    async def update(self, turn: ConversationTurn) -> None:
        self.t.turns[turn.turn_id] = replace(turn)

    async def get(self, turn_id: uuid.UUID) -> ConversationTurn | None:
        t = self.t.turns.get(turn_id)
        return replace(t) if t else None

    async def list_for_session(self, session_id: uuid.UUID) -> list[ConversationTurn]:
        return sorted(
            (t for t in self.t.turns.values() if t.session_id == session_id), key=lambda t: t.turn_number
        )


class InMemoryTranscriptionRepository(_Repo):
    async def add(
        self,
        turn_id: uuid.UUID,
        transcription: Transcription,
        audio_url: str | None,
        partial_results: Sequence[str],
    ) -> None:
        self.t.transcriptions[transcription.transcription_id] = (
            turn_id,
            transcription,
            audio_url,
            list(partial_results),
        )

    async def get(self, transcription_id: uuid.UUID) -> Transcription | None:
        row = self.t.transcriptions.get(transcription_id)
        return row[1] if row else None

    async def audio_url(self, transcription_id: uuid.UUID) -> str | None:
        row = self.t.transcriptions.get(transcription_id)
        return row[2] if row else None


class InMemoryProsodyRepository(_Repo):
    async def add(self, score: ProsodyScore) -> None:
        self.t.prosody[score.score_id] = score

    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None:
        return next((s for s in self.t.prosody.values() if s.transcription_id == transcription_id), None)

    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]:
        turn_ids = {tid for tid, t in self.t.turns.items() if t.session_id == session_id}
        ids = {tr_id for tr_id, row in self.t.transcriptions.items() if row[0] in turn_ids}
        return sorted(
            (s for s in self.t.prosody.values() if s.transcription_id in ids), key=lambda s: s.analyzed_at
        )


class InMemoryVoiceProfileRepository(_Repo):
    async def add(self, profile: VoiceProfile) -> None:
        self.t.profiles[profile.profile_id] = profile

    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None:
        return self.t.profiles.get(profile_id)

    async def list(self) -> builtins.list[VoiceProfile]:
        return [*self.t.profiles.values()]

    async def delete(self, profile_id: uuid.UUID) -> bool:
        return self.t.profiles.pop(profile_id, None) is not None

    async def nearest(
        self, embedding: Sequence[float], limit: int = 5
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        ranked = sorted(
            ((p, _cosine(p.embedding, embedding)) for p in self.t.profiles.values()),
            key=lambda pair: pair[1],
            reverse=True,
        )
        return ranked[:limit]


class InMemorySynthesizedAudioRepository(_Repo):
    async def add(self, audio: SynthesizedAudio) -> None:
        self.t.synthesized[audio.audio_id] = audio

    async def list_for_turn(self, turn_id: uuid.UUID) -> list[SynthesizedAudio]:
        return [a for a in self.t.synthesized.values() if a.turn_id == turn_id]


class InMemoryMemoryRepository(_Repo):
    async def add(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        role: str,
        text: str,
        embedding: Sequence[float],
    ) -> None:
        vector = np.asarray(embedding, dtype=np.float64)
        vector /= float(np.linalg.norm(vector)) or 1.0
        self.t.memories.append((session_id, turn_id, role, text, vector))

    async def search(
        self, embedding: Sequence[float], limit: int = 5, session_id: uuid.UUID | None = None
    ) -> list[MemoryHit]:
        rows = [m for m in self.t.memories if session_id is None or m[0] == session_id]
        if not rows:
            return []
        query = np.asarray(embedding, dtype=np.float64)
        query /= float(np.linalg.norm(query)) or 1.0
        scores = np.stack([m[4] for m in rows]) @ query
        best = np.argsort(-scores, kind="stable")[:limit]
        return [MemoryHit(rows[i][0], rows[i][1], rows[i][2], rows[i][3], float(scores[i])) for i in best]


class InMemorySummaryRepository(_Repo):
    async def save(self, session_id: uuid.UUID, summary: str, covered_turns: int) -> None:
        self.t.summaries[session_id] = (summary, covered_turns)

    async def load(self, session_id: uuid.UUID) -> tuple[str, int] | None:
        return self.t.summaries.get(session_id)


class InMemoryUnitOfWork:
    """Transactional over a shared :class:`InMemoryDatabase`: changes are visible after ``commit``."""

    def __init__(self, db: InMemoryDatabase) -> None:
        self.db = db
        self.staged = Tables()
        self.sessions = InMemorySessionRepository(self)
        self.turns = InMemoryTurnRepository(self)
        self.transcriptions = InMemoryTranscriptionRepository(self)
        self.prosody = InMemoryProsodyRepository(self)
        self.voice_profiles = InMemoryVoiceProfileRepository(self)
        self.synthesized = InMemorySynthesizedAudioRepository(self)
        self.memories = InMemoryMemoryRepository(self)
        self.summaries = InMemorySummaryRepository(self)
        self.committed = False

    async def __aenter__(self) -> Self:
        self.staged = self.db.snapshot()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        self.db.tables = self.staged
        self.db.commits += 1
        self.staged = self.db.snapshot()
        self.committed = True

    async def rollback(self) -> None:
        self.staged = self.db.snapshot()


class InMemoryDatabase:
    """The shared state behind every :class:`InMemoryUnitOfWork`; also the factory (call it)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.commits = 0

    def snapshot(self) -> Tables:
        return self.tables.copy()

    def __call__(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    async def health(self) -> ComponentHealth:
        return ComponentHealth("database", True, "in memory")
