"""Live sessions of this process: admission control, attach/detach, reconnect grace, resume."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from avatar.application.conversation.deps import ConversationDeps
from avatar.application.conversation.events import ServerMessage
from avatar.application.conversation.records import SessionRecords
from avatar.application.conversation.session import ConversationSession
from avatar.application.conversation.tokens import TokenError
from avatar.application.ports.session_state import ResumableSession, SessionStateStore, hash_token
from avatar.domain.errors import CapacityError

log = logging.getLogger(__name__)


@dataclass
class _Live:
    session: ConversationSession
    connection: object | None = None
    grace: asyncio.Task[None] | None = None
    token_hash: str = ""
    owner_id: uuid.UUID | None = None


class SessionManager:
    """Owns every :class:`ConversationSession` of this process.

    Admission is decided before anything is opened: at most ``max_sessions`` sessions are live
    (connected, or disconnected and waiting out the reconnect grace period). A reconnect within
    the grace period re-attaches the same live session (history intact); a session this process
    does not hold is rebuilt from the session-state store and the stored turns (another replica,
    or a restart).
    """

    def __init__(
        self,
        deps: ConversationDeps,
        *,
        max_sessions: int,
        grace_s: float,
        state_store: SessionStateStore | None = None,
        max_sessions_per_user: int | None = None,
    ) -> None:
        self.deps = deps
        self.max_sessions = max_sessions
        #: Sessions one user may have connected at once (docs/security.md, "Admission"); ``None``:
        #: no limit.
        self.max_sessions_per_user = max_sessions_per_user
        self.grace_s = grace_s
        self.state_store = state_store
        self.records = SessionRecords(deps.uow, deps.clock, state_store, grace_s)
        self._live: dict[uuid.UUID, _Live] = {}
        self._reserved = 0

    @property
    def active_count(self) -> int:
        return len(self._live) + self._reserved

    def is_live(self, session_id: uuid.UUID) -> bool:
        return session_id in self._live

    def get(self, session_id: uuid.UUID) -> ConversationSession | None:
        live = self._live.get(session_id)
        return live.session if live else None

    def connected_count_of(self, owner_id: uuid.UUID) -> int:
        """How many of ``owner_id``'s sessions have a connection in this process now (sessions
        parked in their reconnect grace period do not count)."""
        return sum(
            1 for live in self._live.values() if live.owner_id == owner_id and live.connection is not None
        )

    def check_user_capacity(self, owner_id: uuid.UUID | None) -> None:
        """Raise :class:`CapacityError` (``USER_BUSY``) when ``owner_id`` has its limit of connected
        sessions, so one user cannot take every shared slot (docs/security.md, "Admission")."""
        limit = self.max_sessions_per_user
        if limit is not None and owner_id is not None and self.connected_count_of(owner_id) >= limit:
            raise CapacityError(
                f"you already have {limit} live conversations; end one to start another",
                code="USER_BUSY",
            )

    def check_capacity(self) -> None:
        """Raise :class:`CapacityError` when no new session can be admitted now."""
        if self.active_count >= self.max_sessions:
            raise CapacityError(
                f"the server is at its limit of {self.max_sessions} concurrent sessions; try again shortly"
            )

    async def attach(
        self, session_id: uuid.UUID, connection: object, token: str | None = None
    ) -> tuple[ConversationSession, bool, object | None]:
        """Bind ``connection`` to the session, creating or resuming it.

        Args:
            session_id: The session to attach to.
            connection: An opaque handle of the connection (returned to whoever it replaces).
            token: The session token the client presented (already verified); its hash is kept
                in the session state, and a stored state only resumes for the same token.

        Returns:
            The session, whether it was resumed, and the connection it took over (to be closed).

        Raises:
            NotFoundError: the session does not exist. SessionEndedError: it has ended.
            CapacityError: admitting it would exceed ``max_sessions``.
            TokenError: the stored state belongs to another token.
        """
        token_hash = hash_token(token) if token else ""
        live = self._live.get(session_id)
        if live is not None:
            if live.token_hash and token_hash and live.token_hash != token_hash:
                raise TokenError("the session token does not belong to this session")
            if live.grace is not None:
                live.grace.cancel()
                live.grace = None
            previous, live.connection = live.connection, connection
            live.session.outbox.attached = True
            live.token_hash = live.token_hash or token_hash
            return live.session, True, previous
        record = await self.records.load_record(session_id)
        if session_id in self._live:  # attached by a concurrent connect meanwhile
            return await self.attach(session_id, connection, token)
        self.check_capacity()
        self.check_user_capacity(record.owner_id)
        self._reserved += 1  # held across the awaits below so two connects cannot both pass
        try:
            state = await self.records.load_state(session_id)
            if state is not None and state.token_hash and token and not state.accepts(token):
                raise TokenError("the session token does not belong to this session")
            session = self._new_session(session_id, state)
            resumed = state is not None or session.context.turn_count > 0
            if resumed:
                turns = await self.records.load_turns(session_id)
                session.context.turn_count = max(session.context.turn_count, len(turns))
                await self.deps.replies.restore(session_id, turns)
            await session.start()
        finally:
            self._reserved -= 1
        self._live[session_id] = _Live(
            session,
            connection,
            token_hash=token_hash or (state.token_hash if state else ""),
            owner_id=record.owner_id,
        )
        if self.state_store is not None:
            # Every later change (a turn, a voice choice) is written through the session's own
            # background writer: retried, reported if lasting, never on the audio path.
            session.on_state_change = lambda: self._store_state(session_id)
        session.outbox.attached = True
        self.deps.metrics.set_active_sessions(self.active_count)
        await self.records.save_state(session.context, self._live[session_id].token_hash)
        return session, resumed, None

    def detach(self, session_id: uuid.UUID, connection: object) -> None:
        """The connection closed: keep the session for ``grace_s`` seconds, then end it."""
        live = self._live.get(session_id)
        if live is None or live.connection is not connection:
            return  # already taken over by a newer connection
        live.connection = None
        live.session.outbox.attached = False
        live.grace = asyncio.create_task(self._expire(session_id), name=f"grace-{session_id}")

    async def _expire(self, session_id: uuid.UUID) -> None:
        live = self._live.get(session_id)
        if live is not None:
            await self.records.save_state(live.session.context, live.token_hash, ttl_s=self.grace_s + 1.0)
        await asyncio.sleep(self.grace_s)
        await self.close(session_id, delete_state=True)

    async def close(self, session_id: uuid.UUID, *, delete_state: bool = False) -> None:
        """End a live session and release its resources."""
        live = self._live.pop(session_id, None)
        if live is None:
            return
        self.deps.metrics.set_active_sessions(self.active_count)
        await live.session.aclose()
        await self.deps.replies.forget(session_id)
        if delete_state:
            await self.records.delete_state(session_id)
            await self.records.mark_ended(session_id)

    async def aclose(self) -> None:
        """Close every live session (shutdown); states are kept so another replica can resume."""
        for session_id in list(self._live):
            live = self._live.get(session_id)
            if live is not None and live.grace is not None:
                live.grace.cancel()
            await self.close(session_id)

    async def notify(self, session_id: uuid.UUID, message: ServerMessage) -> None:
        """Deliver a background message (hq_ready, prosody_analysis) to the session's client."""
        live = self._live.get(session_id)
        if live is None:
            log.info("session %s is not live here; dropped %s", session_id, message.type)
            return
        live.session.outbox.send(message)

    async def save_state(self, session_id: uuid.UUID) -> None:
        """Write the live session's resumable state (after a change the client made)."""
        live = self._live.get(session_id)
        if live is not None:
            await self.records.save_state(live.session.context, live.token_hash)

    # --- helpers --------------------------------------------------------------------------

    def _new_session(self, session_id: uuid.UUID, state: ResumableSession | None) -> ConversationSession:
        if state is None:
            return ConversationSession(session_id, self.deps)
        extra = state.extra
        turns = extra.get("turn_count", "0")
        return ConversationSession(
            session_id,
            self.deps,
            turn_count=int(turns) if turns.isdigit() else 0,
            tts_mode=state.tts_mode,
            voice=state.voice,
            voice_profile_id=state.voice_profile_id,
            language=extra.get("language") or None,
        )

    async def _store_state(self, session_id: uuid.UUID) -> None:
        live = self._live.get(session_id)
        if live is not None:
            await self.records.store_state(live.session.context, live.token_hash)
