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
  engine (partial transcripts) is the first thing given up under load;
* ``per_key`` caps what one key holds at once (the chat model: one request per session), so with
  several slots one session's second request waits while another session's first is served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Hashable

_NONE = object()  # no key can take a slot now (``None`` is a valid key)


class FairSlots:
    """At most ``size`` holders at once; waiters served round-robin between keys.

    ``size`` 0 means unlimited (no waiting at all). ``per_key`` > 0: at most that many slots held
    by one key at once (its :meth:`release` must then name the key; the key ``None``, callers
    without a session, is not capped); 0: no such cap. Not
    thread-safe: use it from one event loop.
    """

    def __init__(self, size: int, *, per_key: int = 0) -> None:
        if size < 0:
            raise ValueError("slots must be 0 (unlimited) or more")
        if per_key < 0:
            raise ValueError("per_key must be 0 (no cap) or more")
        self.size = size
        self.per_key = per_key
        self._free = size
        self._held: dict[Hashable, int] = {}  # key -> slots it holds (only with ``per_key``)
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
        # Invariant: while a slot is free, no waiter may take it (each is capped by ``per_key``),
        # so a newcomer under its cap takes a free slot without overtaking anybody.
        if self._free > 0 and self._may_hold(key) and not self.waiting_for(key):
            self._grant(key)
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
                self.release(key)
            return
        waiter.cancel()
        self._drop(key, waiter)

    def _drop(self, key: Hashable, waiter: asyncio.Future[bool]) -> None:
        line = self._lines.get(key)
        if line is not None:
            with contextlib.suppress(ValueError):
                line.remove(waiter)
            if not line:
                del self._lines[key]

    def held_by(self, key: Hashable) -> int:
        """Slots ``key`` holds now (counted only with ``per_key``)."""
        return self._held.get(key, 0)

    def _may_hold(self, key: Hashable) -> bool:
        return not self.per_key or key is None or self._held.get(key, 0) < self.per_key

    def _grant(self, key: Hashable) -> None:
        self._free -= 1
        if self.per_key:
            self._held[key] = self._held.get(key, 0) + 1

    def release(self, key: Hashable = None) -> None:
        """Give ``key``'s slot back: it passes straight to the next waiter in round-robin order
        whose key is under its cap; ``key``'s own waiters go behind the other keys' turn."""
        if not self.size:
            return
        if self.per_key:
            left = self._held.get(key, 0) - 1
            if left < 0:
                raise RuntimeError(f"release of a slot {key!r} does not hold")
            if left:
                self._held[key] = left
            else:
                del self._held[key]
        self._free += 1
        if key in self._lines:
            self._lines.move_to_end(key)  # the key just served waits behind the others' turns
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiters: keys in round-robin order, first come first served within a
        key, skipping keys at their cap."""
        while self._free > 0:
            chosen = next((k for k, line in self._lines.items() if line and self._may_hold(k)), _NONE)
            if chosen is _NONE:
                return
            line = self._lines[chosen]
            waiter = line.popleft()
            if line:
                self._lines.move_to_end(chosen)  # this key has had its turn; the others go first
            else:
                del self._lines[chosen]
            if not waiter.done():
                self._grant(chosen)
                waiter.set_result(True)

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
