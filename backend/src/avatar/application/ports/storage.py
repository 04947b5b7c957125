"""Persistence ports: the object store for audio, repositories and the unit of work.

The tables and the object layout are in docs/design-notes.md §5.
"""

from __future__ import annotations

import builtins
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    User,
    VoiceProfile,
)


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object of a listing: its key and its size in bytes as stored (sealed)."""

    key: str
    size: int


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

    async def list_objects(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` with its stored size, sorted by key."""
        ...

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


class CredentialKind(enum.StrEnum):
    """What a stored secret is (docs/security.md, "Accounts and ownership")."""

    #: A long-lived API key (``Authorization: Bearer KEY``).
    API_KEY = "api_key"
    #: A web sign-in session kept in an HttpOnly cookie, with its CSRF token.
    WEB = "web"
    #: A single-use, short-lived sign-in link.
    LINK = "link"


@dataclass(frozen=True, slots=True)
class Credential:
    """A stored secret: only its SHA-256 is kept, never the secret itself."""

    credential_id: uuid.UUID
    user_id: uuid.UUID
    kind: CredentialKind
    secret_hash: str
    csrf_hash: str | None = None
    label: str = ""
    expires_at: datetime | None = None
    created_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative action (written to ``system_logs`` with level ``audit``)."""

    actor_id: uuid.UUID | None
    action: str
    target: str
    detail: Mapping[str, object] = field(default_factory=dict)
    created_at: datetime | None = None


class AccountRepository(Protocol):
    """Users, their credentials and the audit log."""

    async def add_user(self, user: User, password_hash: str | None = None) -> None: ...
    async def get_user(self, user_id: uuid.UUID) -> User | None: ...
    async def get_user_by_name(self, name: str) -> User | None: ...
    async def list_users(self) -> list[User]: ...
    async def delete_user(self, user_id: uuid.UUID) -> bool: ...
    async def password_hash(self, user_id: uuid.UUID) -> str | None: ...
    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None: ...
    async def add_credential(self, credential: Credential) -> None: ...
    async def find_credential(self, secret_hash: str) -> Credential | None: ...
    async def consume_credential(self, secret_hash: str) -> Credential | None:
        """Remove and return the credential (a single-use link is spent exactly once)."""
        ...

    async def delete_credential(self, secret_hash: str) -> bool: ...
    async def touch_credential(self, credential_id: uuid.UUID, now: datetime) -> None: ...
    async def audit(self, entry: AuditEntry) -> None: ...
    async def audit_entries(self, limit: int = 100) -> list[AuditEntry]: ...


class ErasureRepository(Protocol):
    """What deleting a user's data needs: find everything of theirs, and remove a session's rows."""

    async def sessions_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]: ...
    async def voice_profiles_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]: ...
    async def turns_of(self, session_id: uuid.UUID) -> list[uuid.UUID]: ...
    async def object_urls_of(self, session_id: uuid.UUID) -> list[str]:
        """Every stored object URL the session's rows point at (input audio, replies)."""
        ...

    async def erase_session(self, session_id: uuid.UUID) -> dict[str, int]:
        """Delete the session and every row under it; returns how many rows per table."""
        ...


class RetentionRepository(Protocol):
    """What the retention sweep changes in the rows (docs/security.md, "Retention")."""

    async def mark_expired(self, keys: Sequence[str], when: datetime) -> int:
        """Mark the rows whose audio is one of ``keys`` as expired (input audio and replies);
        rows already marked are left alone. Returns how many rows changed."""
        ...

    async def replace_input_audio(self, old_key: str, new_url: str) -> int:
        """Point the transcriptions whose input audio is ``old_key`` at ``new_url``; how many."""
        ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...
    async def get(self, session_id: uuid.UUID) -> Session | None: ...
    async def update(self, session: Session) -> None: ...
    async def list_recent(self, limit: int = 50, owner_id: uuid.UUID | None = None) -> list[Session]:
        """Newest first; only ``owner_id``'s sessions when given."""
        ...


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
    async def owner_of(self, transcription_id: uuid.UUID) -> uuid.UUID | None:
        """The owner of the session the transcription belongs to (``None``: no such transcription)."""
        ...

    async def audio_expired_at(self, transcription_id: uuid.UUID) -> datetime | None:
        """When the retention sweep removed the input audio (``None``: not removed)."""
        ...


class ProsodyRepository(Protocol):
    async def add(self, score: ProsodyScore) -> None: ...
    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None: ...
    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]: ...
    async def latest_reliable(
        self, session_id: uuid.UUID, limit: int, *, exclude_transcription_id: uuid.UUID | None = None
    ) -> list[ProsodyScore]:
        """The session's latest ``limit`` reliable scores, oldest first (turn order), without
        ``exclude_transcription_id``'s: one bounded read per analysis (docs/prosody.md)."""
        ...


class VoiceProfileRepository(Protocol):
    async def add(self, profile: VoiceProfile) -> None: ...
    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None: ...
    async def list(self, owner_id: uuid.UUID | None = None) -> builtins.list[VoiceProfile]:
        """Every profile, or only ``owner_id``'s."""
        ...

    async def delete(self, profile_id: uuid.UUID) -> bool: ...
    async def nearest(
        self, embedding: Sequence[float], limit: int = 5, owner_id: uuid.UUID | None = None
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        """Profiles (only ``owner_id``'s when given) ordered by cosine similarity to ``embedding``."""
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
        self,
        embedding: Sequence[float],
        limit: int = 5,
        session_id: uuid.UUID | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> list[MemoryHit]:
        """Closest utterances; only of ``session_id`` and/or of ``owner_id``'s sessions when given."""
        ...


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
    def accounts(self) -> AccountRepository: ...
    @property
    def erasure(self) -> ErasureRepository: ...
    @property
    def feedback(self) -> FeedbackRepository: ...
    @property
    def retention(self) -> RetentionRepository: ...

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
