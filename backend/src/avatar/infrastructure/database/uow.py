"""The SQL unit of work and its factory (the ``UnitOfWork`` / ``UnitOfWorkFactory`` ports)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from avatar.application.ports.common import ComponentHealth
from avatar.infrastructure.database.accounts import SqlAccountRepository, SqlErasureRepository
from avatar.infrastructure.database.repositories import (
    SqlFeedbackRepository,
    SqlMemoryRepository,
    SqlProsodyRepository,
    SqlRetentionRepository,
    SqlSessionRepository,
    SqlSummaryRepository,
    SqlSynthesizedAudioRepository,
    SqlTranscriptionRepository,
    SqlTurnRepository,
    SqlVoiceProfileRepository,
)
from avatar.infrastructure.database.retry import RetryPolicy
from avatar.infrastructure.database.transaction import Transaction
from avatar.settings import DatabaseSettings, default_of


class SqlUnitOfWork:
    """One transaction over every repository; leaving the block without :meth:`commit` rolls back."""

    def __init__(self, engine: AsyncEngine, policy: RetryPolicy) -> None:
        self._tx = Transaction(engine, policy)
        self.sessions = SqlSessionRepository(self._tx)
        self.turns = SqlTurnRepository(self._tx)
        self.transcriptions = SqlTranscriptionRepository(self._tx)
        self.prosody = SqlProsodyRepository(self._tx)
        self.voice_profiles = SqlVoiceProfileRepository(self._tx)
        self.synthesized = SqlSynthesizedAudioRepository(self._tx)
        self.memories = SqlMemoryRepository(self._tx)
        self.summaries = SqlSummaryRepository(self._tx)
        self.accounts = SqlAccountRepository(self._tx)
        self.erasure = SqlErasureRepository(self._tx)
        self.feedback = SqlFeedbackRepository(self._tx)
        self.retention = SqlRetentionRepository(self._tx)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._tx.rollback()

    async def commit(self) -> None:
        await self._tx.commit()

    async def rollback(self) -> None:
        await self._tx.rollback()


class SqlUnitOfWorkFactory:
    """Makes units of work on one pooled async engine; owns the engine's lifetime."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        policy: RetryPolicy | None = None,
        placement: str = "remote",
        process: Callable[[], ComponentHealth | None] | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy or RetryPolicy()
        self.placement = placement
        #: The embedded server's supervision status, reported with the database's health.
        self._process = process

    async def health(self) -> ComponentHealth:
        checked = await self._check()
        process = self._process() if self._process is not None else None
        if process is None:
            return checked
        ok = checked.ok and process.ok
        detail = checked.detail if process.ok else f"{checked.detail}; process {process.detail}"
        extra = {**checked.extra, "process": {"ok": process.ok, "detail": process.detail, **process.extra}}
        return ComponentHealth(checked.name, ok, detail, extra)

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, self.policy)

    async def _check(self) -> ComponentHealth:
        try:
            async with asyncio.timeout(3.0), self.engine.connect() as conn:
                version = (
                    await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
                ).scalar_one_or_none()
                revision = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar_one_or_none()
        except Exception as exc:  # health reports, never raises
            return ComponentHealth(
                name="database",
                ok=False,
                detail=f"{type(exc).__name__}: {exc}",
                extra={"placement": self.placement},
            )
        ok = version is not None and revision is not None
        detail = "ok" if ok else ("pgvector extension missing" if version is None else "schema not migrated")
        return ComponentHealth(
            name="database",
            ok=ok,
            detail=detail,
            extra={"placement": self.placement, "pgvector": version, "revision": revision},
        )

    async def aclose(self) -> None:
        await self.engine.dispose()


def create_engine(
    url: str,
    *,
    pool_size: int = default_of(DatabaseSettings, "pool_size"),
    connect_timeout_s: float = 5.0,
    command_timeout_s: float = 30.0,
) -> AsyncEngine:
    """An asyncpg engine; ``pool_pre_ping`` swaps out connections a database restart killed."""
    connect_args: dict[str, Any] = {"timeout": connect_timeout_s, "command_timeout": command_timeout_s}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=connect_timeout_s,
        connect_args=connect_args,
    )
