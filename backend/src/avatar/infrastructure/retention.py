"""Adapters of the retention sweep (docs/security.md, "Retention"): the Ogg/Opus archiver and the
job lock (:func:`job_lock_for` picks it for a unit-of-work factory).

The lock shared by several processes is PostgreSQL's advisory lock
(:mod:`avatar.infrastructure.database.locks`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from avatar.application.ports.retention import ArchivedAudio, JobLock
from avatar.application.ports.storage import UnitOfWorkFactory


class OpusArchiver:
    """WAV (or any decodable audio) to Ogg/Opus at ``bit_rate``, in a worker thread."""

    def __init__(self, bit_rate: int = 24000) -> None:
        self.bit_rate = bit_rate

    def _encode(self, audio: bytes) -> ArchivedAudio:
        from avatar_common.audio import AudioDecodeError, decode_audio, encode_audio

        try:
            decoded = decode_audio(audio)
        except AudioDecodeError as exc:
            raise ValueError(f"the stored audio cannot be decoded: {exc}") from exc
        data = encode_audio(decoded.samples, decoded.sample_rate, "opus", bit_rate=self.bit_rate)
        return ArchivedAudio(data=data, duration_s=decoded.duration_s)

    async def to_opus(self, audio: bytes) -> ArchivedAudio:
        return await asyncio.to_thread(self._encode, audio)


class LocalJobLock:
    """A job lock for one process (the in-memory storage of the instant engines and the fakes)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        if name in self._held:
            yield False
            return
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)


def job_lock_for(uow: UnitOfWorkFactory) -> JobLock:
    """PostgreSQL's advisory lock when ``uow`` is the SQL one (shared by every replica), else a
    lock of this process."""
    from avatar.infrastructure.database import SqlUnitOfWorkFactory
    from avatar.infrastructure.database.locks import PostgresJobLock

    if isinstance(uow, SqlUnitOfWorkFactory):
        return PostgresJobLock(uow.engine)
    return LocalJobLock()
