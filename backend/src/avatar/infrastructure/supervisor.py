"""Keep a child process alive: restart it with backoff when it dies, and say so.

A :class:`Supervisor` watches one :class:`Child` (the embedded llama.cpp server, the embedded
PostgreSQL, the prosody worker pool). When the child dies it logs why, waits an exponentially
growing delay (reset once the child has stayed up for ``stable_after_s``), starts it again, counts
the restart in ``supervised_restarts_total`` and calls the ``on_restart`` callbacks so adapters can
drop state that belonged to the dead process. Only the embedded placement's children are
supervised here; remote services rely on their orchestrator (compose restart policy, Kubernetes)
and the adapters recover when they answer again. A child that keeps dying
is reported by :meth:`Supervisor.health` with its last error. Nothing here knows what the child is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Gauge

from avatar.application.ports.common import ComponentHealth

log = logging.getLogger(__name__)

SUPERVISED_RESTARTS = Counter(
    "supervised_restarts_total", "Restarts of a supervised child process after it died", ["child"]
)
SUPERVISED_UP = Gauge("supervised_child_up", "1 while a supervised child process is running", ["child"])

_MAX_ERROR_CHARS = 2000


class Child(Protocol):
    """Something the supervisor can start, wait on and stop (a process, a worker pool)."""

    @property
    def name(self) -> str:
        """Short label for logs, metrics and health (``llm``, ``database``, ``prosody``)."""
        ...

    async def start(self) -> None:
        """Start the child and return once it is ready to serve.

        Raises:
            Exception: it could not be started; the message says why (it becomes the last error).
        """
        ...

    async def wait(self) -> str:
        """Return when the running child has died, with why (exit status, last log lines)."""
        ...

    async def stop(self) -> None:
        """Stop the child if it runs (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How eagerly a dead child is restarted.

    Attributes:
        initial_backoff_s: Delay before the first restart after the child ran stably.
        max_backoff_s: Ceiling of the doubling delay between restarts.
        stable_after_s: A child that ran this long before dying starts again from the initial delay.
        failing_after: Consecutive restarts (without a stable run) after which health calls the
            child failing, even while a restart is in progress.
    """

    initial_backoff_s: float = 0.2
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0
    failing_after: int = 3

    def delay(self, consecutive: int) -> float:
        """Seconds to wait before restart number ``consecutive`` (0-based) of a streak."""
        return float(min(self.max_backoff_s, self.initial_backoff_s * 2**consecutive))


class ChildState(enum.StrEnum):
    STOPPED = "stopped"
    RUNNING = "running"
    RESTARTING = "restarting"


RestartCallback = Callable[[], Awaitable[None] | None]


class Supervisor:
    """Starts a :class:`Child`, restarts it whenever it dies, and reports on it."""

    def __init__(self, child: Child, policy: RestartPolicy | None = None) -> None:
        self.child = child
        self.policy = policy or RestartPolicy()
        self.state = ChildState.STOPPED
        self.restarts = 0
        #: Restarts since the child last ran for ``stable_after_s``.
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_restart_at: float | None = None  # wall-clock seconds
        self._callbacks: list[RestartCallback] = []
        self._running_since = 0.0
        self._task: asyncio.Task[None] | None = None
        self._up = SUPERVISED_UP.labels(child.name)

    @property
    def name(self) -> str:
        return self.child.name

    def on_restart(self, callback: RestartCallback) -> None:
        """Call ``callback`` (sync or async) each time the child is ready again after a restart."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Start the child (errors propagate: a child that cannot start at all stops start-up)
        and begin watching it."""
        await self.child.start()
        self._running()
        self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"supervise-{self.name}")

    def _running(self) -> None:
        self.state = ChildState.RUNNING
        self._running_since = time.monotonic()
        self._up.set(1)

    async def stop(self) -> None:
        """Stop watching, then stop the child."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = ChildState.STOPPED
        self._up.set(0)
        await self.child.stop()

    async def _watch(self) -> None:
        while True:
            reason = await self.child.wait()
            started = self._running_since
            self._up.set(0)
            self.state = ChildState.RESTARTING
            self.last_error = reason[-_MAX_ERROR_CHARS:]
            if time.monotonic() - started >= self.policy.stable_after_s:
                self.consecutive_failures = 0
            log.error("supervised %s died after %.1f s: %s", self.name, time.monotonic() - started, reason)
            while True:
                delay = self.policy.delay(self.consecutive_failures)
                self.consecutive_failures += 1
                await asyncio.sleep(delay)
                self.restarts += 1
                self.last_restart_at = time.time()
                SUPERVISED_RESTARTS.labels(self.name).inc()
                log.warning(
                    "restarting supervised %s (restart %d, %d in a row, after %.2f s)",
                    self.name,
                    self.restarts,
                    self.consecutive_failures,
                    delay,
                )
                try:
                    await self.child.stop()  # whatever is left of the dead one
                    await self.child.start()
                except Exception as exc:
                    self.last_error = f"restart failed: {type(exc).__name__}: {exc}"[-_MAX_ERROR_CHARS:]
                    log.error("supervised %s did not come back: %s", self.name, self.last_error)
                    continue
                break
            for callback in self._callbacks:  # adapters first, so "running" means usable
                try:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("a restart callback of %s failed", self.name)
            self._running()
            log.warning("supervised %s is running again", self.name)

    @property
    def failing(self) -> bool:
        """The child keeps dying (``failing_after`` restarts in a row without a stable run)."""
        stable = time.monotonic() - self._running_since >= self.policy.stable_after_s
        if self.state is ChildState.RUNNING and stable:
            return False
        return self.consecutive_failures >= self.policy.failing_after

    def health(self) -> ComponentHealth:
        """``ok`` while the child runs and is not in a crash loop; the last error when it is not."""
        ok = self.state is ChildState.RUNNING and not self.failing
        if self.state is ChildState.RUNNING:
            detail = "running" if ok else f"running, but it died {self.consecutive_failures} times in a row"
        else:
            detail = str(self.state.value)
        if self.last_error is not None and not ok:
            detail += f"; last error: {self.last_error[-300:]}"
        return ComponentHealth(
            f"{self.name}_process",
            ok,
            detail,
            {
                "pid": getattr(self.child, "pid", None),
                "state": self.state.value,
                "restarts": self.restarts,
                "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error,
                "last_restart_at": self.last_restart_at,
            },
        )


class SupervisorGroup:
    """Several supervised children of one kind (the embedded model servers), started together
    and reported as one component: ``ok`` while every child is; the restarts summed; each child's
    own report under ``children``."""

    def __init__(self, name: str, supervisors: list[Supervisor]) -> None:
        if not supervisors:
            raise ValueError("a group needs at least one supervisor")
        self.name = name
        self.supervisors = supervisors
        self._started = 0

    def on_restart(self, callback: RestartCallback) -> None:
        for supervisor in self.supervisors:
            supervisor.on_restart(callback)

    @property
    def started(self) -> int:
        """Children started so far (the first ones of ``supervisors``)."""
        return self._started

    async def start(self, count: int | None = None) -> None:
        """Start the first ``count`` children (all by default) at once; if one cannot start, the
        others are stopped again."""
        first = self.supervisors[: len(self.supervisors) if count is None else count]
        results = await asyncio.gather(*(s.start() for s in first), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(s.stop() for s in first))
            raise failed[0]
        self._started = len(first)

    async def start_next(self) -> bool:
        """Start the next child not started yet; ``False`` when all run already.

        Raises:
            Exception: it could not be started (it stays not started).
        """
        if self._started >= len(self.supervisors):
            return False
        supervisor = self.supervisors[self._started]
        try:
            await supervisor.start()
        except BaseException:
            await supervisor.stop()
            raise
        self._started += 1
        return True

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.supervisors))
        self._started = 0

    def health(self) -> ComponentHealth:
        """Over the started children (one not started yet is neither up nor failing)."""
        running = self.supervisors[: max(1, self._started)]
        reports = [s.health() for s in running]
        if len(reports) == 1:
            only = reports[0]
            extra = {**only.extra, "pids": [only.extra["pid"]]}
            return ComponentHealth(only.name, only.ok, only.detail, extra)
        ok = all(r.ok for r in reports)
        states = {s.state for s in running}
        state = (
            ChildState.RUNNING
            if states == {ChildState.RUNNING}
            else ChildState.RESTARTING
            if ChildState.RESTARTING in states
            else ChildState.STOPPED
        )
        pairs = list(zip(running, reports, strict=True))
        failing = "; ".join(f"{s.name}: {r.detail}" for s, r in pairs if not r.ok)
        detail = f"{len(reports)} running" if ok else failing
        errors = [(s.last_restart_at or 0.0, s.last_error) for s in running if s.last_error]
        return ComponentHealth(
            f"{self.name}_process",
            ok,
            detail,
            {
                "pids": [getattr(s.child, "pid", None) for s in running],
                "state": state.value,
                "restarts": sum(s.restarts for s in running),
                "consecutive_failures": max(s.consecutive_failures for s in running),
                "configured": len(self.supervisors),
                "last_error": max(errors, key=lambda e: e[0])[1] if errors else None,
                "children": {s.name: r.extra for s, r in pairs},
            },
        )
