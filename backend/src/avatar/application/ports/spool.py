"""The storage spool port: a durable, ordered journal of writes that could not reach the database
or the object store, replayed when they return (docs/resilience.md).

The records themselves are typed models (``avatar.application.storage_records``); the spool only
keeps them in order, on disk, sealed, within its bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from avatar.application.storage_records import SpoolRecord
from avatar.domain.errors import DependencyError


class SpoolFullError(DependencyError):
    """The storage is unreachable and the spool holds as much as it may: this write is lost."""

    code = "SPOOL_FULL"


class SpoolLockedError(DependencyError):
    """Another process owns the spool directory (one owner per directory, docs/resilience.md)."""

    code = "SPOOL_LOCKED"


class SpoolCorruptError(Exception):
    """A journal record cannot be read back: cut short, altered, or sealed with an unknown key."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One journal record: its place in the order and its size on disk."""

    seq: int
    size: int


@dataclass(frozen=True, slots=True)
class SpoolDepth:
    """What waits in the spool, and how much was set aside as unreadable or refused."""

    records: int
    bytes: int
    set_aside: int
    max_records: int
    max_bytes: int

    @property
    def full(self) -> bool:
        return self.records >= self.max_records or self.bytes >= self.max_bytes


class WriteSpool(Protocol):
    """An append-only journal of :data:`SpoolRecord`, read back in append order."""

    @property
    def pending(self) -> bool:
        """Whether any record waits (writes must then queue behind it to keep their order)."""
        ...

    def depth(self) -> SpoolDepth: ...

    async def append(self, record: SpoolRecord) -> None:
        """Durably add ``record`` at the end (on disk when this returns).

        Raises:
            SpoolFullError: the bounds are reached.
        """
        ...

    async def entries(self) -> list[SpoolEntry]:
        """Every waiting record, oldest first."""
        ...

    async def load(self, entry: SpoolEntry) -> SpoolRecord:
        """Raises ``SpoolCorruptError`` when the record cannot be opened or parsed."""
        ...

    async def remove(self, entry: SpoolEntry) -> None:
        """Forget a record that was applied (removing one already gone is harmless)."""
        ...

    async def set_aside(self, entry: SpoolEntry, reason: str) -> None:
        """Move a record that can never be applied out of the way, kept for the operator."""
        ...

    def close(self) -> None:
        """Give up ownership of the journal (another process may open it then)."""
        ...


class SpoolMetrics(Protocol):
    """Measurements of the spool (Prometheus in production)."""

    def depth(self, records: int, nbytes: int) -> None: ...
    def spooled(self) -> None: ...
    def replayed(self) -> None: ...
    def failed(self, reason: str) -> None: ...
    def full(self) -> None: ...
