"""Which database failures are worth retrying (the backoff is :mod:`avatar.infrastructure.retry`'s)."""

from __future__ import annotations

import asyncio

from sqlalchemy import exc as sa_exc

from avatar.infrastructure.retry import RetryPolicy

__all__ = ["RetryPolicy", "is_transient", "sqlstate"]

# Connection exceptions (class 08), serialization failures and deadlocks, server shutting down or
# starting, too many connections: a new attempt on a fresh connection may well succeed.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53300", "53400"}


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of ``exc`` or of an error it wraps; ``None`` when it has none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str):
            return state
        current = getattr(current, "orig", None) or current.__cause__
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection blip (retry) rather than a bad statement (do not retry)."""
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return False
    if isinstance(exc, OSError | TimeoutError | asyncio.TimeoutError | sa_exc.TimeoutError):
        return True
    state = sqlstate(exc)
    if state is not None:
        return state.startswith("08") or state in _TRANSIENT_SQLSTATES
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    # asyncpg raises its own connection errors (not wrapped) when a connection dies mid-call.
    return type(exc).__module__.startswith("asyncpg") and "Connection" in type(exc).__name__
