"""One database transaction that survives connection blips by replaying its writes.

Each unit of work holds one connection. Every write statement it executes is remembered; when a
statement or the commit fails with a transient error, the connection is discarded, a fresh one is
opened after a backoff, the remembered writes are replayed and the failed step is tried again.
After ``RetryPolicy.retries`` retries a :class:`DependencyError` is raised and logged: nothing is
silently dropped. A permanent failure (a rejected statement) is raised at once. This is the only
retry layer for database work: callers above it do not retry again. (A commit whose
acknowledgement was lost may already have been applied; its replay then fails on a unique key and
is reported, not duplicated. Turn, transcription and reply-audio rows are inserted keyed by their
ids, so for them such a replay is a no-op; docs/resilience.md.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from avatar.domain.errors import DependencyError, InvalidInputError
from avatar.infrastructure.database.retry import RetryPolicy, is_transient, sqlstate
from avatar.infrastructure.retry import call_with_retries

log = logging.getLogger(__name__)

T = TypeVar("T")


class Transaction:
    """A retried, replayable transaction on one pooled connection (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, policy: RetryPolicy) -> None:
        self._engine = engine
        self._policy = policy
        self._conn: AsyncConnection | None = None
        self._writes: list[Executable] = []
        self._broken = False

    async def read(self, statement: Executable) -> Result[Any]:
        return await self._attempt(lambda conn: conn.execute(statement), "read")

    async def write(self, statement: Executable) -> Result[Any]:
        result = await self._attempt(lambda conn: conn.execute(statement), "write")
        self._writes.append(statement)
        return result

    async def commit(self) -> None:
        if self._conn is None and not self._broken:
            return
        await self._attempt(lambda conn: conn.commit(), "commit")
        self._writes.clear()
        await self._release()

    async def rollback(self) -> None:
        self._writes.clear()
        self._broken = False
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.rollback()
        except Exception:  # the connection may be dead; it is closed below either way
            log.debug("rollback on a broken connection", exc_info=True)
        await _close(conn)

    async def _attempt(self, step: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        async def once() -> T:
            try:
                return await step(await self._connection())
            except Exception as exc:
                if is_transient(exc):
                    # The next attempt gets a fresh connection and replays the writes so far.
                    await self._discard()
                    self._broken = True
                raise

        try:
            return await call_with_retries(
                once,
                policy=self._policy,
                is_transient=is_transient,
                what=what,
                dependency="database",
                log=log,
            )
        except DependencyError:
            raise  # a transient failure outlasted the retries (already logged)
        except Exception as exc:
            # Permanent: like PostgreSQL itself, a rejected statement aborts the whole unit of work.
            await self.rollback()
            translated = _translate(exc, what)
            if translated is exc:
                raise
            raise translated from exc

    async def _connection(self) -> AsyncConnection:
        if self._conn is not None:
            return self._conn
        conn = await self._engine.connect()
        self._conn = conn
        if self._broken:
            for statement in self._writes:
                await conn.execute(statement)
            self._broken = False
        return conn

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.invalidate()
        except Exception:
            log.debug("invalidate failed", exc_info=True)
        await _close(conn)

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)


async def _close(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:
        log.debug("closing a database connection failed", exc_info=True)


def _bad_value(exc: Exception) -> bool:
    """A statement refused for a value it carries, not for the database's state: SQLSTATE class 22
    ("data exception": a NUL character, text the encoding cannot hold, a number out of range, a
    malformed literal) or the driver refusing to encode an argument."""
    if isinstance(exc, sa_exc.DataError):
        return True
    state = sqlstate(exc)
    if state is not None:
        return state.startswith("22")
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    # asyncpg's own client-side refusal of an argument (it never reached the server).
    return type(orig).__module__.startswith("asyncpg") and type(orig).__name__ == "DataError"


def _translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, sa_exc.IntegrityError):
        detail = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
        return InvalidInputError(f"rejected by the database: {detail}", code="CONFLICT")
    if _bad_value(exc):
        # The caller's value, not an outage: a clear INVALID_INPUT, never a 503 and never spooled
        # (docs/resilience.md). The driver's text stays in the log (it may quote internals).
        log.warning("database %s refused a value: %s", what, exc)
        return InvalidInputError(
            "a value was refused by the database: it holds a character or a number it cannot store "
            "(for example a NUL character)"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        log.error("database %s failed: %s", what, exc)
        return DependencyError(f"database {what} failed: {type(exc.orig).__name__}: {exc.orig}")
    return exc
