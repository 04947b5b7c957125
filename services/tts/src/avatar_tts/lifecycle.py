"""Model lifecycle: resident and on-demand models, load on first use, LRU eviction, idle unload.

"On-demand loading" (docs/design-notes.md §1): VRAM is scarce, so an on-demand model (the HQ
engine) is loaded when first needed, unloaded after ``idle_unload_s`` without use, and evicted
least-recently-used first when loading another would exceed the memory budget. Resident models are
loaded at start and never evicted. A model in use (a lease is held) is never unloaded under its
user.

Memory is measured, not guessed: the growth of CUDA memory (``torch.cuda.memory_allocated``)
when torch sees a GPU, otherwise of the process RSS (psutil), across each load. Before a model
was ever loaded its engine's estimate stands in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from avatar_tts.errors import EngineUnavailableError, MemoryShortError, TTSError

log = logging.getLogger(__name__)

MemoryProbe = Callable[[], float]
LoadObserver = Callable[[str, float], None]


def process_memory_mb() -> float:
    """GPU memory allocated by torch when a GPU is present, else this process's RSS, in MB."""
    import sys

    torch: Any = sys.modules.get("torch")  # only if already imported: never import torch for this
    if torch is not None and torch.cuda.is_available():
        return float(torch.cuda.memory_allocated()) / 1e6
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e6


@dataclass
class _Model:
    name: str
    mode: str
    load: Callable[[], None]
    unload: Callable[[], None]
    resident: bool
    size_mb: float
    loaded: bool = False
    users: int = 0
    last_used: float = 0.0
    loading: asyncio.Task[None] | None = None
    measured: bool = False


class ModelManager:
    """Loads and unloads models under a memory budget.

    Args:
        budget_mb: Memory all loaded models together may use.
        idle_unload_s: An unused on-demand model is unloaded after this many seconds.
        probe: Memory in use now, in MB (see :func:`process_memory_mb`).
        on_load: Called with (mode, seconds) after each load (the ``tts_model_load_seconds`` metric).
        clock: Monotonic time source.
    """

    def __init__(
        self,
        budget_mb: float,
        idle_unload_s: float,
        *,
        probe: MemoryProbe = process_memory_mb,
        on_load: LoadObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budget = budget_mb
        self._idle = idle_unload_s
        self._probe = probe
        self._on_load = on_load
        self._clock = clock
        self._models: dict[str, _Model] = {}
        # One lock for the bookkeeping; loads themselves run outside it, in worker threads.
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        #: Recent (what, model) events: loaded, evicted, idle, shutdown.
        self.events: collections.deque[tuple[str, str]] = collections.deque(maxlen=200)

    def register(
        self,
        name: str,
        *,
        load: Callable[[], None],
        unload: Callable[[], None],
        resident: bool,
        estimate_mb: float,
        mode: str,
    ) -> None:
        """Add a model (not loaded yet). ``mode`` labels its load-time metric (fast|hq)."""
        if name in self._models:
            raise ValueError(f"model {name!r} is already registered")
        self._models[name] = _Model(name, mode, load, unload, resident, max(0.0, estimate_mb))

    def is_loaded(self, name: str) -> bool:
        return self._models[name].loaded

    def loaded(self) -> list[str]:
        return [m.name for m in self._models.values() if m.loaded]

    @property
    def budget_mb(self) -> float:
        return self._budget

    def used_mb(self) -> float:
        return sum(m.size_mb for m in self._models.values() if m.loaded)

    def status(self) -> dict[str, dict[str, object]]:
        return {
            m.name: {
                "loaded": m.loaded,
                "resident": m.resident,
                "in_use": m.users,
                "size_mb": round(m.size_mb, 1),
                "mode": m.mode,
            }
            for m in self._models.values()
        }

    async def start(self) -> None:
        """Load resident models and start the idle reaper."""
        for model in self._models.values():
            if model.resident:
                async with self.lease(model.name):
                    pass
        if self._reaper is None and self._idle > 0:
            self._reaper = asyncio.create_task(self._reap_forever(), name="tts-idle-unload")

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        async with self._lock:
            for model in self._models.values():
                if model.loaded:
                    await self._unload(model, "shutdown")

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[None]:
        """Use a model: loads it first if needed; it cannot be unloaded while the lease is held.

        Raises:
            MemoryShortError: it does not fit in the budget even after evicting idle models.
            EngineUnavailableError: loading failed.
        """
        model = self._models.get(name)
        if model is None:
            raise KeyError(name)
        await self._ensure_loaded(model)
        try:
            yield
        finally:
            model.users -= 1
            model.last_used = self._clock()

    async def _ensure_loaded(self, model: _Model) -> None:
        while True:
            async with self._lock:
                if model.loaded:
                    model.users += 1
                    model.last_used = self._clock()
                    return
                task = model.loading
                if task is None:
                    await self._make_room(model)
                    # Concurrent first users all await this one task: a single load.
                    task = asyncio.create_task(self._load(model), name=f"load-{model.name}")
                    model.loading = task
            try:
                await asyncio.shield(task)
            except TTSError:
                raise
            except Exception as exc:
                raise EngineUnavailableError(
                    f"the {model.name} model failed to load: {type(exc).__name__}: {exc}"
                ) from exc

    async def _make_room(self, model: _Model) -> None:
        need = model.size_mb
        if need > self._budget:
            raise MemoryShortError(
                f"the {model.name} model needs about {need:.0f} MB, "
                f"more than the {self._budget:.0f} MB budget"
            )
        idle = (m for m in self._models.values() if m.loaded and not m.resident and m.users == 0)
        candidates = sorted(idle, key=lambda m: m.last_used)
        while self.used_mb() + need > self._budget and candidates:
            victim = candidates.pop(0)
            await self._unload(victim, "evicted")
        if self.used_mb() + need > self._budget:
            raise MemoryShortError(
                f"not enough memory for the {model.name} model ({need:.0f} MB needed, "
                f"{self._budget - self.used_mb():.0f} MB of {self._budget:.0f} MB free; models in use: "
                f"{', '.join(m.name for m in self._models.values() if m.users) or 'none'})"
            )

    async def _load(self, model: _Model) -> None:
        try:
            before = self._probe()
            start = time.perf_counter()
            await asyncio.to_thread(model.load)
            seconds = time.perf_counter() - start
            grown = self._probe() - before
            async with self._lock:
                if grown > 1.0:
                    model.size_mb = grown
                    model.measured = True
                model.loaded = True
                model.last_used = self._clock()
            self.events.append(("loaded", model.name))
            log.info("loaded %s in %.2f s (%.0f MB)", model.name, seconds, model.size_mb)
            if self._on_load is not None:
                self._on_load(model.mode, seconds)
        finally:
            model.loading = None

    async def _unload(self, model: _Model, why: str) -> None:
        await asyncio.to_thread(model.unload)
        model.loaded = False
        self.events.append((why, model.name))
        log.info("unloaded %s (%s)", model.name, why)

    async def unload_idle(self) -> list[str]:
        """Unload on-demand models unused for ``idle_unload_s``; returns their names."""
        now = self._clock()
        done = []
        async with self._lock:
            for model in self._models.values():
                if (
                    model.loaded
                    and not model.resident
                    and model.users == 0
                    and now - model.last_used >= self._idle
                ):
                    await self._unload(model, "idle")
                    done.append(model.name)
        return done

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self._idle / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.unload_idle()
            except Exception:  # the reaper must survive an unload failure
                log.exception("idle unload failed")
