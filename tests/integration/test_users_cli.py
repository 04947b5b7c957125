"""``avatar users create|list|link`` (docs/security.md): straight to the database with the same
settings as ``avatar up``, on a remote PostgreSQL and on the embedded one while a running server
holds it (the command attaches to it and leaves it running)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from avatar.application.accounts import AccountService
from avatar.application.ports.storage import CredentialKind
from avatar.cli import main
from avatar.infrastructure.clock import SystemClock
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.settings import DatabaseSettings, Placement, Settings
from tests.support.servers import PostgresServer, fresh_database

ROOT = Path(__file__).resolve().parents[2]


async def _authenticates(settings: Settings, key: str) -> str | None:
    async with contextlib.AsyncExitStack() as stack:
        uow = await build_unit_of_work_factory(settings, stack)
        caller = await AccountService(uow, SystemClock()).authenticate(key, CredentialKind.API_KEY)
        return f"{caller.user.name}:{caller.user.role.value}" if caller else None


async def test_users_create_list_and_link_on_a_remote_database(postgres_server: PostgresServer) -> None:
    async with fresh_database(postgres_server) as url:
        env = {"AVATAR_DATABASE__PLACEMENT": "remote", "AVATAR_DATABASE__URL": url}
        runner = CliRunner()

        async def avatar(*args: str) -> Result:
            # In a thread: the command runs its own event loop, as it does from a shell.
            return await asyncio.to_thread(runner.invoke, main, list(args), env=env)

        made = await avatar("users", "create", "alice", "--admin")
        assert made.exit_code == 0, made.output
        key = made.stdout.strip().splitlines()[-1]
        assert key.startswith("avk_") and len(key) > 40
        settings = Settings(database=DatabaseSettings(placement=Placement.REMOTE, url=url))
        assert await _authenticates(settings, key) == "alice:admin"
        assert await _authenticates(settings, key + "x") is None

        dup = await avatar("users", "create", "alice")
        assert dup.exit_code != 0 and "USER_EXISTS" in dup.output
        bad = await avatar("users", "create", "no spaces")
        assert bad.exit_code != 0 and "INVALID_USER_NAME" in bad.output
        assert (await avatar("users", "create", "bob")).exit_code == 0

        listed = await avatar("users", "list")
        assert listed.exit_code == 0
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert [(r[1], r[2]) for r in rows] == [("admin", "alice"), ("user", "bob")]
        assert key not in listed.output  # keys are shown once, at creation

        link = await avatar("users", "link", "bob")
        assert link.exit_code == 0 and "/api/v1/auth/link?token=" in link.stdout
        missing = await avatar("users", "link", "nobody")
        assert missing.exit_code != 0 and "USER_NOT_FOUND" in missing.output


async def test_users_create_while_the_embedded_database_is_held_by_a_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    settings = Settings(database=DatabaseSettings(placement=Placement.EMBEDDED, data_dir=data_dir))
    async with contextlib.AsyncExitStack() as stack:
        # This process plays `avatar up`: it started the embedded server and keeps using it.
        uow = await build_unit_of_work_factory(settings, stack)
        env = {
            **os.environ,
            "AVATAR_DATABASE__PLACEMENT": "embedded",
            "AVATAR_DATABASE__DATA_DIR": str(data_dir),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", "from avatar.cli import main; main()", "users", "create", "carol"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        key = proc.stdout.strip().splitlines()[-1]
        # The command's exit left the server running for the process that holds it.
        caller = await AccountService(uow, SystemClock()).authenticate(key, CredentialKind.API_KEY)
        assert caller is not None and caller.user.name == "carol"
