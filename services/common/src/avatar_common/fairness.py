"""Fair slots: at most ``size`` holders of a scarce engine at once, the rest waiting in line.

Shared by the chat model adapter (``avatar.infrastructure.llm``), the recognizer's inference queue
(``avatar_asr.engine``) and the synthesizer (``avatar_tts.service``), so every engine treats many
sessions the same way (docs/architecture.md, "Many sessions on one box"):

* waiters are served round-robin between keys (a key is one session, or ``None`` for callers that
  have no session) and first come, first served within a key, so a session with many requests in
  line cannot starve a session with one;
* a wait is bounded: :meth:`FairSlots.acquire` answers ``False`` when no slot came in time, and the
  caller tells its session ``BUSY`` instead of dropping the request silently;
* a holder is never cancelled to make room for another request: slots pass on only by
  :meth:`FairSlots.release`;
* :meth:`FairSlots.shed` sends every waiter away at once (``False``): the best-effort work of an
  engine (partial transcripts) is the first thing given up under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Hashable


class FairSlots:
    """At most ``size`` holders at once; waiters served round-robin between keys.

    ``size`` 0 means unlimited (no waiting at all). Not thread-safe: use it from one event loop.
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("slots must be 0 (unlimited) or more")
        self.size = size
        self._free = size
        # key -> its waiters in arrival order; the dict's order is the round-robin turn order.
        self._lines: OrderedDict[Hashable, deque[asyncio.Future[bool]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(1 for line in self._lines.values() for w in line if not w.done())

    @property
    def in_use(self) -> int:
        return self.size - self._free if self.size else 0

    def waiting_for(self, key: Hashable) -> int:
        """Waiters of ``key`` still in line."""
        return sum(1 for w in self._lines.get(key, ()) if not w.done())

    async def acquire(self, timeout_s: float, key: Hashable = None) -> bool:
        """Take a slot for ``key``; ``False`` when none came within ``timeout_s`` or the wait was
        shed (:meth:`shed`). Cancelling the caller leaves the line (a slot handed over in the
        meantime passes to the next waiter)."""
        if not self.size:
            return True
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(key, deque()).append(waiter)
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                return await waiter
        except TimeoutError:
            self._abandon(key, waiter)
            return False
        except BaseException:
            self._abandon(key, waiter)
            raise

    def _abandon(self, key: Hashable, waiter: asyncio.Future[bool]) -> None:
        """The waiter leaves the line; a slot handed to it in the meantime goes to the next."""
        if waiter.done() and not waiter.cancelled():
            if waiter.result():
                self.release()
            return
        waiter.cancel()
        line = self._lines.get(key)
        if line is not None:
            with contextlib.suppress(ValueError):
                line.remove(waiter)
            if not line:
                del self._lines[key]

    def release(self) -> None:
        """Give the slot back: it passes straight to the next waiter in round-robin order."""
        if not self.size:
            return
        while self._lines:
            key, line = next(iter(self._lines.items()))
            waiter = line.popleft()
            if line:
                self._lines.move_to_end(key)  # this key has had its turn; the others go first
            else:
                del self._lines[key]
            if not waiter.done():
                waiter.set_result(True)
                return
        self._free += 1

    def shed(self) -> int:
        """Send every waiter away (their :meth:`acquire` answers ``False``); how many were shed."""
        shed = 0
        for line in self._lines.values():
            for waiter in line:
                if not waiter.done():
                    waiter.set_result(False)
                    shed += 1
        self._lines.clear()
        return shed
