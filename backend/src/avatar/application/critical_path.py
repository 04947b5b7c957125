"""Background work steps aside while a turn is on its critical path (docs/adr/0014-voice-latency.md).

On a small CPU every core counts between the end of a person's speech and the first audio of the
reply: the final decode, the model's first clause and the voice's first chunk. Prosody analysis
and the HQ pass are not on that path, so their queue handlers wait (bounded) until no reply of
this process is between its final transcript and its first audio chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from avatar.application.ports.queue import TaskHandler

log = logging.getLogger(__name__)


class CriticalPath:
    """Counts the replies of this process that have not sent their first audio yet.

    ``max_wait_s`` bounds how long background work waits, so a reply that hangs (a stuck model)
    cannot starve it. Call everything on one event loop.
    """

    def __init__(self, max_wait_s: float = 5.0) -> None:
        self.max_wait_s = max_wait_s
        self._active = 0
        self._clear = asyncio.Event()
        self._clear.set()
        #: Background jobs that waited, and those that gave up waiting (``max_wait_s``).
        self.deferred = 0
        self.waits_expired = 0

    @property
    def active(self) -> int:
        return self._active

    def enter(self) -> None:
        """A reply began (final transcript in hand)."""
        self._active += 1
        self._clear.clear()

    def leave(self) -> None:
        """The reply sent its first audio, or ended without any."""
        if self._active <= 0:
            raise RuntimeError("CriticalPath.leave() without a matching enter()")
        self._active -= 1
        if self._active == 0:
            self._clear.set()

    async def clear(self) -> None:
        """Return once no reply is on its critical path, or after ``max_wait_s``."""
        if self._clear.is_set():
            return
        self.deferred += 1
        try:
            await asyncio.wait_for(self._clear.wait(), self.max_wait_s)
        except TimeoutError:
            self.waits_expired += 1
            log.info("background work waited %.1f s for replies in flight; running anyway", self.max_wait_s)

    def yielding(self, handler: TaskHandler) -> TaskHandler:
        """``handler`` run once the critical path is clear."""

        async def run(payload: dict[str, Any]) -> None:
            await self.clear()
            await handler(payload)

        return run
