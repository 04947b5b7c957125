"""The prosody queue is consumed by ``prosody.consumers`` tasks at once, however few analysis
workers there are (docs/prosody.md, "Consumers and workers"): wired by the composition root onto
this process's real bounded queue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping

from avatar.application.ports.prosody import ProsodyResult
from avatar.application.tasks import PROSODY_TOPIC
from avatar.bootstrap import build_instant_container, build_services
from avatar.infrastructure.instant import InMemoryDatabase, InstantProsodyAnalyzer
from avatar.infrastructure.prosody import service_config
from avatar.infrastructure.queue import InProcessTaskQueue
from avatar.settings import Settings
from backend.tests.prosody.test_prosody_flow import RATE, _task, factory, seed_utterance


class GatedAnalyzer(InstantProsodyAnalyzer):
    """Holds every analysis until ``gate`` opens; counts how many wait at once (``reached`` is set
    once ``target`` of them do)."""

    def __init__(self, target: int) -> None:
        self.gate = asyncio.Event()
        self.reached = asyncio.Event()
        self.target = target
        self.running = 0
        self.most = 0
        self.done = 0

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.target:
            self.reached.set()
        try:
            await self.gate.wait()
            return await super().analyze(pcm, sample_rate, baseline=baseline)
        finally:
            self.running -= 1
            self.done += 1


async def test_the_queue_is_consumed_by_prosody_consumers_not_by_the_worker_count() -> None:
    settings = Settings()
    settings.prosody.workers = 1
    settings.prosody.consumers = 3
    container = build_instant_container(settings)
    analyzer = GatedAnalyzer(target=3)
    container.prosody = analyzer
    assert isinstance(container.queue, InProcessTaskQueue)
    assert isinstance(container.uow, InMemoryDatabase)
    build_services(container)
    uow = factory(container.uow)
    await container.queue.start()
    try:
        for number in range(1, 6):
            session_id = uuid.uuid4()
            tid = await seed_utterance(uow, session_id, number)
            key = f"raw_inputs/{number}.pcm"
            await container.object_store.put(key, bytes(RATE * 2))
            await container.queue.publish(PROSODY_TOPIC, _task(session_id, tid, key))
        await asyncio.wait_for(analyzer.reached.wait(), 30)  # three analyses waiting at once
        assert await container.queue.pending(PROSODY_TOPIC) == 5  # 3 in hand, 2 queued
        analyzer.gate.set()
        await asyncio.wait_for(container.queue.join(PROSODY_TOPIC), 30)
        assert analyzer.done == 5
        assert analyzer.most == 3  # never more than the consumers
        stored = list(container.uow.tables.prosody.values())
        assert len(stored) == 5 and all(s.reliable for s in stored)
    finally:
        await container.queue.stop()


def test_consumers_default_to_four_and_the_engine_admits_them_all() -> None:
    settings = Settings()
    assert settings.prosody.consumers == 4
    settings.prosody.workers = 1
    settings.prosody.consumers = 40
    assert service_config(settings).max_pending >= 40
