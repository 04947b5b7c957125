"""Deleting a person's data (docs/security.md, "Delete my data").

For a session: the live conversation is ended, the stored objects are removed (those the rows point
at, and any under the session's keys that no row points at yet), the resumable state is dropped,
then the rows (prosody, reply audio, memories with their vectors, transcriptions, summary, turns,
the session). Objects go before rows, so an erasure cut short leaves rows that lead to what is left;
running it again finishes the job, and running it on what is gone removes nothing and succeeds.
Queued background tasks (HQ pass, prosody) of an erased session find the session gone and store
nothing (``avatar.application.conversation.hq``, ``avatar.application.prosody``).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from avatar.application.conversation import SessionManager
from avatar.application.ports.session_state import SessionStateStore
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.voice_profiles import profile_prefix
from avatar.domain.storage_keys import RAW_INPUTS, SYNTHESIZED, VOICE_PROFILES

log = logging.getLogger(__name__)

_PREFIXES = (RAW_INPUTS, SYNTHESIZED, VOICE_PROFILES)


def key_of(url: str) -> str | None:
    """The object key inside a stored URL (``s3://bucket/key``, ``file:///root/key``)."""
    positions = [url.find(p) for p in _PREFIXES if p in url]
    return url[min(positions) :] if positions else None


@dataclass
class ErasureReport:
    """What an erasure removed: rows per table, objects, and whether the account went too."""

    rows: Counter[str] = field(default_factory=Counter)
    objects: int = 0
    sessions: list[uuid.UUID] = field(default_factory=list)
    voice_profiles: list[uuid.UUID] = field(default_factory=list)
    account_deleted: bool = False

    def add_rows(self, counts: dict[str, int]) -> None:
        self.rows.update({k: v for k, v in counts.items() if v})


class DataEraser:
    """Removes sessions, voice profiles and accounts with everything stored for them."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        object_store: ObjectStore,
        sessions: SessionManager | None = None,
        state_store: SessionStateStore | None = None,
    ) -> None:
        self._uow = uow
        self._store = object_store
        self._sessions = sessions
        self._state = state_store

    async def _delete_keys(self, keys: Iterable[str]) -> int:
        removed = 0
        for key in sorted(set(keys)):
            if await self._store.exists(key):
                await self._store.delete(key)
                removed += 1
        return removed

    async def _session_keys(self, session_id: uuid.UUID, turns: list[uuid.UUID], urls: list[str]) -> set[str]:
        keys = {k for k in (key_of(u) for u in urls) if k}
        # Objects written before (or without) their row: input audio keys carry the session id,
        # reply audio keys the turn id (docs/design-notes.md §5 layout).
        sid = str(session_id)
        keys.update(k for k in await self._store.list_keys(RAW_INPUTS) if sid in k)
        if turns:
            ids = [str(t) for t in turns]
            keys.update(k for k in await self._store.list_keys(SYNTHESIZED) if any(i in k for i in ids))
        return keys

    async def erase_session(
        self, session_id: uuid.UUID, report: ErasureReport | None = None
    ) -> ErasureReport:
        """Remove one session and everything under it (idempotent)."""
        report = report or ErasureReport()
        if self._sessions is not None:
            await self._sessions.close(session_id)
        async with self._uow() as tx:
            turns = await tx.erasure.turns_of(session_id)
            urls = await tx.erasure.object_urls_of(session_id)
        report.objects += await self._delete_keys(await self._session_keys(session_id, turns, urls))
        if self._state is not None:
            await self._state.delete(session_id)
        async with self._uow() as tx:
            counts = await tx.erasure.erase_session(session_id)
            await tx.commit()
        report.add_rows(counts)
        if counts.get("sessions"):
            report.sessions.append(session_id)
        return report

    async def erase_user(self, user_id: uuid.UUID, *, delete_account: bool) -> ErasureReport:
        """Remove every session and voice profile of a user (and the account itself if asked)."""
        report = ErasureReport()
        async with self._uow() as tx:
            sessions = await tx.erasure.sessions_of(user_id)
            profiles = await tx.erasure.voice_profiles_of(user_id)
        for session_id in sessions:
            await self.erase_session(session_id, report)
        for profile_id in profiles:
            report.objects += await self._store.delete_prefix(profile_prefix(profile_id))
            async with self._uow() as tx:
                if await tx.voice_profiles.delete(profile_id):
                    report.rows["voice_profiles"] += 1
                    report.voice_profiles.append(profile_id)
                await tx.commit()
        if delete_account:
            async with self._uow() as tx:
                # The credentials go with the user (foreign key cascade).
                if await tx.accounts.delete_user(user_id):
                    report.rows["users"] += 1
                    report.account_deleted = True
                await tx.commit()
        return report
