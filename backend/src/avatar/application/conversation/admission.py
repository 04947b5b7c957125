"""Admission of sessions (docs/deploy.md, "Admission").

A live slot is held by a session with a connected client or a turn in flight (a reply still being
produced after its socket dropped). A session parked for a reconnect (no client, no turn) holds
no live slot: it only costs memory, bounded by its own limit (the oldest is evicted from memory
first, its resumable state kept) and by its age (the reconnect grace period). Every refusal says
when to retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from avatar.domain.errors import CapacityError


def sessions_the_model_can_answer(slots: int, queue_timeout_s: float, reply_s: float) -> int:
    """Live sessions a chat model of ``slots`` slots answers in time (docs/resilience.md,
    "Admission follows the model").

    Each session has at most one request at the model or in its line (the slots are keyed by
    session) and a session just served goes behind the others, so a new request has at most
    ``N - 1`` requests ahead of it and waits at most ``ceil((N - 1) / slots)`` replies of
    ``reply_s``. That stays within ``queue_timeout_s`` while ``N - 1 <= slots * floor(queue_timeout_s
    / reply_s)``; the answer is that largest ``N`` (at least 1).
    """
    if slots < 1 or queue_timeout_s <= 0 or reply_s <= 0:
        raise ValueError("slots, queue_timeout_s and reply_s must be positive")
    return slots * math.floor(queue_timeout_s / reply_s) + 1


@dataclass(frozen=True)
class AdmissionLimits:
    """Args: max_live: sessions connected or replying at once. max_parked: sessions kept in memory
    for a reconnect. retry_after_s: what a refusal tells the client to wait."""

    max_live: int
    max_parked: int
    retry_after_s: int

    def __post_init__(self) -> None:
        if self.max_live < 1:
            raise ValueError(f"max_live must be at least 1, not {self.max_live}")
        if self.max_parked < 0:
            raise ValueError(f"max_parked must not be negative, not {self.max_parked}")
        if self.retry_after_s < 1:
            raise ValueError(f"retry_after_s must be at least 1, not {self.retry_after_s}")


@dataclass(frozen=True, kw_only=True)
class SlotCounts:
    """What admission decides on: one process's sessions holding a live slot and parked."""

    #: Sessions holding a live slot: connected, or replying without a client.
    live: int
    #: Sessions waiting for a reconnect, neither connected nor replying.
    parked: int
    #: Admissions under way (between the check and the session's start).
    reserved: int = 0


@dataclass(frozen=True, kw_only=True)
class AdmissionCounts(SlotCounts):
    """One process's sessions by what they hold (the full report)."""

    #: Sessions with a connected client.
    live_connections: int
    #: Sessions producing a reply (connected or not).
    turns_in_flight: int


class Admission:
    """Decides, from :class:`SlotCounts`, whether one more session may become live."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits

    def check(self, counts: SlotCounts) -> None:
        """Raise :class:`CapacityError` (with ``retry_after_s``) when no live slot is free."""
        if counts.live + counts.reserved >= self.limits.max_live:
            wait = self.limits.retry_after_s
            raise CapacityError(
                f"the server is at its limit of {self.limits.max_live} live sessions; try again in {wait} s",
                retry_after_s=wait,
            )

    def parked_excess(self, counts: SlotCounts) -> int:
        """How many parked sessions must be evicted from memory (oldest first)."""
        return max(0, counts.parked - self.limits.max_parked)
