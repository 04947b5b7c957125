"""A job lock shared by every process that uses the database: PostgreSQL's session advisory lock.

``pg_try_advisory_lock`` is taken on a connection of its own, held while the job runs and released
at the end; a process that dies loses its connection and with it the lock, so no stale lock can
stop the job for good (docs/security.md, "Retention").
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.sha256(b"avatar-job-lock|" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresJobLock:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key = lock_key(name)
        async with self._engine.connect() as conn:
            taken = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar())
            await conn.commit()
            try:
                yield taken
            finally:
                if taken:
                    with contextlib.suppress(Exception):  # a lost connection released it already
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
