"""The storage spool on disk (docs/resilience.md): one file per record in ``<data_dir>/spool``.

A record's file is named by its place in the order (``00000000000000000042.rec``) and holds the
record's JSON sealed with the AES-256-GCM envelope of ``infrastructure/crypto.py``, with the file
name as associated data: a record that was altered, cut short, or renamed to another place in the
order does not open. Each file is written to a temporary name, fsynced, linked to its final name
(never over an existing one) and the directory fsynced, so a record the caller was told is kept
survives a crash. Records that can never be applied go to ``set_aside/`` for the operator.

One owner: the spool holds an exclusive ``flock`` on ``<root>/.lock`` from its opening until
:meth:`FileSpool.close` (or its process ends, when the kernel drops the lock), so two processes
never append to or replay the same journal; the second one fails to start with
``SpoolLockedError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from pathlib import Path

from avatar.application.ports.spool import (
    SpoolCorruptError,
    SpoolDepth,
    SpoolEntry,
    SpoolFullError,
    SpoolLockedError,
)
from avatar.application.storage_records import RECORDS, SpoolRecord
from avatar.infrastructure.crypto import Envelope

log = logging.getLogger(__name__)

SUFFIX = ".rec"
SET_ASIDE = "set_aside"
LOCK_FILE = ".lock"
_CONTEXT = b"avatar-spool|"


def _name(seq: int) -> str:
    return f"{seq:020d}{SUFFIX}"


def _own(root: Path) -> int:
    """An open descriptor holding the exclusive lock of ``root``; raises when another holds it."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLockedError(
            f"the storage spool {root} is owned by another process; give each orchestrator process "
            "its own data_dir or spool.directory (docs/resilience.md)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSpool:
    """Satisfies ``avatar.application.ports.spool.WriteSpool``; one owner process per directory."""

    def __init__(self, root: Path, envelope: Envelope, *, max_records: int, max_bytes: int) -> None:
        self.root = root
        self._envelope = envelope
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._lock = asyncio.Lock()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._owner: int | None = _own(root)
        (root / SET_ASIDE).mkdir(exist_ok=True, mode=0o700)
        self._index: dict[int, int] = {e.seq: e.size for e in self._scan()}
        self._next = max(self._index, default=0) + 1
        if self._index:
            log.warning("storage spool %s holds %d record(s) to replay", root, len(self._index))

    def close(self) -> None:
        """Release the directory's lock (idempotent)."""
        fd, self._owner = self._owner, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:
        # A spool dropped without close() must not keep its directory locked in this process.
        with contextlib.suppress(Exception):
            self.close()

    def _scan(self) -> list[SpoolEntry]:
        found = []
        for path in self.root.iterdir():
            if path.suffix != SUFFIX or not path.stem.isdigit():
                continue
            with contextlib.suppress(FileNotFoundError):
                found.append(SpoolEntry(int(path.stem), path.stat().st_size))
        return sorted(found, key=lambda e: e.seq)

    @property
    def pending(self) -> bool:
        return bool(self._index)

    def depth(self) -> SpoolDepth:
        set_aside = sum(1 for _ in (self.root / SET_ASIDE).glob(f"*{SUFFIX}"))
        return SpoolDepth(
            records=len(self._index),
            bytes=sum(self._index.values()),
            set_aside=set_aside,
            max_records=self._max_records,
            max_bytes=self._max_bytes,
        )

    async def append(self, record: SpoolRecord) -> None:
        payload = RECORDS.dump_json(record)
        async with self._lock:
            seq = self._next
            blob = await asyncio.to_thread(self._envelope.seal, payload, _CONTEXT + _name(seq).encode())
            held = sum(self._index.values())
            if len(self._index) + 1 > self._max_records or held + len(blob) > self._max_bytes:
                raise SpoolFullError(f"storage spool full ({len(self._index)} records, {held} bytes)")
            seq = await asyncio.to_thread(self._write, seq, blob)
            self._next = seq + 1
            self._index[seq] = len(blob)

    def _write(self, seq: int, blob: bytes) -> int:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".spool.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
                out.flush()
                os.fsync(out.fileno())
            # The record's seal names its file: a record is only ever linked under its own name.
            os.link(tmp, self.root / _name(seq))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _fsync_dir(self.root)
        return seq

    async def entries(self) -> list[SpoolEntry]:
        async with self._lock:
            found = await asyncio.to_thread(self._scan)
            self._index = {e.seq: e.size for e in found}
            return found

    async def load(self, entry: SpoolEntry) -> SpoolRecord:
        name = _name(entry.seq)
        try:
            blob = await asyncio.to_thread((self.root / name).read_bytes)
            payload = await asyncio.to_thread(self._envelope.open, blob, _CONTEXT + name.encode())
            return RECORDS.validate_json(payload)
        except FileNotFoundError:
            raise
        except Exception as exc:  # any way a record fails to open or parse makes it unreadable
            raise SpoolCorruptError(f"{name}: {type(exc).__name__}: {exc}") from exc

    async def remove(self, entry: SpoolEntry) -> None:
        async with self._lock:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, self.root / _name(entry.seq))
            self._index.pop(entry.seq, None)

    async def set_aside(self, entry: SpoolEntry, reason: str) -> None:
        name = _name(entry.seq)
        async with self._lock:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(
                    os.replace, self.root / name, self.root / SET_ASIDE / f"{entry.seq:020d}.{reason}{SUFFIX}"
                )
            self._index.pop(entry.seq, None)
        log.error("storage spool: record %s set aside (%s) in %s", name, reason, self.root / SET_ASIDE)
