"""Reconnect delays shared by the chat clients: exponential with jitter, reset after a good connection."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
