"""Which of several identical model servers answers a session.

The embedded placement runs one llama.cpp server per live session it admits (docs/resilience.md,
"One model server per session"). A server keeps the work of its last prompt and reuses it for the
next prompt that starts with the same tokens, so a session that always comes back to the same
server computes only its new turn instead of its whole history. :class:`SessionAffinity` keeps that
mapping: a session's requests go to the server it used last; a session new to it takes the server
used least recently (whose cached prompt is the least likely to be wanted again). A server that
refused a connection is passed over for a while, and the sessions on it move to another one, so a
restarting server costs its sessions a recomputed prompt, not a failed reply.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence

#: Seconds a server that refused a connection is passed over (its supervisor restarts it within
#: about two seconds; :meth:`SessionAffinity.recovered` ends it sooner).
DOWN_FOR_S = 10.0


class SessionAffinity:
    """Sticky, least-recently-used assignment of session keys to server base URLs."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        remember: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls: tuple[str, ...] = tuple(u.rstrip("/") for u in urls)
        self._remember = remember
        self._clock = clock
        self._owner: OrderedDict[uuid.UUID, int] = OrderedDict()
        self._ticks = itertools.count(1)
        self._last_used = [0] * len(self.urls)
        self._down_until = [0.0] * len(self.urls)

    def __len__(self) -> int:
        return len(self.urls)

    def url_for(self, key: uuid.UUID | None) -> str:
        """The server for ``key``'s next request (``None``: a caller without a session)."""
        if len(self.urls) == 1:
            return self.urls[0]
        index = self._owner.get(key) if key is not None else None
        if index is None or self._is_down(index):
            index = self._least_recently_used()
        self._last_used[index] = next(self._ticks)
        if key is not None:
            self._owner[key] = index
            self._owner.move_to_end(key)
            while len(self._owner) > self._remember:
                self._owner.popitem(last=False)
        return self.urls[index]

    def server_of(self, key: uuid.UUID) -> str | None:
        """The server ``key``'s last request went to (``None``: none remembered)."""
        index = self._owner.get(key)
        return self.urls[index] if index is not None else None

    def refused(self, url: str) -> bool:
        """``url`` refused a connection: pass it over for a while. ``True`` when another server
        is left to try."""
        index = self.urls.index(url.rstrip("/"))
        self._down_until[index] = self._clock() + DOWN_FOR_S
        return any(not self._is_down(i) for i in range(len(self.urls)))

    def recovered(self) -> None:
        """Every server is known to answer again (a supervisor restarted one)."""
        self._down_until = [0.0] * len(self.urls)

    def _is_down(self, index: int) -> bool:
        return self._down_until[index] > self._clock()

    def _least_recently_used(self) -> int:
        up = [i for i in range(len(self.urls)) if not self._is_down(i)] or list(range(len(self.urls)))
        return min(up, key=lambda i: self._last_used[i])
