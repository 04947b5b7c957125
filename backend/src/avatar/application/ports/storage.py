"""Persistence ports: the object store for audio, repositories and the unit of work.

The tables and the object layout are in docs/design-notes.md §5.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from avatar.application.ports.common import ComponentHealth
from avatar.domain.feedback import Rating, TurnFeedback
from avatar.domain.models import (
    ConversationTurn,
    ProsodyScore,
    Session,
    SynthesizedAudio,
    Transcription,
    VoiceProfile,
)


class ObjectStore(Protocol):
    """Binary objects by key in one bucket (MinIO/S3 in compose, a directory when embedded)."""

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key``; returns the canonical URL (``s3://bucket/key`` or ``file://...``)."""
        ...

    async def get(self, key: str) -> bytes:
        """Raises ``NotFoundError`` if absent."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns how many."""
        ...

    async def list_keys(self, prefix: str) -> list[str]: ...

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str: ...

    async def health(self) -> ComponentHealth: ...


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """A past utterance retrieved by meaning."""

    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    role: str
    text: str
    score: float


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...
    async def get(self, session_id: uuid.UUID) -> Session | None: ...
    async def update(self, session: Session) -> None: ...
    async def list_recent(self, limit: int = 50) -> list[Session]: ...


class TurnRepository(Protocol):
    async def add(self, turn: ConversationTurn) -> None: ...
    async def update(self, turn: ConversationTurn) -> None: ...
    async def get(self, turn_id: uuid.UUID) -> ConversationTurn | None: ...
    async def list_for_session(self, session_id: uuid.UUID) -> list[ConversationTurn]: ...


class TranscriptionRepository(Protocol):
    async def add(
        self,
        turn_id: uuid.UUID,
        transcription: Transcription,
        audio_url: str | None,
        partial_results: Sequence[str],
    ) -> None: ...
    async def get(self, transcription_id: uuid.UUID) -> Transcription | None: ...
    async def audio_url(self, transcription_id: uuid.UUID) -> str | None: ...


class ProsodyRepository(Protocol):
    async def add(self, score: ProsodyScore) -> None: ...
    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None: ...
    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]: ...


class VoiceProfileRepository(Protocol):
    async def add(self, profile: VoiceProfile) -> None: ...
    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None: ...
    async def list(self) -> list[VoiceProfile]: ...
    async def delete(self, profile_id: uuid.UUID) -> bool: ...
    async def nearest(
        self, embedding: Sequence[float], limit: int = 5
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        """Profiles ordered by cosine similarity to ``embedding`` (highest first)."""
        ...


class SynthesizedAudioRepository(Protocol):
    async def add(self, audio: SynthesizedAudio) -> None: ...
    async def list_for_turn(self, turn_id: uuid.UUID) -> list[SynthesizedAudio]: ...


class MemoryRepository(Protocol):
    """Long-term semantic memory: utterances with text embeddings (pgvector)."""

    async def add(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        role: str,
        text: str,
        embedding: Sequence[float],
    ) -> None: ...
    async def search(
        self, embedding: Sequence[float], limit: int = 5, session_id: uuid.UUID | None = None
    ) -> list[MemoryHit]: ...


class SummaryRepository(Protocol):
    """Rolling conversation summaries, persisted so they survive a restart."""

    async def save(self, session_id: uuid.UUID, summary: str, covered_turns: int) -> None: ...
    async def load(self, session_id: uuid.UUID) -> tuple[str, int] | None: ...


class FeedbackRepository(Protocol):
    """Ratings of replies (one per turn; ``put`` replaces an earlier one)."""

    async def put(self, feedback: TurnFeedback) -> None: ...
    async def get(self, turn_id: uuid.UUID) -> TurnFeedback | None: ...
    async def list(
        self, *, rating: Rating | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[TurnFeedback]:
        """Oldest first; ``since``/``until`` bound the rating's time (inclusive, exclusive)."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every repository: ``async with uow: ...; await uow.commit()``."""

    # Read-only properties (not plain attributes) so adapters may narrow the repository types.
    @property
    def sessions(self) -> SessionRepository: ...
    @property
    def turns(self) -> TurnRepository: ...
    @property
    def transcriptions(self) -> TranscriptionRepository: ...
    @property
    def prosody(self) -> ProsodyRepository: ...
    @property
    def voice_profiles(self) -> VoiceProfileRepository: ...
    @property
    def synthesized(self) -> SynthesizedAudioRepository: ...
    @property
    def memories(self) -> MemoryRepository: ...
    @property
    def summaries(self) -> SummaryRepository: ...
    @property
    def feedback(self) -> FeedbackRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Roll back anything not committed."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...

    async def health(self) -> ComponentHealth: ...
