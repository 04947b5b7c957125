"""``avatar backup`` / ``avatar restore`` (docs/security.md, "Backups") on real parts: users and
conversations made through the real app and socket on a real PostgreSQL + pgvector and a
filesystem object store; backed up while it serves; restored into a new, empty embedded PostgreSQL
and an empty S3 bucket; the same user then reads the session history and the audio through the
REST API. An altered, truncated or wrong-key archive restores nothing and says why."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from avatar.bootstrap import Container
from avatar.cli import main
from avatar.infrastructure import backup
from avatar.infrastructure.backup import MAGIC, BackupError, create_backup, restore_backup
from avatar.infrastructure.database import (
    SqlUnitOfWorkFactory,
    build_unit_of_work_factory,
    create_engine,
    migrate,
)
from avatar.infrastructure.object_store import build_object_store
from avatar.presentation.app import create_app
from avatar.settings import DatabaseSettings, ObjectStoreSettings, Placement, Settings
from tests.e2e.harness import running_server
from tests.fakes import FakeChatModel, FakeRecognizer, fake_container
from tests.support.auth import bearer, make_user
from tests.support.history import converse
from tests.support.servers import PostgresServer, S3Server, fresh_database


def _settings(data_dir: Path, database: DatabaseSettings, store: ObjectStoreSettings) -> Settings:
    settings = Settings(
        _env_file=None, environment="test", data_dir=data_dir, database=database, object_store=store
    )
    settings.retention.enabled = False
    return settings


def _env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for the command line."""
    db, store = settings.database, settings.object_store
    env = {
        "AVATAR_ENVIRONMENT": "test",
        "AVATAR_DATA_DIR": str(settings.data_dir),
        "AVATAR_DATABASE__PLACEMENT": db.placement.value,
        "AVATAR_DATABASE__URL": db.url.get_secret_value(),
        "AVATAR_DATABASE__DATA_DIR": str(db.data_dir),
        "AVATAR_OBJECT_STORE__KIND": store.kind,
        "AVATAR_OBJECT_STORE__ROOT": str(store.root),
        "AVATAR_OBJECT_STORE__ENDPOINT": store.endpoint,
        "AVATAR_OBJECT_STORE__ACCESS_KEY": store.access_key.get_secret_value(),
        "AVATAR_OBJECT_STORE__SECRET_KEY": store.secret_key.get_secret_value(),
        "AVATAR_OBJECT_STORE__BUCKET": store.bucket,
        "AVATAR_RETENTION__ENABLED": "false",
    }
    return env


async def _avatar(settings: Settings, *args: str) -> Result:
    # In a thread: the command runs its own event loop, as it does from a shell.
    return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=_env(settings))


@dataclass
class History:
    """What alice can read before the backup: her sessions, their turns and every audio file."""

    sessions: list[str]
    turns: dict[str, list[dict[str, Any]]]
    audio: dict[str, bytes]


async def _read_history(base: str, key: str) -> History:
    async with httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30) as http:
        listed = (await http.get("/api/v1/sessions")).json()["sessions"]
        sessions = sorted(s["session_id"] for s in listed)
        turns, audio = {}, {}
        for sid in sessions:
            response = await http.get(f"/api/v1/sessions/{sid}/turns")
            assert response.status_code == 200, response.text
            turns[sid] = response.json()["turns"]
            for turn in turns[sid]:
                urls = [turn["transcription"]["audio_url"], *(a["url"] for a in turn["audio"])]
                for url in urls:
                    got = await http.get(url)
                    assert got.status_code == 200, (url, got.text)
                    # The stable part of a presigned URL is its key.
                    audio[url.split("?")[0]] = got.content
    return History(sessions, turns, audio)


def _comparable(history: History) -> list[tuple[str, int, str, str, str]]:
    return [
        (sid, t["turn_number"], t["user_input"], t["ai_response"], t["transcription"]["text"])
        for sid in history.sessions
        for t in history.turns[sid]
    ]


@contextlib.asynccontextmanager
async def _app(
    settings: Settings, uow: Any, exits: contextlib.AsyncExitStack
) -> AsyncIterator[tuple[str, Container]]:
    container = fake_container(
        settings,
        uow=uow,
        object_store=await build_object_store(settings, exits),
        recognizer=FakeRecognizer(("this must survive a restore",), utterance_ms=400, silence_rms=200.0),
        chat_model=FakeChatModel(("[happy] Backed up and restored.",)),
    )
    await container.queue.start()
    async with running_server(create_app(settings, container)) as base:
        yield base, container


@dataclass
class Source:
    settings: Settings
    archive: Path
    alice_key: str
    history: History
    server: PostgresServer


@pytest_asyncio.fixture(scope="module")
async def source(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Source]:
    """Users with conversations on the real app, and the archive `avatar backup` made while it ran."""
    tmp = tmp_path_factory.mktemp("backup-source")
    async with fresh_database(postgres_server) as url, contextlib.AsyncExitStack() as exits:
        settings = _settings(
            tmp / "var",
            DatabaseSettings(placement=Placement.REMOTE, url=url),
            ObjectStoreSettings(kind="filesystem", root=tmp / "objects"),
        )
        engine = create_engine(url, pool_size=4)
        exits.push_async_callback(engine.dispose)
        await migrate.upgrade(engine)
        async with _app(settings, SqlUnitOfWorkFactory(engine), exits) as (base, container):
            _alice, alice_key = await make_user(container, "alice")
            _bob, bob_key = await make_user(container, "bob")
            await converse(base, alice_key, container, turns=2)
            await converse(base, alice_key, container, turns=1)
            await converse(base, bob_key, container, turns=1)
            history = await _read_history(base, alice_key)
            archive = tmp / "avatar.backup"
            made = await _avatar(settings, "backup", str(archive))
            assert made.exit_code == 0, made.output
            print(made.stdout.strip())  # the figures: archive size, objects, time
        yield Source(settings, archive, alice_key, history, postgres_server)


async def test_restore_into_an_empty_installation_brings_the_history_back(
    source: Source, tmp_path: Path, s3_server: S3Server
) -> None:
    raw = source.archive.read_bytes()
    assert raw.startswith(MAGIC) and (source.archive.stat().st_mode & 0o777) == 0o600
    assert b"RIFF" not in raw and b"must survive" not in raw and b"alice" not in raw
    assert len(source.history.sessions) == 2 and len(source.history.audio) >= 6

    # Wiped: a new, empty embedded PostgreSQL and an empty S3 bucket; only the keys are kept.
    target = _settings(
        source.settings.data_dir,
        DatabaseSettings(placement=Placement.EMBEDDED, data_dir=tmp_path / "pgdata"),
        ObjectStoreSettings(
            kind="s3",
            endpoint=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key,
            bucket=f"restored-{uuid.uuid4().hex[:8]}",
        ),
    )
    restored = await _avatar(target, "restore", str(source.archive))
    assert restored.exit_code == 0, restored.output
    print(restored.stdout.strip())
    assert "restored" in restored.stdout and "revision 0004" in restored.stdout

    async with contextlib.AsyncExitStack() as exits:
        uow = await build_unit_of_work_factory(target, exits)
        async with _app(target, uow, exits) as (base, _container):
            # Alice signs in with the same API key and reads the same history and audio.
            after = await _read_history(base, source.alice_key)
    assert after.sessions == source.history.sessions
    assert _comparable(after) == _comparable(source.history)
    assert after.audio == source.history.audio

    # A second restore into the now populated installation is refused.
    again = await _avatar(target, "restore", str(source.archive))
    assert again.exit_code != 0 and "not empty" in again.output


@contextlib.asynccontextmanager
async def _empty_target(
    source: Source, tmp_path: Path, data_dir: Path | None = None
) -> AsyncIterator[Settings]:
    async with fresh_database(source.server) as url:
        yield _settings(
            data_dir or source.settings.data_dir,
            DatabaseSettings(placement=Placement.REMOTE, url=url),
            ObjectStoreSettings(kind="filesystem", root=tmp_path / "empty-objects"),
        )


async def _nothing_restored(settings: Settings) -> None:
    engine = create_async_engine(settings.database.url.get_secret_value())
    try:
        async with engine.connect() as conn:
            tables = (
                await conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert tables == 0
    root = settings.object_store.root
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("flip", "altered"),
        ("truncate", "truncated"),
        ("append", "after its last part"),
        ("header", "wrong key or altered"),
    ],
)
async def test_an_altered_archive_restores_nothing(
    source: Source, tmp_path: Path, damage: str, says: str
) -> None:
    data = bytearray(source.archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-200:]
    elif damage == "append":
        data += data[-300:]
    else:  # the salt in the clear header: the key derived from it no longer matches
        at = data.index(b'"salt":"') + len(b'"salt":"')
        data[at] = ord("A") if data[at] != ord("A") else ord("B")
    bad = tmp_path / "bad.backup"
    bad.write_bytes(bytes(data))
    async with _empty_target(source, tmp_path) as target:
        result = await _avatar(target, "restore", str(bad))
        assert result.exit_code != 0
        assert "BACKUP_FAILED" in result.output and says in result.output, result.output
        await _nothing_restored(target)


async def test_a_wrong_master_key_restores_nothing(source: Source, tmp_path: Path) -> None:
    # Another installation: its own keyring, generated into its own data directory.
    async with _empty_target(source, tmp_path, data_dir=tmp_path / "other-var") as target:
        with pytest.raises(BackupError, match="wrong key"):
            await restore_backup(target, source.archive)
        await _nothing_restored(target)


async def test_a_passphrase_archive_needs_its_passphrase(source: Source, tmp_path: Path) -> None:
    archive = tmp_path / "pass.backup"
    await create_backup(source.settings, archive, passphrase="correct horse battery")
    with pytest.raises(BackupError, match="exists"):
        await create_backup(source.settings, archive)
    async with _empty_target(source, tmp_path) as target:
        with pytest.raises(BackupError, match="passphrase"):
            await restore_backup(target, archive)
        with pytest.raises(BackupError, match="wrong passphrase"):
            await restore_backup(target, archive, passphrase="incorrect horse battery")
        await _nothing_restored(target)
        report = await restore_backup(target, archive, passphrase="correct horse battery")
        assert report.objects == len(list((source.settings.object_store.root).rglob("*.wav")))
        assert report.revision == "0004"


async def test_a_failing_database_load_takes_the_restored_objects_back(
    source: Source, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = backup._run_tool

    def run(args: list[str], url: str, what: str) -> None:
        if what == "pg_restore":  # the database refuses the load after the objects were written
            real_run([*args[:-1], str(tmp_path / "missing.dump")], url, what)
        real_run(args, url, what)

    monkeypatch.setattr(backup, "_run_tool", run)
    async with _empty_target(source, tmp_path) as target:
        with pytest.raises(BackupError, match="pg_restore failed"):
            await restore_backup(target, source.archive)
        await _nothing_restored(target)
