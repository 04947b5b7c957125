"""Retention of stored audio (docs/security.md, "Retention").

Raw inputs (the user's utterances, ``raw_inputs/``) are kept ``raw_input`` long and synthesized
replies (``synthesized/fast``, ``synthesized/hq``) ``synthesized`` long; raw input audio older than
``archive_after`` is re-encoded as Ogg/Opus (the WAV replaced, the turn's audio key updated, the
object sealed like every object). The age of an object is the time in its key (the ``_{ts}`` tail of
the layout in docs/design-notes.md §5), so no database is needed to find what is due.

Every step is idempotent and safe to interrupt:

* deletion marks the rows expired first, then deletes the objects; a sweep cut short between the
  two leaves objects that the next sweep deletes (the rows already say "expired");
* archiving writes the ``.opus`` object, points the rows at it, then deletes the WAV; a sweep cut
  short leaves the WAV, which the next sweep archives again (overwriting the same ``.opus`` key).

One process sweeps at a time (``JobLock``); the others skip that round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from avatar.application.ports.clock import Clock
from avatar.application.ports.retention import AudioArchiver, JobLock, RetentionMetrics
from avatar.application.ports.storage import ObjectStore, StoredObject, UnitOfWorkFactory
from avatar.domain.errors import AvatarError
from avatar.domain.storage_keys import (
    ARCHIVED_SUFFIX,
    RAW_INPUTS,
    SYNTHESIZED,
    archived_key,
    key_time,
)

log = logging.getLogger(__name__)

LOCK_NAME = "retention-sweep"
RAW_INPUT = "raw_input"
#: (metric kind, key prefix) of every swept kind of object.
KINDS = ((RAW_INPUT, RAW_INPUTS), ("fast", f"{SYNTHESIZED}fast/"), ("hq", f"{SYNTHESIZED}hq/"))
_BATCH = 200


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of audio is kept; ``archive_after`` None keeps raw inputs as WAV."""

    raw_input: timedelta
    synthesized: timedelta
    archive_after: timedelta | None = None

    def keep_for(self, kind: str) -> timedelta:
        return self.raw_input if kind == RAW_INPUT else self.synthesized

    def past_retention(self, key: str, now: datetime) -> bool:
        """Whether the object ``key`` is older than its kind is kept (then it is, or will be, gone)."""
        kind = next((k for k, prefix in KINDS if key.startswith(prefix)), None)
        stamp = key_time(key)
        return kind is not None and stamp is not None and now - stamp >= self.keep_for(kind)


@dataclass
class SweepReport:
    """What one sweep did; ``ran`` is False when another process held the lock."""

    ran: bool = True
    deleted: Counter[str] = field(default_factory=Counter)
    deleted_bytes: Counter[str] = field(default_factory=Counter)
    rows_expired: int = 0
    archived: int = 0
    archived_bytes_before: int = 0
    archived_bytes_after: int = 0
    failed: list[str] = field(default_factory=list)


class RetentionSweeper:
    """Deletes audio past its retention and archives raw inputs as Ogg/Opus."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        store: ObjectStore,
        clock: Clock,
        policy: RetentionPolicy,
        archiver: AudioArchiver,
        lock: JobLock,
        metrics: RetentionMetrics,
    ) -> None:
        self._uow = uow
        self._store = store
        self._clock = clock
        self.policy = policy
        self._archiver = archiver
        self._lock = lock
        self._metrics = metrics

    async def sweep(self, now: datetime | None = None) -> SweepReport:
        """One sweep at ``now`` (the clock's time when omitted), unless another process runs one."""
        async with self._lock.hold(LOCK_NAME) as taken:
            if not taken:
                log.info("retention sweep skipped: another process is running it")
                return SweepReport(ran=False)
            report = SweepReport()
            when = now or self._clock.now()
            for kind, prefix in KINDS:
                try:
                    objects = await self._store.list_objects(prefix)
                except AvatarError as exc:
                    self._fail(report, kind, f"listing {prefix}: {exc.message}")
                    continue
                due = [o for o in objects if self._age(o.key, when) >= self.policy.keep_for(kind)]
                await self._delete(kind, due, when, report)
                if kind == RAW_INPUT and self.policy.archive_after is not None:
                    kept = {o.key for o in due}
                    todo = [
                        o
                        for o in objects
                        if o.key not in kept
                        and not o.key.endswith(ARCHIVED_SUFFIX)
                        and self._age(o.key, when) >= self.policy.archive_after
                    ]
                    for item in todo:
                        await self._archive(item, report)
            self._metrics.finished(time.time(), ok=not report.failed)
            log.info(
                "retention sweep: deleted %s, archived %d, %d failure(s)",
                dict(report.deleted),
                report.archived,
                len(report.failed),
            )
            return report

    def crashed(self) -> None:
        """Count a sweep that stopped on an unexpected error (the scheduler tries again later)."""
        self._metrics.failed("sweep")
        self._metrics.finished(time.time(), ok=False)

    @staticmethod
    def _age(key: str, now: datetime) -> timedelta:
        stamp = key_time(key)
        return now - stamp if stamp is not None else timedelta(0)  # no time in the key: never due

    def _fail(self, report: SweepReport, kind: str, what: str) -> None:
        log.warning("retention sweep: %s", what)
        report.failed.append(what)
        self._metrics.failed(kind)

    async def _delete(self, kind: str, due: list[StoredObject], when: datetime, report: SweepReport) -> None:
        for start in range(0, len(due), _BATCH):
            batch = due[start : start + _BATCH]
            try:
                async with self._uow() as tx:
                    report.rows_expired += await tx.retention.mark_expired([o.key for o in batch], when)
                    await tx.commit()
            except AvatarError as exc:
                self._fail(report, kind, f"marking {len(batch)} {kind} row(s) expired: {exc.message}")
                continue  # the objects stay until their rows say "expired"
            objects = size = 0
            for item in batch:
                try:
                    await self._store.delete(item.key)
                except AvatarError as exc:
                    self._fail(report, kind, f"deleting {item.key}: {exc.message}")
                    continue
                objects += 1
                size += item.size
            report.deleted[kind] += objects
            report.deleted_bytes[kind] += size
            self._metrics.swept(kind, objects, size)

    async def _archive(self, item: StoredObject, report: SweepReport) -> None:
        try:
            audio = await self._store.get(item.key)
            archived = await self._archiver.to_opus(audio)
            new_key = archived_key(item.key)
            url = await self._store.put(new_key, archived.data, "audio/ogg")
            async with self._uow() as tx:
                await tx.retention.replace_input_audio(item.key, url)
                await tx.commit()
            await self._store.delete(item.key)
            after = next((o.size for o in await self._store.list_objects(new_key) if o.key == new_key), 0)
        except (AvatarError, ValueError) as exc:
            self._fail(report, "archive", f"archiving {item.key}: {exc}")
            return
        report.archived += 1
        report.archived_bytes_before += item.size
        report.archived_bytes_after += after
        self._metrics.archived(1, item.size, after)


class RetentionScheduler:
    """Runs the sweep ``first_delay_s`` after start and then every ``interval_s`` until closed."""

    def __init__(self, sweeper: RetentionSweeper, *, interval_s: float, first_delay_s: float) -> None:
        self._sweeper = sweeper
        self._interval = interval_s
        self._first = first_delay_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="retention-sweep")

    async def _loop(self) -> None:
        await asyncio.sleep(self._first)
        while True:
            try:
                await self._sweeper.sweep()
            except Exception:  # the next round tries again; the failure is counted and logged
                log.exception("retention sweep failed")
                self._sweeper.crashed()
            await asyncio.sleep(self._interval)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
