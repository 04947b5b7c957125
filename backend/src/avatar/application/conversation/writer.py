"""Background persistence: writes leave the audio path at once; a failed write is reported at once.

One retry policy per write: the adapter that talks to the store retries what it can tell is
transient (the database transaction replays on a fresh connection, the S3 store re-sends, the
Redis client reconnects) and raises when that is spent or when the failure is permanent. The
writer does not retry on top of that: a second layer multiplied the attempts (up to 16 for one
database write) and retried errors the adapter had deliberately refused to retry (a rejected row).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

WriteOp = Callable[[], Awaitable[None]]
FailureHandler = Callable[[str, BaseException], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Job:
    what: str
    op: WriteOp


class BackgroundWriter:
    """A FIFO of write operations run by one worker task, so a session's writes keep their order
    (the turn row before its transcription) while the pipeline never waits for storage.

    Each operation runs once (its adapter has already retried what was worth retrying); when it
    raises, ``on_failure`` is awaited (log + client ``error`` event + metric) and the next job runs.
    """

    def __init__(self, *, on_failure: FailureHandler, name: str = "writer") -> None:
        self._on_failure = on_failure
        self._name = name
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.completed = 0
        self.failed = 0

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=self._name)

    def submit(self, what: str, op: WriteOp) -> None:
        """Queue ``op``; returns immediately (never blocks the caller)."""
        self._jobs.put_nowait(_Job(what, op))
        self.start()

    @property
    def pending(self) -> int:
        return self._jobs.qsize()

    async def drain(self) -> None:
        """Wait until every job submitted so far has finished (or failed loudly)."""
        await self._jobs.join()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Finish the queued jobs (bounded by ``timeout_s``), then stop the worker."""
        if self._worker is None:
            return
        self._jobs.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), timeout_s)
        except TimeoutError:
            left = self._jobs.qsize()
            log.error("%s: %d write(s) still pending at shutdown were abandoned", self._name, left)
            self._worker.cancel()
        self._worker = None

    async def _run(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                if job is None:
                    return
                await self._attempt(job)
            finally:
                self._jobs.task_done()

    async def _attempt(self, job: _Job) -> None:
        try:
            await job.op()
        except Exception as exc:
            self.failed += 1
            log.error("%s: %s failed: %s", self._name, job.what, exc)
            try:
                await self._on_failure(job.what, exc)
            except Exception:  # the report itself must not stop the writer
                log.exception("%s: failure handler raised", self._name)
            return
        self.completed += 1
