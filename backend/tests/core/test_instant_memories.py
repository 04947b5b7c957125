"""The in-memory memories table (instant engines, tests): search by owner and session, one memory
per turn and role, and units of work that roll back or commit over a shared search index."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from avatar.domain.models import Session
from avatar.infrastructure.instant import storage
from avatar.infrastructure.instant.storage import InMemoryDatabase

DIM = 16


def _vector(rng: np.random.Generator) -> list[float]:
    return [float(x) for x in rng.normal(size=DIM)]


async def _sessions(db: InMemoryDatabase, owners: list[uuid.UUID]) -> list[Session]:
    made = [dataclasses.replace(Session.start(datetime.now(UTC)), owner_id=o) for o in owners]
    async with db() as tx:
        for session in made:
            await tx.sessions.add(session)
        await tx.commit()
    return made


def _expected(rows: list[tuple[uuid.UUID, str, list[float]]], query: list[float], limit: int) -> list[str]:
    q = np.asarray(query) / np.linalg.norm(query)
    scored = [(float(np.asarray(v) @ q / np.linalg.norm(v)), text) for _, text, v in rows]
    return [text for _, text in sorted(scored, key=lambda p: -p[0])[:limit]]


async def test_search_matches_a_brute_force_ranking_by_owner_and_session() -> None:
    rng = np.random.default_rng(7)
    db = InMemoryDatabase()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sessions = await _sessions(db, [alice, alice, bob])
    stored: list[tuple[uuid.UUID, str, list[float]]] = []
    for n in range(60):  # many units of work, each appending: the index grows in place
        session = sessions[n % 3]
        vector = _vector(rng)
        async with db() as tx:
            await tx.memories.add(session.session_id, uuid.uuid4(), "user", f"m{n}", vector)
            await tx.commit()
        stored.append((session.session_id, f"m{n}", vector))
    query = _vector(rng)
    async with db() as tx:
        everything = await tx.memories.search(query, limit=5)
        of_alice = await tx.memories.search(query, limit=5, owner_id=alice)
        one = await tx.memories.search(query, limit=5, session_id=sessions[1].session_id, owner_id=alice)
        not_hers = await tx.memories.search(query, limit=5, session_id=sessions[2].session_id, owner_id=alice)
    assert [h.text for h in everything] == _expected(stored, query, 5)
    alices = {sessions[0].session_id, sessions[1].session_id}
    assert [h.text for h in of_alice] == _expected([r for r in stored if r[0] in alices], query, 5)
    assert [h.text for h in one] == _expected([r for r in stored if r[0] == sessions[1].session_id], query, 5)
    assert not_hers == []
    assert all(h.score >= everything[-1].score for h in everything)


async def test_a_rolled_back_memory_is_neither_found_nor_blocks_a_later_one() -> None:
    rng = np.random.default_rng(8)
    db = InMemoryDatabase()
    [session] = await _sessions(db, [uuid.uuid4()])
    turn = uuid.uuid4()
    vector = _vector(rng)
    async with db() as tx:  # not committed
        await tx.memories.add(session.session_id, turn, "user", "rolled back", vector)
        assert [h.text for h in await tx.memories.search(vector, limit=3)] == ["rolled back"]
    async with db() as tx:
        assert await tx.memories.search(vector, limit=3) == []
        await tx.memories.add(session.session_id, turn, "user", "kept", vector)
        await tx.memories.add(session.session_id, turn, "user", "a second one for the turn", vector)
        await tx.commit()
    async with db() as tx:
        assert [h.text for h in await tx.memories.search(vector, limit=3)] == ["kept"]


async def test_two_units_of_work_appending_side_by_side_each_see_their_own_rows() -> None:
    rng = np.random.default_rng(9)
    db = InMemoryDatabase()
    [session] = await _sessions(db, [uuid.uuid4()])
    a_vec, b_vec = _vector(rng), _vector(rng)
    async with db() as a, db() as b:
        await a.memories.add(session.session_id, uuid.uuid4(), "user", "from a", a_vec)
        await b.memories.add(session.session_id, uuid.uuid4(), "user", "from b", b_vec)
        assert [h.text for h in await a.memories.search(a_vec, limit=5)] == ["from a"]
        assert [h.text for h in await b.memories.search(b_vec, limit=5)] == ["from b"]
        await b.commit()
    async with db() as tx:
        assert [h.text for h in await tx.memories.search(b_vec, limit=5)] == ["from b"]


async def test_erasing_a_session_removes_its_memories_from_search() -> None:
    rng = np.random.default_rng(10)
    db = InMemoryDatabase()
    owner = uuid.uuid4()
    gone, kept = await _sessions(db, [owner, owner])
    vector = _vector(rng)
    async with db() as tx:
        await tx.memories.add(gone.session_id, uuid.uuid4(), "user", "gone", vector)
        await tx.memories.add(kept.session_id, uuid.uuid4(), "user", "kept", vector)
        await tx.commit()
    async with db() as tx:
        counts = await tx.erasure.erase_session(gone.session_id)
        await tx.commit()
    assert counts["memories"] == 1
    async with db() as tx:
        assert [h.text for h in await tx.memories.search(vector, limit=5, owner_id=owner)] == ["kept"]


async def test_interleaved_and_rolled_back_units_of_work_never_rebuild_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A unit of work's own rows stay beside the committed index: when a unit grew the shared index,
    the committed list (and every unit forked from it) found it invalid and rebuilt it from every
    row, two thirds of the server's time at 500 sessions (docs/benchmarks.md, "load")."""
    builds = 0
    original = storage._MemoryIndex

    class Counted(original):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            nonlocal builds
            builds += 1
            super().__init__()

    monkeypatch.setattr(storage, "_MemoryIndex", Counted)
    rng = np.random.default_rng(11)
    db = InMemoryDatabase()
    [session] = await _sessions(db, [uuid.uuid4()])
    for n in range(20):
        writer, reader, dropped = db(), db(), db()
        async with writer, reader, dropped:
            vector = _vector(rng)
            await writer.memories.add(session.session_id, uuid.uuid4(), "user", f"m{n}", vector)
            await dropped.memories.add(session.session_id, uuid.uuid4(), "user", "never kept", vector)
            hits = await reader.memories.search(vector, limit=30)
            assert {h.text for h in hits} == {f"m{i}" for i in range(n)}  # committed rows only
            await writer.commit()
    async with db() as tx:
        hits = await tx.memories.search(_vector(rng), limit=30)
    assert sorted(h.text for h in hits) == sorted(f"m{i}" for i in range(20))
    assert builds == 1
