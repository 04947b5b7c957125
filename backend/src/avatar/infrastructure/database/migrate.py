"""Run the Alembic migrations in ``db/`` from code (the embedded placement and tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from avatar.settings import REPO_ROOT

ALEMBIC_INI = REPO_ROOT / "db" / "alembic.ini"
# Any fixed 64-bit number: replicas starting together take turns instead of racing the same DDL.
_MIGRATION_LOCK = 0x4156_4154_4152


def alembic_config(ini: Path = ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise FileNotFoundError(f"Alembic configuration not found at {ini}")
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    return config


def _run(connection: Connection, action: str, revision: str, ini: Path) -> None:
    config = alembic_config(ini)
    config.attributes["connection"] = connection
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head", *, ini: Path = ALEMBIC_INI) -> None:
    """Migrate the database behind ``engine`` up to ``revision`` in one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(_run, "upgrade", revision, ini)


async def downgrade(engine: AsyncEngine, revision: str, *, ini: Path = ALEMBIC_INI) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_run, "downgrade", revision, ini)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar_one_or_none()
        if exists is None:
            return None
        value = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
        return str(value) if value is not None else None
