"""Where a session is kept beyond this process: its row and turns in the database, and its
resumable state (token hash, voice choices, turn count) in the session-state store, so a reconnect
may land on any replica (docs/protocol.md, Reconnect)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from avatar.application.conversation.context import SessionContext
from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.clock import Clock
from avatar.application.ports.session_state import ResumableSession, SessionStateStore
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.storage_records import SessionEnd, StorageApplier
from avatar.domain.errors import AvatarError, NotFoundError
from avatar.domain.models import ConversationTurn, Session

log = logging.getLogger(__name__)


class SessionEndedError(AvatarError):
    code = "SESSION_ENDED"


class SessionRecords:
    """Loads and saves what a live session needs to start, resume and end."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        state_store: SessionStateStore | None,
        grace_s: float,
        durable: DurableWriter | None = None,
    ) -> None:
        self.uow = uow
        # The end of a session waits in the storage spool while the database is unreachable
        # (docs/resilience.md); without a spool it is written straight away.
        self._writes = durable or DurableWriter(StorageApplier(uow, None))
        self.clock = clock
        self.state_store = state_store
        self.grace_s = grace_s

    async def load_record(self, session_id: uuid.UUID) -> Session:
        """The session row; raises when it does not exist or has ended."""
        async with self.uow() as tx:
            record = await tx.sessions.get(session_id)
        if record is None:
            raise NotFoundError(f"session {session_id} does not exist: create one with POST /api/v1/sessions")
        if not record.is_active:
            raise SessionEndedError(f"session {session_id} has ended: create a new session")
        return record

    async def load_turns(self, session_id: uuid.UUID) -> list[ConversationTurn]:
        async with self.uow() as tx:
            return list(await tx.turns.list_for_session(session_id))

    async def load_state(self, session_id: uuid.UUID) -> ResumableSession | None:
        if self.state_store is None:
            return None
        try:
            return await self.state_store.load(session_id)
        except Exception:
            # The stored turns still rebuild the history; only the client's choices are lost.
            log.exception("session %s: could not load its state; resuming from the stored turns", session_id)
            return None

    async def store_state(self, context: SessionContext, token_hash: str, ttl_s: float | None = None) -> None:
        """Write the resumable state (raises on failure: the caller's writer retries)."""
        if self.state_store is None:
            return
        state = ResumableSession(
            session_id=context.session_id,
            token_hash=token_hash,
            tts_mode=context.tts_mode,
            voice=context.voice,
            voice_profile_id=context.voice_profile_id,
            last_seen=self.clock.now(),
            extra=context.snapshot(),
        )
        await self.state_store.save(state, timedelta(seconds=ttl_s or self.grace_s + 3600.0))

    async def save_state(self, context: SessionContext, token_hash: str, ttl_s: float | None = None) -> None:
        """:meth:`store_state`, logging a failure instead of raising."""
        try:
            await self.store_state(context, token_hash, ttl_s)
        except Exception:
            log.exception("session %s: could not save its state", context.session_id)

    async def delete_state(self, session_id: uuid.UUID) -> None:
        if self.state_store is None:
            return
        try:
            await self.state_store.delete(session_id)
        except Exception:
            log.exception("session %s: could not delete its state", session_id)

    async def mark_ended(self, session_id: uuid.UUID) -> None:
        try:
            await self._writes.write(SessionEnd(session_id=session_id, ended_at=self.clock.now()))
        except Exception:
            log.exception("session %s: could not mark it ended", session_id)
