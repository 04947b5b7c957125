"""Values the database cannot store (a NUL character, a number out of its column's range) are the
caller's mistake, not an outage: the unit of work answers ``InvalidInputError`` (INVALID_INPUT,
400) with a text free of driver internals, never ``DependencyError`` (503), and the durable
writer does not spool such a write (docs/resilience.md). Against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.storage_records import StorageApplier, TurnInsert
from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.domain.models import ConversationTurn, Session, new_id
from avatar.infrastructure.crypto import Envelope, Keyring, generate_key
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.infrastructure.spool import FileSpool
from avatar.settings import Placement, Settings
from tests.support.auth import seed_owner

INTERNALS = ("asyncpg", "sqlalchemy", "Error:", "SQLSTATE", "sessions", "conversation_turns", "$")


@pytest.fixture
async def uow(module_database_url: str) -> AsyncIterator[UnitOfWorkFactory]:
    settings = Settings(environment="test")
    settings.database.placement = Placement.REMOTE
    settings.database.url = SecretStr(module_database_url)
    async with contextlib.AsyncExitStack() as exits:
        yield await build_unit_of_work_factory(settings, exits)


async def new_session(uow: UnitOfWorkFactory) -> uuid.UUID:
    session = Session.start(datetime.now(UTC), owner_id=await seed_owner(uow))
    async with uow() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    return session.session_id


def assert_clear(error: InvalidInputError) -> None:
    assert not isinstance(error, DependencyError)
    assert error.code == "INVALID_INPUT"
    assert not any(word in error.message for word in INTERNALS), error.message


async def test_a_nul_character_is_invalid_input_not_an_outage(uow: UnitOfWorkFactory) -> None:
    session = Session.start(datetime.now(UTC), {"note": "a\x00b"}, owner_id=await seed_owner(uow))
    with pytest.raises(InvalidInputError) as refused:
        async with uow() as tx:
            await tx.sessions.add(session)
            await tx.commit()
    assert_clear(refused.value)
    async with uow() as tx:  # nothing half-written, and the database still answers
        assert await tx.sessions.get(session.session_id) is None


async def test_a_number_out_of_its_columns_range_is_invalid_input(uow: UnitOfWorkFactory) -> None:
    session_id = await new_session(uow)
    turn = ConversationTurn(turn_id=new_id(), session_id=session_id, turn_number=2**40, user_input="hi")
    with pytest.raises(InvalidInputError) as refused:
        async with uow() as tx:
            await tx.turns.add(turn)
            await tx.commit()
    assert_clear(refused.value)


async def test_the_durable_writer_reports_a_bad_value_and_does_not_spool_it(
    uow: UnitOfWorkFactory, tmp_path: Path
) -> None:
    session_id = await new_session(uow)
    spool = FileSpool(
        tmp_path / "spool", Envelope(Keyring.from_keys([generate_key()])), max_records=10, max_bytes=10**6
    )
    try:
        writer = DurableWriter(StorageApplier(uow, None), spool)
        turn = ConversationTurn(turn_id=new_id(), session_id=session_id, turn_number=2**40, user_input="hi")
        with pytest.raises(InvalidInputError):
            await writer.write(TurnInsert(turn=turn))
        assert not spool.pending  # an outage would have spooled it; a bad value is refused at once
        good = ConversationTurn(turn_id=new_id(), session_id=session_id, turn_number=1, user_input="hi")
        await writer.write(TurnInsert(turn=good))
        async with uow() as tx:
            assert [t.turn_id for t in await tx.turns.list_for_session(session_id)] == [good.turn_id]
    finally:
        spool.close()
