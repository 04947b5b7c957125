"""Where a long-running orchestrator's Python memory grows: ``tracemalloc`` snapshots diffed.

Opt-in, for soaks only (docs/deploy.md, "Load testing"): tracing every allocation slows the process
several times over. The served instant engines start an :class:`AllocationProbe` when
``AVATAR_INSTANT_TRACEMALLOC`` names a file (``avatar bench soak --tracemalloc`` sets it): the probe
takes a first snapshot ``mark_s`` seconds after start (after the soak's warm-up) and, when the
server closes, writes the allocation sites that grew most since then to that file, largest first.
What grows there but not in ``stored MB`` is memory the process keeps: a leak or a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

#: Frames kept per allocation: enough to see which caller of a shared helper allocates.
FRAMES = 8


@dataclass(frozen=True)
class Growth:
    """One allocation site: how much more it holds than at the mark."""

    size_diff: int
    count_diff: int
    size: int
    #: The allocating line, innermost last (``file:line``).
    where: tuple[str, ...]

    def line(self) -> str:
        return f"{self.size_diff / 1e6:+.3f} MB ({self.count_diff:+d} blocks, now {self.size / 1e6:.3f} MB)"


class AllocationProbe:
    """Traces allocations from :meth:`start`; :meth:`mark` is the baseline :meth:`growth` diffs to."""

    def __init__(self, frames: int = FRAMES) -> None:
        self.frames = frames
        self._mark: tracemalloc.Snapshot | None = None
        self._started_here = False

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._started_here = True

    def stop(self) -> None:
        if self._started_here:
            tracemalloc.stop()
            self._started_here = False

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        gc.collect()
        # The probe's own bookkeeping is not the process's growth.
        return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])

    def mark(self) -> None:
        self._mark = self._snapshot()

    def growth(self, top: int = 25) -> list[Growth]:
        """The ``top`` sites that grew most since :meth:`mark` (nothing before a mark)."""
        if self._mark is None or not tracemalloc.is_tracing():
            return []
        stats = self._snapshot().compare_to(self._mark, "traceback")
        grown = sorted((s for s in stats if s.size_diff > 0), key=lambda s: s.size_diff, reverse=True)
        return [
            Growth(s.size_diff, s.count_diff, s.size, tuple(f"{f.filename}:{f.lineno}" for f in s.traceback))
            for s in grown[:top]
        ]

    def report(self, top: int = 25) -> str:
        lines = []
        for g in self.growth(top):
            lines.append(g.line())
            lines += [f"    {where}" for where in g.where]
        return "\n".join(lines) + "\n" if lines else "no growth traced (no mark taken)\n"


class ProbeRun:
    """The probe as the served instant engines run it: mark after ``mark_s``, report at close."""

    def __init__(self, out: Path, mark_s: float, probe: AllocationProbe | None = None) -> None:
        self.out, self.mark_s = out, mark_s
        self.probe = probe or AllocationProbe()
        self._task: asyncio.Task[None] | None = None

    async def _mark_later(self) -> None:
        await asyncio.sleep(self.mark_s)
        self.probe.mark()

    def start(self) -> None:
        self.probe.start()
        with contextlib.suppress(RuntimeError):  # no running loop: the mark is never taken
            self._task = asyncio.get_running_loop().create_task(self._mark_later(), name="tracemalloc-mark")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        text = self.probe.report()
        await asyncio.to_thread(self.out.write_text, text, "utf-8")
        self.probe.stop()
