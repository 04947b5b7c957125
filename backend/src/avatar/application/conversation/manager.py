"""Live sessions of this process: admission control, attach/detach, reconnect grace, resume."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from avatar.application.conversation.admission import Admission, AdmissionCounts, AdmissionLimits, SlotCounts
from avatar.application.conversation.deps import ConversationDeps
from avatar.application.conversation.events import ServerMessage
from avatar.application.conversation.records import SessionRecords
from avatar.application.conversation.session import ConversationSession
from avatar.application.conversation.tokens import TokenError
from avatar.application.ports.notify import NotificationRelay
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
    #: When the client left (monotonic seconds); ``None`` while one is connected.
    parked_at: float | None = None
    #: Releasing the recognizer's stream after the client left.
    parking: asyncio.Task[None] | None = None

    @property
    def holds_live_slot(self) -> bool:
        return self.connection is not None or self.session.replying


class SessionManager:
    """Owns every :class:`ConversationSession` of this process.

    Admission is decided before anything is opened (:mod:`.admission`): at most ``max_sessions``
    sessions hold a live slot (a connected client, or a turn still in flight); sessions parked for a
    reconnect hold none and are bounded by ``max_parked`` (oldest evicted from memory first) and by
    ``grace_s``. A reconnect within the grace period re-attaches the same session (history intact);
    a session this process does not hold (evicted, another replica, a restart) is rebuilt from the
    session-state store and the stored turns.
    """

    def __init__(
        self,
        deps: ConversationDeps,
        *,
        max_sessions: int,
        grace_s: float,
        state_store: SessionStateStore | None = None,
        max_sessions_per_user: int | None = None,
        max_parked: int = 1000,
        retry_after_s: int = 5,
    ) -> None:
        self.deps = deps
        self.max_sessions = max_sessions
        #: Sessions one user may have connected at once (docs/security.md, "Admission"); ``None``:
        #: no limit.
        self.max_sessions_per_user = max_sessions_per_user
        self.admission = Admission(AdmissionLimits(max_sessions, max_parked, retry_after_s))
        self.grace_s = grace_s
        self.state_store = state_store
        self.records = SessionRecords(deps.uow, deps.clock, state_store, grace_s, deps.durable)
        self._live: dict[uuid.UUID, _Live] = {}
        # Kept as the connections come and go, so admission does not pass over every session on
        # each connect and disconnect (docs/benchmarks.md, "load": ~4 % of the 500-session server's
        # loop): the live sessions without a client, and each owner's connected sessions.
        self._unconnected: set[uuid.UUID] = set()
        self._connected_by_owner: Counter[uuid.UUID | None] = Counter()
        self._reserved = 0
        self._evictions: set[asyncio.Task[None]] = set()
        #: Set by the composition root when replicas share Redis: resumes are announced on it.
        self.relay: NotificationRelay | None = None

    @property
    def active_count(self) -> int:
        """Sessions holding a live slot, admissions under way included."""
        counts = self.slot_counts()
        return counts.live + counts.reserved

    def slot_counts(self) -> SlotCounts:
        """Live slots and parked sessions of this process; passes over the unconnected only."""
        replying_parked = sum(1 for sid in self._unconnected if self._live[sid].session.replying)
        live = len(self._live) - len(self._unconnected) + replying_parked
        return SlotCounts(live=live, parked=len(self._live) - live, reserved=self._reserved)

    def admission_counts(self) -> AdmissionCounts:
        """Live connections, turns in flight, live slots and parked sessions of this process."""
        slots = self.slot_counts()
        return AdmissionCounts(
            live_connections=len(self._live) - len(self._unconnected),
            turns_in_flight=sum(1 for item in self._live.values() if item.session.replying),
            live=slots.live,
            parked=slots.parked,
            reserved=slots.reserved,
        )

    def _set_connection(self, session_id: uuid.UUID, live: _Live, connection: object | None) -> None:
        """Give ``live`` (in ``self._live``) its connection, or none, keeping the counts."""
        if live.connection is not None:
            self._connected_by_owner[live.owner_id] -= 1
        live.connection = connection
        if connection is None:
            self._unconnected.add(session_id)
        else:
            self._unconnected.discard(session_id)
            self._connected_by_owner[live.owner_id] += 1

    def _pop_live(self, session_id: uuid.UUID) -> _Live | None:
        live = self._live.pop(session_id, None)
        if live is not None:
            if live.connection is not None:
                self._connected_by_owner[live.owner_id] -= 1
            self._unconnected.discard(session_id)
        return live

    def is_live(self, session_id: uuid.UUID) -> bool:
        return session_id in self._live

    def holds_connection(self, session_id: uuid.UUID) -> bool:
        live = self._live.get(session_id)
        return live is not None and live.connection is not None

    def get(self, session_id: uuid.UUID) -> ConversationSession | None:
        live = self._live.get(session_id)
        return live.session if live else None

    def connected_count_of(self, owner_id: uuid.UUID) -> int:
        """How many of ``owner_id``'s sessions have a connection in this process now (sessions
        parked in their reconnect grace period do not count)."""
        return self._connected_by_owner[owner_id]

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
        """Raise :class:`CapacityError` (with ``retry_after_s``) when no live slot is free now."""
        self._evict_parked()  # parked sessions whose reply finished since they left
        self.admission.check(self.slot_counts())

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
            CapacityError: no live slot is free (a parked session needs one to come back).
            TokenError: the stored state belongs to another token.
        """
        token_hash = hash_token(token) if token else ""
        live = self._live.get(session_id)
        if live is not None:
            previous = await self._reattach(session_id, live, connection, token_hash)
            return live.session, True, previous
        record = await self.records.load_record(session_id)
        if session_id in self._live:  # attached by a concurrent connect meanwhile
            return await self.attach(session_id, connection, token)
        self.check_capacity()
        self.check_user_capacity(record.owner_id)
        self._reserved += 1  # held across the awaits below so two connects cannot both pass
        try:
            session, resumed, state = await self._open(session_id, token)
        finally:
            self._reserved -= 1
        live = _Live(
            session, token_hash=token_hash or (state.token_hash if state else ""), owner_id=record.owner_id
        )
        self._live[session_id] = live
        self._set_connection(session_id, live, connection)
        if self.state_store is not None:
            # Every later change (a turn, a voice choice) is written through the session's own
            # background writer: retried, reported if lasting, never on the audio path.
            session.on_state_change = lambda: self._store_state(session_id)
        session.outbox.attached = True
        self.deps.metrics.set_active_sessions(self.active_count)
        await self.records.save_state(session.context, self._live[session_id].token_hash)
        if self.relay is not None:  # another replica may keep a parked copy: it lets go
            await self.relay.claim(session_id)
        return session, resumed, None

    async def _reattach(
        self, session_id: uuid.UUID, live: _Live, connection: object, token_hash: str
    ) -> object | None:
        """A session live in this process gets ``connection``; returns the connection it replaces."""
        if live.token_hash and token_hash and live.token_hash != token_hash:
            raise TokenError("the session token does not belong to this session")
        if not live.holds_live_slot:
            self.check_capacity()
        if live.connection is None:
            self.check_user_capacity(live.owner_id)
        if live.parking is not None:
            parking, live.parking = live.parking, None
            await asyncio.gather(parking, return_exceptions=True)
        await live.session.resume()  # may raise CapacityError (the recognizer is full)
        if live.grace is not None:
            live.grace.cancel()
            live.grace = None
        previous = live.connection
        self._set_connection(session_id, live, connection)
        live.parked_at = None
        live.session.outbox.attached = True
        live.token_hash = live.token_hash or token_hash
        return previous

    async def _open(
        self, session_id: uuid.UUID, token: str | None
    ) -> tuple[ConversationSession, bool, ResumableSession | None]:
        """Start a session this process does not hold: fresh, or resumed from its stored state and
        turns (a reconnect that lands on another replica, docs/deploy.md)."""
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
        return session, resumed, state

    def detach(self, session_id: uuid.UUID, connection: object) -> None:
        """The connection closed: keep the session for ``grace_s`` seconds, then end it."""
        live = self._live.get(session_id)
        if live is None or live.connection is not connection:
            return  # already taken over by a newer connection
        self._set_connection(session_id, live, None)
        live.parked_at = time.monotonic()
        live.session.outbox.attached = False
        live.parking = asyncio.create_task(live.session.park(), name=f"park-{session_id}")
        live.grace = asyncio.create_task(self._expire(session_id), name=f"grace-{session_id}")
        self.deps.metrics.set_active_sessions(self.active_count)
        self._evict_parked()

    def release_parked(self, session_id: uuid.UUID) -> None:
        """Another process resumed the session: drop the copy parked here without touching its
        stored state (which the other process now writes) and without ending it."""
        live = self._live.get(session_id)
        if live is None or live.holds_live_slot:
            return
        self._drop(session_id, save=False)
        log.info("session %s: resumed by another replica; released here", session_id)

    def _drop(self, session_id: uuid.UUID, *, save: bool) -> None:
        item = self._pop_live(session_id)
        if item is None:
            return
        if item.grace is not None:
            item.grace.cancel()
        task = asyncio.create_task(self._release(item, session_id, save), name=f"release-{session_id}")
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)
        self.deps.metrics.set_active_sessions(self.active_count)

    def _evict_parked(self) -> None:
        """Drop the oldest parked sessions from memory past ``max_parked``; their resumable state
        stays in the store, so a reconnect still resumes them (rebuilt, as on another replica)."""
        excess = self.admission.parked_excess(self.slot_counts())
        if not excess:
            return
        parked = [
            (item.parked_at or 0.0, sid)
            for sid in self._unconnected
            if not (item := self._live[sid]).holds_live_slot
        ]
        for _, session_id in sorted(parked)[:excess]:
            self._drop(session_id, save=True)
            log.info("session %s: evicted from memory (parked limit); resumable from its state", session_id)

    async def _release(self, item: _Live, session_id: uuid.UUID, save: bool) -> None:
        if save:
            await self.records.save_state(item.session.context, item.token_hash, ttl_s=self.grace_s + 1.0)
        await item.session.aclose()
        await self.deps.replies.forget(session_id)

    async def _expire(self, session_id: uuid.UUID) -> None:
        live = self._live.get(session_id)
        if live is not None:
            await self.records.save_state(live.session.context, live.token_hash, ttl_s=self.grace_s + 1.0)
        await asyncio.sleep(self.grace_s)
        await self.close(session_id, delete_state=True)

    async def close(self, session_id: uuid.UUID, *, delete_state: bool = False) -> None:
        """End a live session and release its resources."""
        live = self._pop_live(session_id)
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
        if self._evictions:
            await asyncio.gather(*self._evictions, return_exceptions=True)
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
