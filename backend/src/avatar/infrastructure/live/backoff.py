"""What the chat clients share about staying connected: reconnect delays (exponential with jitter,
reset after a good connection) and the loop that runs one session after another."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from avatar.application.ports.chat import ConnectionState

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    initial_s: float = 1.0
    max_s: float = 60.0
    _next: float = 0.0

    def reset(self) -> None:
        self._next = 0.0

    def next_delay(self) -> float:
        """The wait before the next attempt: initial, then doubling up to ``max_s`` (+-20 % jitter)."""
        self._next = self.initial_s if self._next == 0.0 else min(self._next * 2, self.max_s)
        return self._next * random.uniform(0.8, 1.2)


class Reconnecting:
    """A chat client's connection bookkeeping (``state``, ``connects``, ``last_error``) and its
    reconnect loop: a session runs until it ends or fails with one of the client's own errors, then
    the next starts after a backoff delay; anything else ends the loop."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff()
        self._state: ConnectionState = "stopped"
        self._connects = 0
        self.last_error: str | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connects(self) -> int:
        return self._connects

    def _connected(self) -> None:
        """The session is up (joined, subscribed): count it and start the next backoff afresh."""
        self._state = "connected"
        self._connects += 1
        self._backoff.reset()

    async def _reconnect_forever(
        self,
        session: Callable[[], Awaitable[None]],
        errors: tuple[type[BaseException], ...],
        *,
        label: str,
        ended: str,
    ) -> None:
        """Run ``session`` again and again; ``ended`` is the last error when it returns by itself."""
        try:
            while True:
                self._state = "connecting"
                try:
                    await session()
                    self.last_error = ended
                except errors as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self._state = "backoff"
                delay = self._backoff.next_delay()
                log.warning("%s: %s; reconnecting in %.1f s", label, self.last_error, delay)
                await asyncio.sleep(delay)
        finally:
            self._state = "stopped"
