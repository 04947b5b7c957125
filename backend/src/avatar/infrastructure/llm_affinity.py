"""Which of several identical model servers answers a session.

The embedded placement can run one llama.cpp server per live session it admits (docs/resilience.md,
"One model server per session"). A server keeps the work of its last prompt and reuses it for the
next prompt that starts with the same tokens, so a session that keeps a server to itself computes
only its new turn instead of its whole history. :class:`SessionAffinity` keeps that mapping: a
session's requests go to the server it used last while no other session uses it; otherwise to a
server nobody uses (the least recently used); and when every started server is in use by another
session, it asks for one more to be started. A server that refused a connection is passed over for
a while, and the sessions on it move to another one, so a restarting server costs its sessions a
recomputed prompt, not a failed reply.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence

#: Seconds a server that refused a connection is passed over (its supervisor restarts it within
#: about two seconds; :meth:`SessionAffinity.recovered` ends it sooner).
DOWN_FOR_S = 10.0
#: A server that served another session less than this long ago is taken: a session new to the
#: servers goes to one that is not, and when every started server is taken it asks for one more.
IN_USE_FOR_S = 120.0


class SessionAffinity:
    """Sticky assignment of session keys to server base URLs: a session keeps its server while
    no other session uses it; otherwise it takes a server nobody uses (the least recently used),
    and when every started server is taken, ``on_demand`` is called so one more can be started
    (:meth:`activate` once it answers). Only the first ``active`` of ``urls`` are used."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        active: int | None = None,
        on_demand: Callable[[], None] | None = None,
        remember: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls: tuple[str, ...] = tuple(u.rstrip("/") for u in urls)
        self.on_demand = on_demand
        self._active = len(self.urls) if active is None else max(1, min(active, len(self.urls)))
        self._remember = remember
        self._clock = clock
        self._owner: OrderedDict[uuid.UUID, int] = OrderedDict()
        self._ticks = itertools.count(1)
        self._last_used = [0] * len(self.urls)
        self._last_key: list[uuid.UUID | None] = [None] * len(self.urls)
        self._last_at = [-math.inf] * len(self.urls)
        self._down_until = [0.0] * len(self.urls)

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def active(self) -> tuple[str, ...]:
        """The servers in use (started and answering, or restarting)."""
        return self.urls[: self._active]

    def activate(self) -> None:
        """The next configured server has started: use it from now on."""
        self._active = min(len(self.urls), self._active + 1)

    def url_for(self, key: uuid.UUID | None) -> str:
        """The server for ``key``'s next request (``None``: a caller without a session, which
        never owns a server)."""
        if len(self.urls) == 1:
            return self.urls[0]
        index = self._owner.get(key) if key is not None else None
        if index is None or self._is_down(index) or self._taken(index, key):
            index = self._pick(key, stay=index)
        if (
            key is not None
            and self._taken(index, key)
            and self._active < len(self.urls)
            and self.on_demand is not None
        ):
            self.on_demand()
        self._last_used[index] = next(self._ticks)
        self._last_key[index] = key
        self._last_at[index] = self._clock()
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
        return any(not self._is_down(i) for i in range(self._active))

    def recovered(self) -> None:
        """Every server is known to answer again (a supervisor restarted one)."""
        self._down_until = [0.0] * len(self.urls)

    def _is_down(self, index: int) -> bool:
        return self._down_until[index] > self._clock()

    def _taken(self, index: int, key: uuid.UUID | None) -> bool:
        """Another session used ``index`` last, recently (its prompt is what the server holds)."""
        other = self._last_key[index]
        return other is not None and other != key and self._clock() - self._last_at[index] < IN_USE_FOR_S

    def _pick(self, key: uuid.UUID | None, stay: int | None) -> int:
        up = [i for i in range(self._active) if not self._is_down(i)] or list(range(self._active))
        free = [i for i in up if not self._taken(i, key)]
        if free:
            return min(free, key=lambda i: self._last_used[i])
        if stay is not None and stay in up:
            return stay  # every server is taken: keep the one this session had
        return min(up, key=lambda i: self._last_used[i])
