"""In-memory storage for the instant engine set: an object store and a transactional database.

Both satisfy the storage ports (``ObjectStore``, ``UnitOfWorkFactory``) for one process: a unit
of work stages its changes over the committed tables (:class:`StagedTable`: its own writes and
deletions, nothing copied) and applies them on ``commit``, row by row, so two units of work that
overlap in time both keep their writes (a later commit no longer replaces the whole tables).
"""

from __future__ import annotations

import builtins
import math
import uuid
from collections.abc import (
    Callable,
    Hashable,
    ItemsView,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client import Gauge

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.storage import AuditEntry, Credential, MemoryHit, StoredObject
from avatar.domain.errors import DomainError, InvalidInputError, NotFoundError
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
from avatar.domain.storage_keys import key_in_url

#: What the in-memory object stores of this process hold: ``avatar bench soak`` tells the audio a
#: soak stores (kept by design, docs/deploy.md "Load testing") from memory that leaks.
STORED_BYTES = Gauge("instant_object_store_bytes", "Bytes held by the in-memory object store")


class InMemoryObjectStore:
    """Objects in a dict; URLs are ``s3://{bucket}/{key}`` so they map back to keys as S3's do."""

    def __init__(self, bucket: str = "avatar-audio") -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, str]] = {}

    def _drop(self, key: str) -> None:
        old = self.objects.pop(key, None)
        if old is not None:
            STORED_BYTES.dec(len(old[0]))

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self._drop(key)
        self.objects[key] = (bytes(data), content_type)
        STORED_BYTES.inc(len(data))
        return f"s3://{self.bucket}/{key}"

    async def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise NotFoundError(f"no object {key}")
        return self.objects[key][0]

    async def exists(self, key: str) -> bool:
        return key in self.objects

    async def delete(self, key: str) -> None:
        self._drop(key)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for k in keys:
            self._drop(k)
        return len(keys)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    async def list_objects(self, prefix: str) -> list[StoredObject]:
        return [StoredObject(k, len(self.objects[k][0])) for k in await self.list_keys(prefix)]

    async def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        return f"http://in-memory/{self.bucket}/{key}?expires={int(expires.total_seconds())}"

    async def health(self) -> ComponentHealth:
        return ComponentHealth("object_store", True, "in memory")


MemoryRow = tuple[uuid.UUID, uuid.UUID | None, str, str, npt.NDArray[np.float64]]


class _MemoryIndex:
    """The rows of an append-only memory list as one float32 matrix plus their sessions as codes,
    grown in place (capacity doubles): a search is one matrix product instead of stacking every
    vector again, and the ``(turn, role)`` check a set lookup (docs/benchmarks.md, "load")."""

    def __init__(self) -> None:
        self.n = 0
        self.last: MemoryRow | None = None
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.codes = np.zeros(0, dtype=np.int32)
        self.session_codes: dict[uuid.UUID, int] = {}
        self.keys: set[tuple[uuid.UUID, str]] = set()

    def valid_for(self, rows: list[MemoryRow]) -> bool:
        return self.n <= len(rows) and (self.n == 0 or rows[self.n - 1] is self.last)

    def extend(self, rows: list[MemoryRow]) -> None:
        new = rows[self.n :]
        if not new:
            return
        dim = len(new[0][4])
        if self.matrix.shape[1] != dim and self.n == 0:
            self.matrix = np.zeros((0, dim), dtype=np.float32)
        need = self.n + len(new)
        if need > self.matrix.shape[0]:
            capacity = max(need, 2 * self.matrix.shape[0], 64)
            grown = np.zeros((capacity, self.matrix.shape[1]), dtype=np.float32)
            grown[: self.n] = self.matrix[: self.n]
            codes = np.zeros(capacity, dtype=np.int32)
            codes[: self.n] = self.codes[: self.n]
            self.matrix, self.codes = grown, codes
        for i, row in enumerate(new, start=self.n):
            self.matrix[i] = row[4]
            self.codes[i] = self.session_codes.setdefault(row[0], len(self.session_codes))
            if row[1] is not None:
                self.keys.add((row[1], row[2]))
        self.n = need
        self.last = rows[need - 1]


class MemoryList(list[MemoryRow]):
    """The memories table: a list of rows (session, turn, role, text, unit vector) with a search
    index over them. A unit of work's fork searches its committed list's index and its own few
    new rows beside it: a fork that grew the shared index made it invalid for the committed list,
    which then rebuilt it from every row on its next search (docs/benchmarks.md, "load": two thirds
    of the server's time at 500 sessions)."""

    def __init__(self, rows: Sequence[MemoryRow] = (), *, base: MemoryList | None = None) -> None:
        super().__init__(rows)
        self._index: _MemoryIndex | None = None
        #: The committed list this one was forked from, and its length then.
        self._base = base
        self._from = len(self) if base is not None else 0

    def fork(self) -> MemoryList:
        return MemoryList(self, base=self)

    @property
    def committed(self) -> MemoryList:
        """The rows :meth:`search_index` covers (its positions index this list)."""
        return self._base if self._base is not None else self

    def staged(self) -> list[MemoryRow]:
        """A fork's own new rows (not in the index)."""
        return self[self._from :] if self._base is not None else []

    def search_index(self) -> _MemoryIndex:
        if self._base is not None:
            return self._base.search_index()
        if self._index is None or not self._index.valid_for(self):
            self._index = _MemoryIndex()
        self._index.extend(self)
        return self._index


K = TypeVar("K")
V = TypeVar("V")
G = TypeVar("G", bound=Hashable)


class GroupIndex(Generic[K, V, G]):
    """The committed rows of one table grouped by a column (``group_of``): a session's turns, a
    turn's transcriptions and audio, found without scanning every stored row (docs/benchmarks.md,
    "load": the scans grew with every turn stored in the process)."""

    __slots__ = ("group_of", "groups")

    def __init__(self, group_of: Callable[[V], G]) -> None:
        self.group_of = group_of
        #: group -> its keys in the order they were committed (a dict as an ordered set).
        self.groups: dict[G, dict[K, None]] = {}

    def add(self, key: K, value: V) -> None:
        self.groups.setdefault(self.group_of(value), {})[key] = None

    def discard(self, key: K, value: V) -> None:
        group = self.group_of(value)
        keys = self.groups.get(group)
        if keys is not None:
            keys.pop(key, None)
            if not keys:
                del self.groups[group]


def _turn_session(turn: ConversationTurn) -> uuid.UUID:
    return turn.session_id


def _session_owner(session: Session) -> uuid.UUID | None:
    return session.owner_id


def _transcription_turn(row: tuple[uuid.UUID, Transcription, str | None, list[str]]) -> uuid.UUID:
    return row[0]


def _score_transcription(score: ProsodyScore) -> uuid.UUID:
    return score.transcription_id


def _audio_turn(audio: SynthesizedAudio) -> uuid.UUID:
    return audio.turn_id


def _user_name(row: tuple[User, str | None]) -> str:
    return row[0].name


def _credential_id(credential: Credential) -> uuid.UUID:
    return credential.credential_id


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
    memories: MemoryList = field(default_factory=MemoryList)
    summaries: dict[uuid.UUID, tuple[str, int]] = field(default_factory=dict)
    users: dict[uuid.UUID, tuple[User, str | None]] = field(default_factory=dict)
    credentials: dict[str, Credential] = field(default_factory=dict)
    audit: list[AuditEntry] = field(default_factory=list)
    feedback: dict[uuid.UUID, TurnFeedback] = field(default_factory=dict)
    #: transcription id -> when the retention sweep removed its input audio.
    inputs_expired: dict[uuid.UUID, datetime] = field(default_factory=dict)
    #: A user's sessions: every memory recall asks for them (docs/benchmarks.md, "load").
    sessions_by_owner: GroupIndex[uuid.UUID, Session, uuid.UUID | None] = field(
        default_factory=lambda: GroupIndex(_session_owner)
    )
    turns_by_session: GroupIndex[uuid.UUID, ConversationTurn, uuid.UUID] = field(
        default_factory=lambda: GroupIndex(_turn_session)
    )
    transcriptions_by_turn: GroupIndex[
        uuid.UUID, tuple[uuid.UUID, Transcription, str | None, list[str]], uuid.UUID
    ] = field(default_factory=lambda: GroupIndex(_transcription_turn))
    prosody_by_transcription: GroupIndex[uuid.UUID, ProsodyScore, uuid.UUID] = field(
        default_factory=lambda: GroupIndex(_score_transcription)
    )
    synthesized_by_turn: GroupIndex[uuid.UUID, SynthesizedAudio, uuid.UUID] = field(
        default_factory=lambda: GroupIndex(_audio_turn)
    )
    users_by_name: GroupIndex[uuid.UUID, tuple[User, str | None], str] = field(
        default_factory=lambda: GroupIndex(_user_name)
    )
    credentials_by_id: GroupIndex[str, Credential, uuid.UUID] = field(
        default_factory=lambda: GroupIndex(_credential_id)
    )


_GONE = object()  # a deleted row among a unit of work's changes
_MISSING = object()


class StagedTable(MutableMapping[K, V]):
    """One table as a unit of work sees it: the committed rows with the unit's own writes and
    deletions over them. Nothing is copied; :meth:`commit` applies the changes to the committed
    table row by row (docs/benchmarks.md, "load": a copy of every table per unit of work grew with
    the stored turns, and the last commit replaced what an overlapping one had written)."""

    __slots__ = ("_base", "_changes", "_index")

    def __init__(self, base: dict[K, V], index: GroupIndex[K, V, Any] | None = None) -> None:
        self._base = base
        self._changes: dict[K, Any] = {}  # a row, or _GONE
        self._index = index

    def keys_in(self, group: Hashable) -> builtins.list[K]:
        """The keys of the rows whose indexed column is ``group``, as this unit of work sees them:
        the committed rows from the index, corrected by the unit's own changes."""
        index = self._index
        if index is None:
            raise TypeError("this table has no group index")
        changes = self._changes
        found = [k for k in index.groups.get(group, ()) if k not in changes]
        found.extend(k for k, v in changes.items() if v is not _GONE and index.group_of(v) == group)
        return found

    def values_in(self, group: Hashable) -> builtins.list[V]:
        return [self[k] for k in self.keys_in(group)]

    def __getitem__(self, key: K) -> V:
        if self._changes:
            value = self._changes.get(key, _MISSING)
            if value is _GONE:
                raise KeyError(key)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
        return self._base[key]

    def __contains__(self, key: object) -> bool:
        if self._changes:
            value = self._changes.get(key, _MISSING)  # type: ignore[arg-type]
            if value is not _MISSING:
                return value is not _GONE
        return key in self._base

    def __setitem__(self, key: K, value: V) -> None:
        self._changes[key] = value

    def __delitem__(self, key: K) -> None:
        if key not in self:
            raise KeyError(key)
        self._changes[key] = _GONE

    def __iter__(self) -> Iterator[K]:
        return iter(self._base) if not self._changes else self._merged()

    def _merged(self) -> Iterator[K]:
        changes, base = self._changes, self._base
        for key in list(base):
            if changes.get(key, _MISSING) is not _GONE:
                yield key
        for key, value in list(changes.items()):
            if value is not _GONE and key not in base:
                yield key

    def __len__(self) -> int:
        if not self._changes:
            return len(self._base)
        return sum(1 for _ in self._merged())

    def items(self) -> ItemsView[K, V]:
        return self._base.items() if not self._changes else ItemsView(self)

    def values(self) -> ValuesView[V]:
        return self._base.values() if not self._changes else ValuesView(self)

    def replace_all(self, rows: Mapping[K, V]) -> None:
        """Make the table hold exactly ``rows`` (as deletions and writes of this unit of work)."""
        for key in [k for k in self if k not in rows]:
            del self[key]
        for key, value in rows.items():
            if self.get(key, _MISSING) is not value:
                self[key] = value

    def commit(self) -> None:
        base, index = self._base, self._index
        for key, value in self._changes.items():
            if index is not None and key in base:
                index.discard(key, base[key])
            if value is _GONE:
                base.pop(key, None)
            else:
                base[key] = value
                if index is not None:
                    index.add(key, value)
        self._changes.clear()


class StagedTables:
    """What a unit of work reads and writes: a :class:`StagedTable` over each committed table, and
    the two append-only lists (memories, audit) forked on first use; :meth:`commit` applies it all."""

    def __init__(self, base: Tables) -> None:
        self._base = base
        self.sessions = StagedTable(base.sessions, base.sessions_by_owner)
        self.turns = StagedTable(base.turns, base.turns_by_session)
        self.transcriptions = StagedTable(base.transcriptions, base.transcriptions_by_turn)
        self.prosody = StagedTable(base.prosody, base.prosody_by_transcription)
        self.profiles = StagedTable(base.profiles)
        self.synthesized = StagedTable(base.synthesized, base.synthesized_by_turn)
        self.summaries = StagedTable(base.summaries)
        self.users = StagedTable(base.users, base.users_by_name)
        self.credentials = StagedTable(base.credentials, base.credentials_by_id)
        self.feedback = StagedTable(base.feedback)
        self.inputs_expired = StagedTable(base.inputs_expired)
        self._memories: MemoryList | None = None
        self._memories_from = 0  # rows of the committed list when it was forked
        self._memories_source: MemoryList | None = None
        self._memories_replaced = False
        self._audit: list[AuditEntry] | None = None
        self._audit_from = 0

    def _tables(self) -> tuple[StagedTable[Any, Any], ...]:
        return (
            self.sessions,
            self.turns,
            self.transcriptions,
            self.prosody,
            self.profiles,
            self.synthesized,
            self.summaries,
            self.users,
            self.credentials,
            self.feedback,
            self.inputs_expired,
        )

    @property
    def memories(self) -> MemoryList:
        if self._memories is None:
            self._memories_source = self._base.memories
            self._memories = self._memories_source.fork()
            self._memories_from = len(self._memories)
        return self._memories

    def replace_memories(self, rows: MemoryList) -> None:
        """Erasure: the memories become ``rows`` (plus what other units commit meanwhile)."""
        _ = self.memories
        self._memories = rows
        self._memories_replaced = True

    @property
    def audit(self) -> list[AuditEntry]:
        if self._audit is None:
            self._audit = list(self._base.audit)
            self._audit_from = len(self._audit)
        return self._audit

    def commit(self) -> None:
        for table in self._tables():
            table.commit()
        base = self._base
        if self._memories is not None:
            mine = self._memories
            if self._memories_replaced:
                theirs = (
                    base.memories[self._memories_from :] if base.memories is self._memories_source else []
                )
                base.memories = MemoryList([*mine, *theirs])
            else:
                base.memories.extend(mine[self._memories_from :])
            self._memories = None
            self._memories_replaced = False
        if self._audit is not None:
            base.audit.extend(self._audit[self._audit_from :])
            self._audit = None


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return dot / (na * nb)


class _Repo:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self.uow = uow

    @property
    def t(self) -> StagedTables:
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

    async def list_recent(self, limit: int = 50, owner_id: uuid.UUID | None = None) -> list[Session]:
        mine = self.t.sessions.values() if owner_id is None else self.t.sessions.values_in(owner_id)
        return sorted(mine, key=lambda s: s.start_time, reverse=True)[:limit]


class InMemoryTurnRepository(_Repo):
    async def add(self, turn: ConversationTurn) -> None:
        for other in self.t.turns.values_in(turn.session_id):
            if other.turn_number == turn.turn_number:
                raise InvalidInputError("duplicate (session_id, turn_number)", code="CONFLICT")
        self.t.turns[turn.turn_id] = replace(turn)

    async def update(self, turn: ConversationTurn) -> None:
        self.t.turns[turn.turn_id] = replace(turn)

    async def get(self, turn_id: uuid.UUID) -> ConversationTurn | None:
        t = self.t.turns.get(turn_id)
        return replace(t) if t else None

    async def list_for_session(self, session_id: uuid.UUID) -> list[ConversationTurn]:
        return sorted(self.t.turns.values_in(session_id), key=lambda t: t.turn_number)


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

    async def owner_of(self, transcription_id: uuid.UUID) -> uuid.UUID | None:
        row = self.t.transcriptions.get(transcription_id)
        turn = self.t.turns.get(row[0]) if row else None
        session = self.t.sessions.get(turn.session_id) if turn else None
        return session.owner_id if session else None

    async def audio_expired_at(self, transcription_id: uuid.UUID) -> datetime | None:
        return self.t.inputs_expired.get(transcription_id)


class InMemoryProsodyRepository(_Repo):
    async def add(self, score: ProsodyScore) -> None:
        self.t.prosody[score.score_id] = score

    async def get_for_transcription(self, transcription_id: uuid.UUID) -> ProsodyScore | None:
        return next(iter(self.t.prosody.values_in(transcription_id)), None)

    async def list_for_session(self, session_id: uuid.UUID) -> list[ProsodyScore]:
        turns = sorted(self.t.turns.values_in(session_id), key=lambda t: t.turn_number)
        ids = [tr for turn in turns for tr in self.t.transcriptions.keys_in(turn.turn_id)]
        return sorted((s for tr in ids for s in self.t.prosody.values_in(tr)), key=lambda s: s.analyzed_at)

    async def latest_reliable(
        self, session_id: uuid.UUID, limit: int, *, exclude_transcription_id: uuid.UUID | None = None
    ) -> list[ProsodyScore]:
        if limit <= 0:
            return []
        turn_of = {
            tr: turn.turn_number
            for turn in self.t.turns.values_in(session_id)
            for tr in self.t.transcriptions.keys_in(turn.turn_id)
            if tr != exclude_transcription_id
        }
        mine = [s for tr in turn_of for s in self.t.prosody.values_in(tr) if s.reliable]
        mine.sort(key=lambda s: (turn_of[s.transcription_id], s.analyzed_at))
        return mine[-limit:]


class InMemoryVoiceProfileRepository(_Repo):
    async def add(self, profile: VoiceProfile) -> None:
        self.t.profiles[profile.profile_id] = profile

    async def get(self, profile_id: uuid.UUID) -> VoiceProfile | None:
        return self.t.profiles.get(profile_id)

    async def list(self, owner_id: uuid.UUID | None = None) -> builtins.list[VoiceProfile]:
        return [p for p in self.t.profiles.values() if owner_id is None or p.user_id == owner_id]

    async def delete(self, profile_id: uuid.UUID) -> bool:
        return self.t.profiles.pop(profile_id, None) is not None

    async def nearest(
        self, embedding: Sequence[float], limit: int = 5, owner_id: uuid.UUID | None = None
    ) -> builtins.list[tuple[VoiceProfile, float]]:
        ranked = sorted(
            (
                (p, _cosine(p.embedding, embedding))
                for p in self.t.profiles.values()
                if owner_id is None or p.user_id == owner_id
            ),
            key=lambda pair: pair[1],
            reverse=True,
        )
        return ranked[:limit]


class InMemorySynthesizedAudioRepository(_Repo):
    async def add(self, audio: SynthesizedAudio) -> None:
        self.t.synthesized[audio.audio_id] = audio

    async def list_for_turn(self, turn_id: uuid.UUID) -> list[SynthesizedAudio]:
        return self.t.synthesized.values_in(turn_id)


class InMemoryMemoryRepository(_Repo):
    async def add(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        role: str,
        text: str,
        embedding: Sequence[float],
    ) -> None:
        rows = self.t.memories
        if turn_id is not None and (
            (turn_id, role) in rows.search_index().keys
            or any(r[1] == turn_id and r[2] == role for r in rows.staged())
        ):
            return  # one memory per turn and role, as in PostgreSQL
        vector = np.asarray(embedding, dtype=np.float64)
        vector /= float(np.linalg.norm(vector)) or 1.0
        self.t.memories.append((session_id, turn_id, role, text, vector))

    async def search(
        self,
        embedding: Sequence[float],
        limit: int = 5,
        session_id: uuid.UUID | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> list[MemoryHit]:
        rows = self.t.memories
        index = rows.search_index()
        committed = rows.committed
        allowed: builtins.list[uuid.UUID] | None = None
        if owner_id is not None:
            allowed = self.t.sessions.keys_in(owner_id)
        if session_id is not None:
            allowed = [session_id] if allowed is None or session_id in allowed else []
        query = np.asarray(embedding, dtype=np.float32)
        query /= float(np.linalg.norm(query)) or 1.0
        scored: builtins.list[tuple[MemoryRow, float]] = []
        if index.n:
            codes = index.codes[: index.n]
            if allowed is None:
                picked = np.arange(index.n)
            else:
                wanted = [index.session_codes[s] for s in allowed if s in index.session_codes]
                picked = np.flatnonzero(np.isin(codes, wanted))
            if 4 * len(picked) >= index.n:
                # Most rows are wanted (one owner's many sessions: the load bench): score them all in
                # place and pick after. Copying the picked rows out first cost ~1.9 ms a recall at
                # 3000 memories against ~0.05 ms (docs/benchmarks.md, "load").
                scores = (index.matrix[: index.n] @ query)[picked]
            else:
                scores = index.matrix[picked] @ query
            best = np.argsort(-scores, kind="stable")[:limit]
            scored = [(committed[int(picked[k])], float(scores[k])) for k in best]
        # This unit of work's own new rows, not in the index yet (a handful).
        allowed_set = set(allowed) if allowed is not None else None
        scored += [
            (row, float(np.dot(row[4], query)))
            for row in rows.staged()
            if allowed_set is None or row[0] in allowed_set
        ]
        scored.sort(key=lambda pair: -pair[1])  # stable: the index's order among equal scores
        return [MemoryHit(r[0], r[1], r[2], r[3], score) for r, score in scored[:limit]]


class InMemorySummaryRepository(_Repo):
    async def save(self, session_id: uuid.UUID, summary: str, covered_turns: int) -> None:
        self.t.summaries[session_id] = (summary, covered_turns)

    async def load(self, session_id: uuid.UUID) -> tuple[str, int] | None:
        return self.t.summaries.get(session_id)


class InMemoryAccountRepository(_Repo):
    async def add_user(self, user: User, password_hash: str | None = None) -> None:
        if self.t.users.keys_in(user.name):
            raise DomainError(f"a user named {user.name!r} exists")
        self.t.users[user.user_id] = (user, password_hash)

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        row = self.t.users.get(user_id)
        return row[0] if row else None

    async def get_user_by_name(self, name: str) -> User | None:
        return next((u for u, _ in self.t.users.values_in(name)), None)

    async def list_users(self) -> builtins.list[User]:
        return [u for u, _ in self.t.users.values()]

    async def delete_user(self, user_id: uuid.UUID) -> bool:
        if self.t.users.pop(user_id, None) is None:
            return False
        # The foreign keys cascade in SQL; do the same here.
        self.t.credentials.replace_all({k: c for k, c in self.t.credentials.items() if c.user_id != user_id})
        return True

    async def password_hash(self, user_id: uuid.UUID) -> str | None:
        row = self.t.users.get(user_id)
        return row[1] if row else None

    async def set_password(self, user_id: uuid.UUID, password_hash: str) -> None:
        user, _ = self.t.users[user_id]
        self.t.users[user_id] = (user, password_hash)

    async def add_credential(self, credential: Credential) -> None:
        self.t.credentials[credential.secret_hash] = credential

    async def find_credential(self, secret_hash: str) -> Credential | None:
        return self.t.credentials.get(secret_hash)

    async def consume_credential(self, secret_hash: str) -> Credential | None:
        return self.t.credentials.pop(secret_hash, None)

    async def delete_credential(self, secret_hash: str) -> bool:
        return self.t.credentials.pop(secret_hash, None) is not None

    async def touch_credential(self, credential_id: uuid.UUID, now: datetime) -> None:
        for key in self.t.credentials.keys_in(credential_id):
            self.t.credentials[key] = replace(self.t.credentials[key], last_used_at=now)

    async def audit(self, entry: AuditEntry) -> None:
        self.t.audit.append(entry)

    async def audit_entries(self, limit: int = 100) -> builtins.list[AuditEntry]:
        return self.t.audit[::-1][:limit]


class InMemoryErasureRepository(_Repo):
    async def sessions_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        return self.t.sessions.keys_in(owner_id)

    async def voice_profiles_of(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        return [pid for pid, p in self.t.profiles.items() if p.user_id == owner_id]

    async def turns_of(self, session_id: uuid.UUID) -> list[uuid.UUID]:
        return self.t.turns.keys_in(session_id)

    async def object_urls_of(self, session_id: uuid.UUID) -> list[str]:
        turns = set(await self.turns_of(session_id))
        inputs = [row[2] for turn in turns for row in self.t.transcriptions.values_in(turn) if row[2]]
        replies = [a.audio_url for turn in turns for a in self.t.synthesized.values_in(turn)]
        return [u for u in inputs if u is not None] + replies

    async def erase_session(self, session_id: uuid.UUID) -> dict[str, int]:
        t = self.t
        turns = set(await self.turns_of(session_id))
        trs = {k for turn in turns for k in t.transcriptions.keys_in(turn)}
        scores = [k for tr in trs for k in t.prosody.keys_in(tr)]
        audio = [k for turn in turns for k in t.synthesized.keys_in(turn)]
        counts = {
            "prosody": len(scores),
            "synthesized_audio": len(audio),
            "memories": len([m for m in t.memories if m[0] == session_id]),
            "transcriptions": len(trs),
            "summaries": int(session_id in t.summaries),
            "turns": len(turns),
            "sessions": int(session_id in t.sessions),
        }
        for k in scores:
            del t.prosody[k]
        for k in audio:
            del t.synthesized[k]
        t.replace_memories(MemoryList([m for m in t.memories if m[0] != session_id]))
        for k in trs:
            del t.transcriptions[k]
        t.summaries.pop(session_id, None)
        for k in turns:
            del t.turns[k]
        t.sessions.pop(session_id, None)
        return counts


class InMemoryFeedbackRepository(_Repo):
    async def put(self, feedback: TurnFeedback) -> None:
        if feedback.turn_id not in self.t.turns:
            raise InvalidInputError(f"no turn {feedback.turn_id} to rate", code="CONFLICT")
        self.t.feedback[feedback.turn_id] = replace(feedback)

    async def get(self, turn_id: uuid.UUID) -> TurnFeedback | None:
        f = self.t.feedback.get(turn_id)
        return replace(f) if f else None

    async def list(
        self, *, rating: Rating | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> builtins.list[TurnFeedback]:
        def wanted(f: TurnFeedback) -> bool:
            at = f.created_at
            return (
                (rating is None or f.rating is rating)
                and (since is None or (at is not None and at >= since))
                and (until is None or (at is not None and at < until))
            )

        found = [replace(f) for f in self.t.feedback.values() if wanted(f)]
        return sorted(found, key=lambda f: f.created_at or datetime.min.replace(tzinfo=UTC))


class InMemoryRetentionRepository(_Repo):
    async def mark_expired(self, keys: Sequence[str], when: datetime) -> int:
        wanted, changed = set(keys), 0
        for tid, (_turn, _tr, url, _partials) in self.t.transcriptions.items():
            if url and key_in_url(url) in wanted and tid not in self.t.inputs_expired:
                self.t.inputs_expired[tid] = when
                changed += 1
        for audio_id, audio in list(self.t.synthesized.items()):
            if audio.expired_at is None and key_in_url(audio.audio_url) in wanted:
                self.t.synthesized[audio_id] = replace(audio, expired_at=when)
                changed += 1
        return changed

    async def replace_input_audio(self, old_key: str, new_url: str) -> int:
        changed = 0
        for tid, (turn, tr, url, partials) in list(self.t.transcriptions.items()):
            if url and key_in_url(url) == old_key:
                self.t.transcriptions[tid] = (turn, tr, new_url, partials)
                changed += 1
        return changed


class InMemoryUnitOfWork:
    """Transactional over a shared :class:`InMemoryDatabase`: changes are visible after ``commit``."""

    def __init__(self, db: InMemoryDatabase) -> None:
        self.db = db
        #: Made on first use: the unit's changes over the committed tables (:class:`StagedTables`).
        self._staged: StagedTables | None = None
        self.sessions = InMemorySessionRepository(self)
        self.turns = InMemoryTurnRepository(self)
        self.transcriptions = InMemoryTranscriptionRepository(self)
        self.prosody = InMemoryProsodyRepository(self)
        self.voice_profiles = InMemoryVoiceProfileRepository(self)
        self.synthesized = InMemorySynthesizedAudioRepository(self)
        self.memories = InMemoryMemoryRepository(self)
        self.summaries = InMemorySummaryRepository(self)
        self.accounts = InMemoryAccountRepository(self)
        self.erasure = InMemoryErasureRepository(self)
        self.feedback = InMemoryFeedbackRepository(self)
        self.retention = InMemoryRetentionRepository(self)
        self.committed = False

    @property
    def staged(self) -> StagedTables:
        if self._staged is None:
            self._staged = self.db.stage()
        return self._staged

    async def __aenter__(self) -> Self:
        self._staged = None
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        if self._staged is not None:
            self._staged.commit()
        self.db.commits += 1
        self._staged = None
        self.committed = True

    async def rollback(self) -> None:
        self._staged = None


class InMemoryDatabase:
    """The shared state behind every :class:`InMemoryUnitOfWork`; also the factory (call it)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.commits = 0

    def stage(self) -> StagedTables:
        """A unit of work's view of the tables (nothing copied)."""
        return StagedTables(self.tables)

    def __call__(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    async def health(self) -> ComponentHealth:
        return ComponentHealth("database", True, "in memory")
