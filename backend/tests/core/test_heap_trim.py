"""The heap trimmer gives freed memory back (glibc) and stops with the container."""

from __future__ import annotations

import asyncio
import platform

import psutil
import pytest

from avatar.infrastructure.heap_trim import HeapTrimmer

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


async def test_freed_buffers_go_back_to_the_system() -> None:
    trimmer = HeapTrimmer()
    assert trimmer.available
    me = psutil.Process()
    # Many mid-sized buffers (below glibc's mmap threshold, so they live in the heap), then all
    # but the last freed: without a trim the heap keeps the freed space.
    chunks = [bytearray(64 * 1024) for _ in range(3000)]
    for c in chunks:
        c[::4096] = b"x" * len(c[::4096])
    keep = chunks[-1]
    del chunks
    before = me.memory_info().rss
    await trimmer.trim_now()
    after = me.memory_info().rss
    assert trimmer.trims == 1
    assert before - after > 50 * 2**20, (before, after)
    assert keep[0] == ord("x")


async def test_the_periodic_trim_runs_and_stops() -> None:
    trimmer = HeapTrimmer(interval_s=0.01)
    trimmer.start()
    for _ in range(500):
        if trimmer.trims >= 2:
            break
        await asyncio.sleep(0.01)
    await trimmer.aclose()
    assert trimmer.trims >= 2
    done = trimmer.trims
    await asyncio.sleep(0.05)
    assert trimmer.trims == done
