"""The instant engines' in-memory unit of work (load testing only, docs/deploy.md): it stays
transactional while copying nothing (its changes are staged over the committed tables, made on
first use), and units of work that overlap in time both keep their writes."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from avatar.application.ports.storage import Credential, CredentialKind
from avatar.domain.errors import DomainError
from avatar.domain.models import ConversationTurn, Session, User
from avatar.infrastructure.instant.storage import GroupIndex, InMemoryDatabase, StagedTable, StagedTables


class CountingDatabase(InMemoryDatabase):
    def __init__(self) -> None:
        super().__init__()
        self.copies = 0  # stagings: each is a view over the committed tables, not a copy

    def stage(self) -> StagedTables:
        self.copies += 1
        return super().stage()


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


def _turn(session: Session, number: int) -> ConversationTurn:
    return ConversationTurn(
        turn_id=uuid.uuid4(), session_id=session.session_id, turn_number=number, user_input=f"turn {number}"
    )


async def test_units_of_work_that_overlap_both_keep_their_writes() -> None:
    """The lost update of the former snapshot design: the later commit replaced every table with
    its own copy, dropping what an overlapping unit had committed meanwhile."""
    db = InMemoryDatabase()
    a, b = _session(), _session()
    async with db() as uow:
        await uow.sessions.add(a)
        await uow.sessions.add(b)
        await uow.commit()
    first, second = db(), db()
    async with first, second:
        await first.turns.add(_turn(a, 1))
        await second.turns.add(_turn(b, 1))
        assert await second.turns.list_for_session(a.session_id) == []  # not committed yet
        await first.commit()
        await second.commit()
    async with db() as uow:
        assert [t.user_input for t in await uow.turns.list_for_session(a.session_id)] == ["turn 1"]
        assert [t.user_input for t in await uow.turns.list_for_session(b.session_id)] == ["turn 1"]


async def test_erasing_a_session_keeps_what_another_unit_committed_meanwhile() -> None:
    db = InMemoryDatabase()
    gone, kept = _session(), _session()
    async with db() as uow:
        for s in (gone, kept):
            await uow.sessions.add(s)
            await uow.turns.add(_turn(s, 1))
            await uow.memories.add(s.session_id, None, "user", "hello", [1.0, 0.0])
        await uow.commit()
    erasing, writing = db(), db()
    async with erasing, writing:
        counts = await erasing.erasure.erase_session(gone.session_id)
        assert counts["turns"] == 1 and counts["memories"] == 1
        await writing.turns.add(_turn(kept, 2))
        await writing.memories.add(kept.session_id, None, "user", "again", [0.0, 1.0])
        await writing.commit()
        await erasing.commit()
    async with db() as uow:
        assert await uow.sessions.get(gone.session_id) is None
        assert await uow.turns.list_for_session(gone.session_id) == []
        assert [t.turn_number for t in await uow.turns.list_for_session(kept.session_id)] == [1, 2]
        hits = await uow.memories.search([1.0, 1.0], limit=10)
        assert sorted(h.text for h in hits) == ["again", "hello"]
        assert {h.session_id for h in hits} == {kept.session_id}


def test_a_staged_table_reads_its_own_writes_and_deletions_over_the_committed_rows() -> None:
    base = {"a": 1, "b": 2, "c": 3}
    staged: StagedTable[str, int] = StagedTable(base)
    assert dict(staged.items()) == base and len(staged) == 3
    staged["b"] = 20
    staged["d"] = 4
    del staged["a"]
    assert "a" not in staged and staged["b"] == 20 and staged.get("a") is None
    assert list(staged) == ["b", "c", "d"] and list(staged.values()) == [20, 3, 4] and len(staged) == 3
    with pytest.raises(KeyError):
        del staged["a"]
    assert base == {"a": 1, "b": 2, "c": 3}  # nothing is visible before the commit
    staged.replace_all({"c": 3, "e": 5})
    assert dict(staged.items()) == {"c": 3, "e": 5}
    staged.commit()
    assert base == {"c": 3, "e": 5} and dict(staged.items()) == base


def test_a_group_index_follows_staged_writes_moves_and_deletions() -> None:
    """The index that replaces scans of every stored row (a session's turns, a turn's audio): what
    one unit of work sees is the committed groups corrected by its own changes, and a commit keeps
    the index equal to a scan."""
    base = {"a": 1, "b": 2, "c": 13}
    index: GroupIndex[str, int, int] = GroupIndex(lambda v: v // 10)
    for k, v in base.items():
        index.add(k, v)
    staged: StagedTable[str, int] = StagedTable(base, index)
    staged["b"] = 12  # moves from group 0 to group 1
    staged["d"] = 5
    del staged["a"]
    assert sorted(staged.keys_in(0)) == ["d"] and sorted(staged.values_in(1)) == [12, 13]
    assert {g: set(k) for g, k in index.groups.items()} == {0: {"a", "b"}, 1: {"c"}}  # nothing committed yet
    other: StagedTable[str, int] = StagedTable(base, index)
    assert sorted(other.keys_in(0)) == ["a", "b"]
    staged.commit()
    scan: dict[int, set[str]] = {}
    for k, v in base.items():
        scan.setdefault(v // 10, set()).add(k)
    assert {g: set(k) for g, k in index.groups.items()} == scan == {0: {"d"}, 1: {"b", "c"}}
    with pytest.raises(TypeError):
        StagedTable(base).keys_in(0)


async def test_a_session_s_rows_are_found_through_the_indexes_with_other_sessions_around() -> None:
    db = InMemoryDatabase()
    a, b = _session(), _session()
    async with db() as uow:
        for s in (a, b):
            await uow.sessions.add(s)
            for n in (1, 2):
                await uow.turns.add(_turn(s, n))
        await uow.commit()
    async with db() as uow:
        await uow.turns.add(_turn(a, 3))  # staged, visible to its own unit
        assert [t.turn_number for t in await uow.turns.list_for_session(a.session_id)] == [1, 2, 3]
        assert [t.turn_number for t in await uow.turns.list_for_session(b.session_id)] == [1, 2]
        with pytest.raises(Exception, match="duplicate"):
            await uow.turns.add(_turn(a, 2))
        with pytest.raises(Exception, match="duplicate"):
            await uow.turns.add(_turn(a, 3))
        await uow.turns.add(_turn(b, 3))  # the same number in another session is fine
        await uow.commit()
    async with db() as uow:
        assert len(await uow.erasure.turns_of(a.session_id)) == 3
        assert (await uow.erasure.erase_session(a.session_id))["turns"] == 3
        await uow.commit()
    async with db() as uow:
        assert await uow.turns.list_for_session(a.session_id) == []
        assert [t.turn_number for t in await uow.turns.list_for_session(b.session_id)] == [1, 2, 3]
    assert set(db.tables.turns_by_session.groups) == {b.session_id}


async def test_a_user_s_sessions_and_memories_are_found_through_the_owner_index() -> None:
    db = InMemoryDatabase()
    ann, bob = uuid.uuid4(), uuid.uuid4()
    a1, a2, b1 = (
        Session(session_id=uuid.uuid4(), start_time=datetime.now(UTC), owner_id=o) for o in (ann, ann, bob)
    )
    async with db() as uow:
        for s in (a1, b1):
            await uow.sessions.add(s)
            await uow.memories.add(s.session_id, None, "user", f"said in {s.session_id}", [1.0, 0.0])
        await uow.commit()
    async with db() as uow:
        await uow.sessions.add(a2)  # staged: its unit already counts it as ann's
        await uow.memories.add(a2.session_id, None, "user", "staged", [1.0, 0.0])
        assert set(await uow.erasure.sessions_of(ann)) == {a1.session_id, a2.session_id}
        hits = await uow.memories.search([1.0, 0.0], limit=10, owner_id=ann)
        assert {h.session_id for h in hits} == {a1.session_id, a2.session_id}
        await uow.commit()
    async with db() as uow:  # a session handed to another owner moves with its memories' scope
        await uow.sessions.update(replace(a1, owner_id=bob))
        assert [s.session_id for s in await uow.sessions.list_recent(owner_id=ann)] == [a2.session_id]
        assert {h.session_id for h in await uow.memories.search([1.0, 0.0], owner_id=bob)} == {
            a1.session_id,
            b1.session_id,
        }
        await uow.commit()
    assert set(db.tables.sessions_by_owner.groups[bob]) == {a1.session_id, b1.session_id}
    assert set(db.tables.sessions_by_owner.groups[ann]) == {a2.session_id}


async def test_users_by_name_and_credentials_by_id_are_found_through_their_indexes() -> None:
    db = InMemoryDatabase()
    ann, bob = User(user_id=uuid.uuid4(), name="ann"), User(user_id=uuid.uuid4(), name="bob")
    cred = Credential(uuid.uuid4(), ann.user_id, CredentialKind.API_KEY, "hash-1")
    async with db() as uow:
        await uow.accounts.add_user(ann)
        with pytest.raises(DomainError, match="a user named 'ann' exists"):
            await uow.accounts.add_user(User(user_id=uuid.uuid4(), name="ann"))  # staged, same unit
        await uow.accounts.add_user(bob)
        await uow.accounts.add_credential(cred)
        await uow.commit()
    when = datetime(2026, 12, 1, tzinfo=UTC)
    async with db() as uow:
        assert await uow.accounts.get_user_by_name("bob") == bob
        assert await uow.accounts.get_user_by_name("carl") is None
        with pytest.raises(DomainError):
            await uow.accounts.add_user(User(user_id=uuid.uuid4(), name="bob"))
        await uow.accounts.touch_credential(cred.credential_id, when)
        await uow.accounts.touch_credential(uuid.uuid4(), when)  # unknown: nothing changes
        await uow.commit()
    async with db() as uow:
        found = await uow.accounts.find_credential("hash-1")
        assert found is not None and found.last_used_at == when
        assert await uow.accounts.delete_user(ann.user_id)
        await uow.commit()
    async with db() as uow:
        assert await uow.accounts.get_user_by_name("ann") is None
        assert await uow.accounts.find_credential("hash-1") is None  # cascaded
        await uow.accounts.add_user(User(user_id=uuid.uuid4(), name="ann"))  # the name is free again
