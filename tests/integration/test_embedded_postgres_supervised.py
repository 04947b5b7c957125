"""The embedded PostgreSQL under its supervisor: the postmaster killed with SIGKILL is started
again on the same data directory, health says so meanwhile, and the same factory (same URL,
``pool_pre_ping``) reads and writes again, with the data written before the crash intact."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from avatar.domain.models import Session
from avatar.infrastructure.database import build_unit_of_work_factory
from avatar.settings import DatabaseSettings, Placement, Settings
from tests.support.auth import seed_owner

pytestmark = pytest.mark.slow


async def test_a_killed_embedded_postmaster_is_restarted(tmp_path: Path) -> None:
    settings = Settings(database=DatabaseSettings(placement=Placement.EMBEDDED, data_dir=tmp_path / "pgdata"))
    before = REGISTRY.get_sample_value("supervised_restarts_total", {"child": "database"}) or 0.0
    async with contextlib.AsyncExitStack() as stack:
        factory = await build_unit_of_work_factory(settings, stack)
        health = await factory.health()
        process = health.extra["process"]
        assert health.ok and isinstance(process, dict) and process["state"] == "running"
        owner = await seed_owner(factory)
        session = replace(Session.start(datetime.now(UTC), {"client": "before the crash"}), owner_id=owner)
        async with factory() as uow:
            await uow.sessions.add(session)
            await uow.commit()

        os.kill(int(process["pid"]), signal.SIGKILL)
        async with asyncio.timeout(90):
            while True:
                now = await factory.health()
                again = now.extra["process"]
                assert isinstance(again, dict)
                if again["restarts"] >= 1 and again["state"] == "running" and now.ok:
                    break
                if again["state"] == "restarting":
                    assert not now.ok and "process" in now.detail
                await asyncio.sleep(0.2)
        # a restart may fail while the dead server's backends still hold its shared memory: it is
        # then retried with backoff, each attempt counted
        assert again["pid"] != process["pid"] and again["last_error"]
        counted = REGISTRY.get_sample_value("supervised_restarts_total", {"child": "database"})
        assert counted == before + again["restarts"]
        async with factory() as uow:
            assert await uow.sessions.get(session.session_id) is not None
            later = replace(Session.start(datetime.now(UTC), {"client": "after the crash"}), owner_id=owner)
            await uow.sessions.add(later)
            await uow.commit()
        async with factory() as uow:
            assert await uow.sessions.get(later.session_id) is not None
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()  # stopped with the stack
