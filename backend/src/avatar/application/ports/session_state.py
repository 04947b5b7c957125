"""Session-state port: what a reconnecting client needs to resume its session (docs/design-notes.md §9).

Kept for the reconnect grace period only. In compose the state lives in Redis, so any
orchestrator replica can resume a session another replica started.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from avatar.application.ports.common import ComponentHealth
from avatar.domain.models import TTSMode


def hash_token(token: str) -> str:
    """The SHA-256 of a session token: only the hash is stored, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ResumableSession:
    """The per-session state a reconnect restores.

    Attributes:
        session_id: The session.
        token_hash: :func:`hash_token` of the session token.
        tts_mode: The tier the client last chose.
        voice: The voice name the client last chose, if any.
        voice_profile_id: The cloned voice the client last chose, if any.
        last_seen: When the client was last connected or active.
        extra: Small string values a capability wants restored too (e.g. the last sequence number).
    """

    session_id: uuid.UUID
    token_hash: str
    tts_mode: TTSMode = TTSMode.FAST
    voice: str | None = None
    voice_profile_id: uuid.UUID | None = None
    last_seen: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def accepts(self, token: str) -> bool:
        """Whether ``token`` is this session's token (constant-time comparison)."""
        return hmac.compare_digest(self.token_hash, hash_token(token))

    def seen(self, now: datetime) -> ResumableSession:
        return replace(self, last_seen=now)


class SessionStateStore(Protocol):
    """Resumable session state with a time to live (the reconnect grace period)."""

    async def save(self, state: ResumableSession, ttl: timedelta) -> None:
        """Store ``state``, replacing any earlier one; it disappears ``ttl`` after this call."""
        ...

    async def load(self, session_id: uuid.UUID) -> ResumableSession | None:
        """The state, or ``None`` if it was never saved, was deleted or has expired."""
        ...

    async def touch(self, session_id: uuid.UUID, now: datetime, ttl: timedelta) -> bool:
        """Set ``last_seen`` to ``now`` and restart the TTL; ``False`` if there is no state."""
        ...

    async def delete(self, session_id: uuid.UUID) -> None: ...

    async def health(self) -> ComponentHealth: ...
