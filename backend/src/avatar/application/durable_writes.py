"""Writes that survive a storage outage (docs/resilience.md).

:class:`DurableWriter` applies a record at once when it can; when the database or the object store
stays unreachable through its adapter's retries (the one retry layer, ``infrastructure/retry.py``)
the record goes to the spool instead, and while anything waits there every later record queues
behind it, so a row never reaches the database before the row it refers to.
:class:`SpoolReplayer` applies the spool in order, in the background, with backoff, from start-up
on; :class:`SpooledStorage` holds the two for the composition root and reports the depth to health.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.spool import (
    SpoolCorruptError,
    SpoolEntry,
    SpoolFullError,
    SpoolMetrics,
    WriteSpool,
)
from avatar.application.storage_records import SpoolRecord, StorageApplier, StoredObject
from avatar.domain.errors import DependencyError

log = logging.getLogger(__name__)

#: Whether the storage answers now (the database and the object store both reachable).
Probe = Callable[[], Awaitable[bool]]


class Outcome(enum.Enum):
    STORED = "stored"
    SPOOLED = "spooled"


class DurableWriter:
    """Applies a record, or spools it when storage is unreachable; without a spool it only applies."""

    def __init__(
        self,
        applier: StorageApplier,
        spool: WriteSpool | None = None,
        metrics: SpoolMetrics | None = None,
        on_spooled: Callable[[], None] | None = None,
    ) -> None:
        self._applier = applier
        self._spool = spool
        self._metrics = metrics
        self._on_spooled = on_spooled

    async def put_now(self, obj: StoredObject) -> str | None:
        """Store ``obj`` and return its URL, or ``None`` when it cannot be stored now (storage
        unreachable or writes queued in the spool): the caller then puts ``obj`` into the record
        of the row that points at it."""
        if self._spool is None:
            return await self._applier.put(obj)
        if self._spool.pending:
            return None
        try:
            return await self._applier.put(obj)
        except SpoolFullError:
            raise
        except DependencyError as exc:
            log.warning("object store unreachable; %s waits for the row's record: %s", obj.key, exc)
            return None

    async def write(self, record: SpoolRecord) -> Outcome:
        """Apply ``record`` now, or keep it in the spool.

        Raises:
            SpoolFullError: storage is unreachable and the spool is full.
            Exception: a failure that is not an outage (a rejected row), unchanged.
        """
        if self._spool is None:
            await self._applier.apply(record)
            return Outcome.STORED
        if not self._spool.pending:
            try:
                await self._applier.apply(record)
                return Outcome.STORED
            except SpoolFullError:
                raise
            except DependencyError as exc:
                log.warning("storage unreachable; %s goes to the spool: %s", record.kind, exc)
        await self._append(record)
        return Outcome.SPOOLED

    async def _append(self, record: SpoolRecord) -> None:
        assert self._spool is not None
        try:
            await self._spool.append(record)
        except SpoolFullError:
            if self._metrics is not None:
                self._metrics.full()
            log.error("storage spool full: a %s write is lost", record.kind)
            raise
        if self._metrics is not None:
            self._metrics.spooled()
            depth = self._spool.depth()
            self._metrics.depth(depth.records, depth.bytes)
        if self._on_spooled is not None:
            self._on_spooled()


class ReplayResult(enum.Enum):
    #: Every waiting record was applied (or set aside).
    DRAINED = "drained"
    #: Storage is still unreachable; the rest waits.
    BLOCKED = "blocked"


class SpoolReplayer:
    """Applies the spool's records oldest first; stops at the first one storage cannot take yet.

    A record that cannot be read (cut short, altered) or that storage refuses (not an outage) is
    set aside with a log line and a metric and the next one is applied. A record that keeps failing
    as "unreachable" while the storage answers health checks is refused as well after
    ``healthy_attempts`` tries, so one bad record cannot hold the rest back forever.
    """

    def __init__(
        self,
        spool: WriteSpool,
        applier: StorageApplier,
        metrics: SpoolMetrics,
        *,
        probe: Probe | None = None,
        min_delay_s: float = 0.5,
        max_delay_s: float = 5.0,
        healthy_attempts: int = 3,
    ) -> None:
        self._spool = spool
        self._applier = applier
        self._metrics = metrics
        self._probe = probe
        self._min_delay_s = min_delay_s
        self._max_delay_s = max_delay_s
        self._healthy_attempts = healthy_attempts
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._head: tuple[int, int] = (-1, 0)  # (seq, failures while storage looked healthy)
        self.last_error = ""

    def wake(self) -> None:
        """A record was spooled: replay it when the replayer is idle."""
        self._wake.set()

    def start(self) -> None:
        """Replay what an earlier process left (start-up), then keep replaying in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="spool-replayer")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        delay = self._min_delay_s
        while True:
            try:
                result = await self.replay()
            except Exception:  # the loop must outlive a surprise; the record stays spooled
                log.exception("spool replay failed")
                result = ReplayResult.BLOCKED
            if result is ReplayResult.DRAINED:
                delay = self._min_delay_s
                await self._wake.wait()
                self._wake.clear()
                continue
            await asyncio.sleep(delay)
            self._wake.clear()
            delay = min(self._max_delay_s, delay * 2)

    async def replay(self) -> ReplayResult:
        """Apply every waiting record in order, until storage refuses one as unreachable."""
        async with self._lock:
            try:
                entries = await self._spool.entries()
                for entry in entries:
                    if not await self._replay_one(entry):
                        return ReplayResult.BLOCKED
                if entries:
                    log.info("storage spool drained: %d record(s) replayed or set aside", len(entries))
                return ReplayResult.DRAINED
            finally:
                depth = self._spool.depth()
                self._metrics.depth(depth.records, depth.bytes)

    async def _replay_one(self, entry: SpoolEntry) -> bool:
        try:
            record = await self._spool.load(entry)
        except SpoolCorruptError as exc:
            log.error("spool record %d is unreadable (%s): set aside", entry.seq, exc)
            await self._refuse(entry, "corrupt")
            return True
        try:
            await self._applier.apply(record)
        except DependencyError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            if await self._refused_while_healthy(entry):
                log.error("spool record %d (%s) keeps failing: set aside: %s", entry.seq, record.kind, exc)
                await self._refuse(entry, "rejected")
                return True
            log.info("storage still unreachable; %d record(s) wait: %s", self._spool.depth().records, exc)
            return False
        except Exception as exc:
            log.error("spool record %d (%s) was refused: set aside: %s", entry.seq, record.kind, exc)
            await self._refuse(entry, "rejected")
            return True
        await self._spool.remove(entry)
        self._metrics.replayed()
        self.last_error = ""
        return True

    async def _refused_while_healthy(self, entry: SpoolEntry) -> bool:
        if self._probe is None or not await self._probe():
            return False
        seq, failures = self._head
        failures = failures + 1 if seq == entry.seq else 1
        self._head = (entry.seq, failures)
        return failures >= self._healthy_attempts

    async def _refuse(self, entry: SpoolEntry, reason: str) -> None:
        await self._spool.set_aside(entry, reason)
        self._metrics.failed(reason)


class SpooledStorage:
    """The spool, its writer and its replayer, started and stopped with the app."""

    def __init__(self, spool: WriteSpool, writer: DurableWriter, replayer: SpoolReplayer) -> None:
        self.spool = spool
        self.writer = writer
        self.replayer = replayer

    def start(self) -> None:
        self.replayer.start()

    async def aclose(self) -> None:
        await self.replayer.aclose()
        self.spool.close()

    async def health(self) -> ComponentHealth:
        """Healthy unless full; the depth is always reported."""
        depth = self.spool.depth()
        detail = f"{depth.records} write(s) waiting ({depth.bytes} bytes)"
        if depth.full:
            detail = f"full: {detail}; new writes are lost until storage returns"
        return ComponentHealth(
            name="spool",
            ok=not depth.full,
            detail=detail,
            extra={
                "records": depth.records,
                "bytes": depth.bytes,
                "set_aside": depth.set_aside,
                "max_records": depth.max_records,
                "max_bytes": depth.max_bytes,
                "last_error": self.replayer.last_error,
            },
        )
