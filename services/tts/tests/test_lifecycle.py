"""The model lifecycle manager under a small budget: load, evict, concurrent first use, idle unload."""

from __future__ import annotations

import asyncio
import threading

import pytest

from avatar_tts.errors import EngineUnavailableError, MemoryShortError
from avatar_tts.lifecycle import ModelManager, process_memory_mb


class Model:
    """A loadable model that records its loads; ``gate`` holds a load until set."""

    def __init__(self, gate: threading.Event | None = None, fail: int = 0) -> None:
        self.loads = 0
        self.unloads = 0
        self.loaded = False
        self.gate = gate
        self.fail = fail

    def load(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            self.fail -= 1
            raise RuntimeError("weights corrupt")
        self.loads += 1
        self.loaded = True

    def unload(self) -> None:
        self.unloads += 1
        self.loaded = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(
    budget: float, idle: float = 0.0, clock: Clock | None = None, loads: list[tuple[str, float]] | None = None
) -> ModelManager:
    record = loads if loads is not None else []
    return ModelManager(
        budget,
        idle,
        probe=lambda: 0.0,
        clock=clock or Clock(),
        on_load=lambda mode, s: record.append((mode, s)),
    )


def add(m: ModelManager, name: str, model: Model, size: float, *, resident: bool = False) -> None:
    m.register(
        name,
        load=model.load,
        unload=model.unload,
        resident=resident,
        estimate_mb=size,
        mode="fast" if resident else "hq",
    )


async def test_loads_on_first_use_and_records_the_load_time() -> None:
    loads: list[tuple[str, float]] = []
    m = manager(100, loads=loads)
    hq = Model()
    add(m, "hq", hq, 40)
    assert not m.is_loaded("hq") and hq.loads == 0
    async with m.lease("hq"):
        assert hq.loaded
    async with m.lease("hq"):
        pass
    assert hq.loads == 1
    assert [mode for mode, _ in loads] == ["hq"]
    assert loads[0][1] >= 0


async def test_start_loads_resident_models_only() -> None:
    m = manager(100)
    fast, hq = Model(), Model()
    add(m, "fast", fast, 30, resident=True)
    add(m, "hq", hq, 30)
    await m.start()
    assert fast.loaded and not hq.loaded
    await m.aclose()
    assert not fast.loaded


async def test_least_recently_used_idle_model_is_evicted_for_a_new_one() -> None:
    clock = Clock()
    m = manager(100, clock=clock)
    fast, a, b, c = Model(), Model(), Model(), Model()
    add(m, "fast", fast, 30, resident=True)
    add(m, "a", a, 30)
    add(m, "b", b, 30)
    add(m, "c", c, 30)
    for name in ("fast", "a", "b"):
        clock.now += 1
        async with m.lease(name):
            pass
    clock.now += 1
    async with m.lease("a"):  # a is now more recent than b
        pass
    clock.now += 1
    async with m.lease("c"):
        pass
    assert b.unloads == 1 and not b.loaded  # least recently used
    assert a.loaded and c.loaded and fast.loaded  # resident never evicted
    assert ("evicted", "b") in m.events
    assert m.used_mb() <= 100


async def test_a_model_in_use_is_not_evicted_and_the_newcomer_is_refused() -> None:
    m = manager(70)
    a, b = Model(), Model()
    add(m, "a", a, 40)
    add(m, "b", b, 40)
    async with m.lease("a"):
        with pytest.raises(MemoryShortError, match="not enough memory"):
            async with m.lease("b"):
                pass
        assert a.loaded and not b.loaded
    async with m.lease("b"):  # a is idle now: evicted for b
        pass
    assert not m.is_loaded("a") and m.is_loaded("b") and a.unloads == 1


async def test_a_model_larger_than_the_budget_is_refused_before_loading() -> None:
    m = manager(50)
    big = Model()
    add(m, "big", big, 80)
    with pytest.raises(MemoryShortError, match="more than the 50 MB budget"):
        async with m.lease("big"):
            pass
    assert big.loads == 0


async def test_concurrent_first_use_waits_for_a_single_load() -> None:
    m = manager(100)
    gate = threading.Event()
    hq = Model(gate)
    add(m, "hq", hq, 40)
    entered = 0

    async def use() -> None:
        nonlocal entered
        async with m.lease("hq"):
            assert hq.loaded
            entered += 1

    tasks = [asyncio.create_task(use()) for _ in range(5)]
    await asyncio.sleep(0.05)
    assert entered == 0  # all are waiting for the one load
    gate.set()
    await asyncio.gather(*tasks)
    assert entered == 5
    assert hq.loads == 1


async def test_a_failed_load_is_reported_and_retried_on_next_use() -> None:
    m = manager(100)
    hq = Model(fail=1)
    add(m, "hq", hq, 40)
    with pytest.raises(EngineUnavailableError, match="failed to load: RuntimeError: weights corrupt"):
        async with m.lease("hq"):
            pass
    async with m.lease("hq"):
        assert hq.loaded


async def test_idle_on_demand_models_are_unloaded_after_the_timeout() -> None:
    clock = Clock()
    m = manager(100, idle=60, clock=clock)
    fast, hq = Model(), Model()
    add(m, "fast", fast, 30, resident=True)
    add(m, "hq", hq, 30)
    async with m.lease("fast"), m.lease("hq"):
        clock.now += 120
        assert await m.unload_idle() == []  # in use: kept
    clock.now += 30
    assert await m.unload_idle() == []  # idle for 30 s only
    clock.now += 31
    assert await m.unload_idle() == ["hq"]
    assert not hq.loaded and fast.loaded


async def test_the_reaper_unloads_idle_models_by_itself() -> None:
    m = ModelManager(100, 0.05, probe=lambda: 0.0)
    hq = Model()
    add(m, "hq", hq, 30)
    await m.start()
    async with m.lease("hq"):
        pass
    for _ in range(200):
        if not hq.loaded:
            break
        await asyncio.sleep(0.05)
    await m.aclose()
    assert hq.unloads == 1 and ("idle", "hq") in m.events


async def test_memory_is_measured_by_the_probe() -> None:
    used = [100.0]

    def load() -> None:
        used[0] += 250.0

    m = ModelManager(1000, 0, probe=lambda: used[0])
    m.register("hq", load=load, unload=lambda: None, resident=False, estimate_mb=10, mode="hq")
    async with m.lease("hq"):
        pass
    assert m.used_mb() == pytest.approx(250.0)
    assert process_memory_mb() > 10  # the real probe: this process's RSS (no GPU here)
