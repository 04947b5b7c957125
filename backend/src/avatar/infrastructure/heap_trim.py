"""Give freed heap memory back to the operating system now and then (docs/adr/0014-voice-latency.md).

The orchestrator allocates and frees many short-lived audio buffers on several threads (the
recognizer, the voices, the VAD); glibc keeps much of the freed memory in its arenas, so the
process's resident size stays near its peak. ``malloc_trim(0)`` returns the free parts: in a
20-turn conversation it took the orchestrator from ~1200 to ~970 MiB. Elsewhere than glibc the
trimmer does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _glibc_trim() -> Callable[[], bool] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> bool:
        return bool(trim(0))

    return run


class HeapTrimmer:
    """Calls ``malloc_trim`` on a worker thread every ``interval_s`` until :meth:`aclose`."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self.interval_s = interval_s
        self._trim = _glibc_trim()
        self._task: asyncio.Task[None] | None = None
        #: Trims done (a count for tests and the curious).
        self.trims = 0

    @property
    def available(self) -> bool:
        return self._trim is not None

    async def trim_now(self) -> None:
        if self._trim is not None:
            await asyncio.to_thread(self._trim)
            self.trims += 1

    def start(self) -> None:
        if self._trim is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="heap-trim")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.trim_now()
            except Exception:  # a trim is an optimisation: never a reason to stop
                log.exception("malloc_trim failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
