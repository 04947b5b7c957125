"""The instant engines' in-memory unit of work (load testing only, docs/deploy.md): it stays
transactional while copying the tables at most once per unit of work, on first use."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from avatar.domain.models import Session
from avatar.infrastructure.instant.storage import InMemoryDatabase, Tables


class CountingDatabase(InMemoryDatabase):
    def __init__(self) -> None:
        super().__init__()
        self.copies = 0

    def snapshot(self) -> Tables:
        self.copies += 1
        return super().snapshot()


def _session() -> Session:
    return Session(session_id=uuid.uuid4(), start_time=datetime.now(UTC))


async def test_commit_publishes_rollback_and_exit_discard_with_one_copy_per_unit() -> None:
    db = CountingDatabase()
    kept, dropped, late = _session(), _session(), _session()
    async with db() as uow:
        await uow.sessions.add(kept)
        await uow.commit()
    assert db.copies == 1
    async with db() as uow:
        await uow.sessions.add(dropped)  # never committed
    async with db() as uow:
        await uow.sessions.add(late)
        await uow.rollback()
        assert await uow.sessions.get(late.session_id) is None
        await uow.commit()
    async with db() as uow:
        assert await uow.sessions.get(kept.session_id) == kept
        assert await uow.sessions.get(dropped.session_id) is None
        assert await uow.sessions.get(late.session_id) is None
    assert db.copies == 5  # one per unit of work, plus one after the rollback's read


async def test_writes_after_a_commit_in_the_same_unit_are_isolated_until_committed() -> None:
    db = CountingDatabase()
    first, second = _session(), _session()
    async with db() as uow:
        await uow.sessions.add(first)
        await uow.commit()
        await uow.sessions.add(second)
        async with db() as other:
            assert await other.sessions.get(first.session_id) == first
            assert await other.sessions.get(second.session_id) is None
        await uow.commit()
    async with db() as uow:
        assert await uow.sessions.get(second.session_id) == second


@pytest.mark.parametrize("commits", [0, 3])
async def test_a_unit_that_touches_nothing_copies_nothing(commits: int) -> None:
    db = CountingDatabase()
    async with db() as uow:
        for _ in range(commits):
            await uow.commit()
    assert db.copies == 0 and db.commits == commits
