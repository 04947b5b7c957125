"""The child-process supervisor with real processes: a killed child is restarted with backoff,
counted and logged; one that keeps dying is reported in health with its last error."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from avatar.infrastructure.supervisor import ChildState, RestartPolicy, Supervisor, SupervisorGroup

FAST = RestartPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, stable_after_s=30.0, failing_after=3)


class ProcessChild:
    """A real Python child process running ``code``."""

    def __init__(self, name: str, code: str) -> None:
        self.name = name
        self.code = code
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.refuse_start = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        if self.refuse_start:
            raise RuntimeError("no room to start")
        self.starts += 1
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", self.code, stderr=asyncio.subprocess.PIPE
        )

    async def wait(self) -> str:
        assert self.process is not None
        code = await self.process.wait()
        err = (await self.process.stderr.read()).decode().strip() if self.process.stderr else ""
        return f"exited with {code}: {err}"

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


def restarts(name: str) -> float:
    return REGISTRY.get_sample_value("supervised_restarts_total", {"child": name}) or 0.0


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def test_a_killed_child_is_restarted_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "avatar.infrastructure.supervisor")
    child = ProcessChild("sleeper", "import time; time.sleep(600)")
    supervisor = Supervisor(child, FAST)
    called: list[int | None] = []
    supervisor.on_restart(lambda: called.append(child.pid))
    before = restarts("sleeper")
    await supervisor.start()
    try:
        first = child.pid
        assert first is not None and supervisor.health().ok
        assert REGISTRY.get_sample_value("supervised_child_up", {"child": "sleeper"}) == 1
        os.kill(first, signal.SIGKILL)
        await until(lambda: supervisor.restarts == 1 and supervisor.state is ChildState.RUNNING)
        assert child.pid != first and child.starts == 2 and called == [child.pid]
        assert restarts("sleeper") == before + 1
        health = supervisor.health()
        assert health.ok and health.name == "sleeper_process" and health.extra["restarts"] == 1
        assert "exited with -9" in str(health.extra["last_error"])
        assert any("restarting supervised sleeper" in r.getMessage() for r in caplog.records)
        assert any("died" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    finally:
        await supervisor.stop()
    assert child.process is None and supervisor.state is ChildState.STOPPED
    assert REGISTRY.get_sample_value("supervised_child_up", {"child": "sleeper"}) == 0


async def test_a_child_that_keeps_dying_is_reported_with_its_last_error() -> None:
    child = ProcessChild("crasher", "import sys, time; time.sleep(0.05); sys.exit('disk full: cannot write')")
    supervisor = Supervisor(child, FAST)
    await supervisor.start()
    try:
        await until(lambda: supervisor.restarts >= 4)
        health = supervisor.health()
        assert not health.ok and supervisor.failing
        assert "disk full" in health.detail and "disk full" in str(health.extra["last_error"])
        # a start that itself fails is retried with backoff and reported as such
        child.refuse_start = True
        await until(lambda: "restart failed" in (supervisor.last_error or ""))
        assert not supervisor.health().ok and "no room to start" in supervisor.health().detail
        child.refuse_start = False
    finally:
        await supervisor.stop()


def test_backoff_doubles_up_to_its_ceiling() -> None:
    policy = RestartPolicy(initial_backoff_s=0.5, max_backoff_s=4.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


async def test_a_group_reports_its_children_as_one_component() -> None:
    """Several children of one kind (the embedded model servers): started together, one killed
    is restarted by its own supervisor, and the group's health names it meanwhile."""
    children = [ProcessChild(f"group-{i}", "import time; time.sleep(600)") for i in (1, 2)]
    supervisors = [Supervisor(child, FAST) for child in children]
    group = SupervisorGroup("group", supervisors)
    restarted: list[str] = []
    group.on_restart(lambda: restarted.append("again"))
    await group.start()
    try:
        health = group.health()
        assert health.ok and health.name == "group_process" and health.detail == "2 running"
        assert health.extra["pids"] == [children[0].pid, children[1].pid] and health.extra["restarts"] == 0
        supervisors[1].state = ChildState.RESTARTING  # as while its restart is under way
        meanwhile = group.health()
        assert not meanwhile.ok and meanwhile.extra["state"] == "restarting" and "group-2" in meanwhile.detail
        supervisors[1].state = ChildState.RUNNING
        first = children[1].pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await until(lambda: supervisors[1].restarts == 1 and supervisors[1].state is ChildState.RUNNING)
        after = group.health()
        assert after.ok and after.extra["restarts"] == 1 and restarted == ["again"]
        assert "exited with -9" in str(after.extra["last_error"]) and children[1].pid != first
        kids = after.extra["children"]
        assert isinstance(kids, dict) and set(kids) == {"group-1", "group-2"}
    finally:
        await group.stop()
    assert all(child.process is None for child in children)


async def test_a_group_whose_child_cannot_start_stops_the_others() -> None:
    good = ProcessChild("group-good", "import time; time.sleep(600)")
    bad = ProcessChild("group-bad", "pass")
    bad.refuse_start = True
    group = SupervisorGroup("group", [Supervisor(good, FAST), Supervisor(bad, FAST)])
    with pytest.raises(RuntimeError, match="no room to start"):
        await group.start()
    assert good.process is None
    with pytest.raises(ValueError):
        SupervisorGroup("empty", [])


async def test_a_group_starts_children_on_demand_and_reports_only_those() -> None:
    children = [ProcessChild(f"lazy-{i}", "import time; time.sleep(600)") for i in (1, 2)]
    group = SupervisorGroup("lazy", [Supervisor(child, FAST) for child in children])
    await group.start(1)
    try:
        assert group.started == 1 and children[1].process is None
        health = group.health()
        assert health.ok and health.extra["pids"] == [children[0].pid]  # one running, none missing
        assert await group.start_next() is True
        assert group.started == 2 and children[1].pid is not None
        both = group.health()
        assert both.ok and both.extra["pids"] == [children[0].pid, children[1].pid]
        assert both.extra["configured"] == 2
        assert await group.start_next() is False  # all run
    finally:
        await group.stop()
    assert all(child.process is None for child in children) and group.started == 0
