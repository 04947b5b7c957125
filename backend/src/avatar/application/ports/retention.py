"""Ports of the retention sweep (docs/security.md, "Retention"): the Opus archiver, the lock that
lets one process sweep at a time, and the sweep's metrics."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ArchivedAudio:
    """Audio re-encoded for keeping: the Ogg/Opus bytes and the duration they play."""

    data: bytes
    duration_s: float


class AudioArchiver(Protocol):
    """Re-encodes a stored utterance (WAV) as Ogg/Opus."""

    async def to_opus(self, audio: bytes) -> ArchivedAudio:
        """Raises ``ValueError`` when ``audio`` is not decodable audio."""
        ...


class JobLock(Protocol):
    """A lock shared by every process of a deployment, held while one of them runs a job."""

    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Try to take the lock ``name`` without waiting; the context yields whether it was taken
        (and releases it on exit). A process that dies releases it too."""
        ...


class RetentionMetrics(Protocol):
    """What the sweep reports (Prometheus in the app)."""

    def swept(self, kind: str, objects: int, size: int) -> None:
        """``objects`` of ``kind`` (``raw_input``, ``fast``, ``hq``) holding ``size`` bytes deleted."""
        ...

    def archived(self, objects: int, size_before: int, size_after: int) -> None: ...

    def failed(self, kind: str, count: int = 1) -> None: ...

    def finished(self, timestamp: float, ok: bool) -> None:
        """A sweep ended at ``timestamp`` (Unix seconds); ``ok`` when nothing failed."""
        ...
