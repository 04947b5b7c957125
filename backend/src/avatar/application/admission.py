"""Admission that one user or one address cannot starve (docs/security.md, "Admission"): at most so
many session creations per minute per user and per client address, in this process."""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable

from avatar.domain.errors import RateLimitedError


class SlidingWindow:
    """At most ``limit`` events per ``window_s`` seconds for each key."""

    def __init__(self, limit: int, window_s: float, now: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self._now = now
        self._events: dict[str, deque[float]] = {}

    def check(self, key: str, what: str) -> None:
        """Raise :class:`RateLimitedError` when ``key`` has no room for one more event now."""
        now = self._now()
        events = self._events.get(key)
        if events is None:
            return
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            retry = max(1, math.ceil(events[0] + self.window_s - now))
            raise RateLimitedError(
                f"{what} may create {self.limit} sessions per {self.window_s:g} s; retry in {retry} s",
                retry_after_s=retry,
            )

    def add(self, key: str) -> None:
        """Count one event of ``key`` (call :meth:`check` first)."""
        now = self._now()
        self._events.setdefault(key, deque()).append(now)
        if len(self._events) > 10_000:  # forget idle keys so the table stays small
            self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window_s}


class SessionAdmission:
    """Per-user and per-address limits on creating sessions."""

    def __init__(
        self, *, per_user_per_minute: int, per_address_per_minute: int, now: Callable[[], float]
    ) -> None:
        self._users = SlidingWindow(per_user_per_minute, 60.0, now)
        self._addresses = SlidingWindow(per_address_per_minute, 60.0, now)

    def admit_creation(self, user_id: uuid.UUID, address: str | None) -> None:
        """Count one session creation; raises :class:`RateLimitedError` when over a limit (a
        refused creation is not counted)."""
        user = str(user_id)
        if address:
            self._addresses.check(address, "this address")
        self._users.check(user, "this user")
        if address:
            self._addresses.add(address)
        self._users.add(user)
