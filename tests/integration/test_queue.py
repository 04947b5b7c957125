"""Task queues: in-process, and Redis streams against a real ``redis-server``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from avatar.domain.errors import CapacityError, InvalidInputError
from avatar.infrastructure.crypto import Envelope, Keyring, generate_key
from avatar.infrastructure.queue import InProcessTaskQueue, RedisTaskQueue, build_task_queue, redis_client
from avatar.settings import QueueSettings, RedisSettings, Settings


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = redis_client(redis_url)
    yield client
    await client.aclose()


class Recorder:
    """A handler that records payloads and can fail its first ``failures`` calls."""

    def __init__(self, expected: int, failures: int = 0) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.calls = 0
        self._failures = failures
        self._expected = expected
        self.done = asyncio.Event()

    async def __call__(self, payload: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls <= self._failures:
            raise RuntimeError(f"failure {self.calls}")
        self.payloads.append(payload)
        if len(self.payloads) >= self._expected:
            self.done.set()


async def test_in_process_queue_runs_tasks_and_retries_failures() -> None:
    queue = InProcessTaskQueue(max_pending=10, retry_delay_s=0.01)
    recorder = Recorder(expected=3, failures=1)
    queue.subscribe("tts.hq", recorder, concurrency=2)
    await queue.start()
    try:
        ids = [await queue.publish("tts.hq", {"n": n}) for n in range(3)]
        await asyncio.wait_for(recorder.done.wait(), 10)
        await queue.join("tts.hq")
        assert sorted(p["n"] for p in recorder.payloads) == [0, 1, 2]
        assert recorder.calls == 4  # one failure, retried
        assert len(set(ids)) == 3
        assert await queue.pending("tts.hq") == 0
    finally:
        await queue.stop()


async def test_in_process_queue_is_bounded_and_refuses_bad_payloads() -> None:
    queue = InProcessTaskQueue(max_pending=2)
    await queue.publish("prosody", {"a": 1})
    await queue.publish("prosody", {"a": 2})
    with pytest.raises(CapacityError):
        await queue.publish("prosody", {"a": 3})
    assert await queue.pending("prosody") == 2
    with pytest.raises(InvalidInputError):
        await queue.publish("other", {"blob": b"bytes"})
    queue.subscribe("prosody", Recorder(expected=2))
    await queue.start()
    with pytest.raises(RuntimeError):
        queue.subscribe("late", Recorder(expected=1))
    await queue.join("prosody")
    await queue.stop()


async def test_in_process_task_that_keeps_failing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    queue = InProcessTaskQueue(retry_delay_s=0.01)
    recorder = Recorder(expected=1, failures=10)
    queue.subscribe("t", recorder)
    await queue.start()
    with caplog.at_level(logging.WARNING, logger="avatar.infrastructure.queue"):
        await queue.publish("t", {"x": 1})
        await queue.join("t")
    await queue.stop()
    assert recorder.calls == 3
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "ERROR"]


async def test_redis_queue_delivers_across_consumers(redis: Any, redis_namespace: str) -> None:
    producer = RedisTaskQueue(redis, namespace=redis_namespace)
    consumer = RedisTaskQueue(redis, namespace=redis_namespace, block_ms=100)
    recorder = Recorder(expected=3)
    consumer.subscribe("tts.hq", recorder, concurrency=2)
    await consumer.start()
    try:
        for n in range(3):
            await producer.publish("tts.hq", {"n": n, "text": "héllo"})
        await asyncio.wait_for(recorder.done.wait(), 10)
    finally:
        await consumer.stop()
    assert sorted(p["n"] for p in recorder.payloads) == [0, 1, 2]
    assert recorder.payloads[0]["text"] == "héllo"
    assert await producer.pending("tts.hq") == 0  # acknowledged and deleted


async def test_redis_queue_redelivers_after_a_consumer_dies(redis: Any, redis_namespace: str) -> None:
    taken = asyncio.Event()

    async def dies_midway(payload: dict[str, Any]) -> None:
        taken.set()
        await asyncio.Event().wait()  # never finishes: the process "dies" holding the task

    first = RedisTaskQueue(redis, namespace=redis_namespace, block_ms=100, stop_grace_s=0.0, consumer="first")
    first.subscribe("tts.hq", dies_midway)
    await first.start()
    task_id = await first.publish("tts.hq", {"turn_id": "t-1"})
    await asyncio.wait_for(taken.wait(), 10)
    await first.stop()  # killed without acknowledging
    assert await first.pending("tts.hq") == 1

    recorder = Recorder(expected=1)
    second = RedisTaskQueue(
        redis, namespace=redis_namespace, block_ms=100, claim_idle_ms=200, consumer="second"
    )
    second.subscribe("tts.hq", recorder)
    await second.start()
    try:
        await asyncio.wait_for(recorder.done.wait(), 10)
    finally:
        await second.stop()
    assert recorder.payloads == [{"turn_id": "t-1"}]
    assert await second.pending("tts.hq") == 0
    assert task_id


async def test_redis_queue_retries_then_dead_letters(
    redis: Any, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(expected=1, failures=100)
    queue = RedisTaskQueue(redis, namespace=redis_namespace, block_ms=50, claim_idle_ms=50, max_deliveries=3)
    queue.subscribe("prosody", recorder)
    await queue.start()
    dead = f"{queue.stream('prosody')}:dead"
    with caplog.at_level(logging.WARNING, logger="avatar.infrastructure.queue"):
        await queue.publish("prosody", {"x": 1})
        for _ in range(200):
            if await redis.xlen(dead):
                break
            await asyncio.sleep(0.05)
    await queue.stop()
    assert recorder.calls == 3
    assert await redis.xlen(dead) == 1
    assert await queue.pending("prosody") == 0
    assert any(r.levelname == "ERROR" and "dead" in r.getMessage() for r in caplog.records)


async def test_redis_queue_is_bounded(redis: Any, redis_namespace: str) -> None:
    queue = RedisTaskQueue(redis, namespace=redis_namespace, max_pending=2)
    await queue.publish("t", {"n": 1})
    await queue.publish("t", {"n": 2})
    with pytest.raises(CapacityError):
        await queue.publish("t", {"n": 3})


async def test_build_task_queue_by_kind(redis_url: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        local = await build_task_queue(Settings(queue=QueueSettings(kind="inprocess")), stack)
        remote = await build_task_queue(
            Settings(queue=QueueSettings(kind="redis"), redis=RedisSettings(url=redis_url)), stack
        )
        assert isinstance(local, InProcessTaskQueue)
        assert isinstance(remote, RedisTaskQueue)


async def test_redis_payloads_are_sealed_while_they_wait(
    redis: Any, redis_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # docs/security.md, "Encryption at rest": an HQ task carries the reply text; in Redis it is
    # AES-256-GCM sealed and bound to its topic, so neither reading the stream nor moving an entry
    # to another topic reveals or replays it.
    envelope = Envelope(Keyring.from_keys([generate_key()]))
    queue = RedisTaskQueue(redis, namespace=redis_namespace, block_ms=50, envelope=envelope)
    secret_text = "the reply nobody else should read"
    await queue.publish("tts.hq", {"text": secret_text})
    ((_, fields),) = await redis.xrange(queue.stream("tts.hq"))
    stored = fields[b"payload"]
    assert secret_text.encode() not in stored and b"text" not in stored
    # The same bytes replayed into another topic, and a task sealed under an unknown key, are
    # refused (dead-lettered with an error), never handled; a plain task written before
    # encryption was switched on is still handled.
    await redis.xadd(queue.stream("prosody"), {"payload": stored})
    stranger = Envelope(Keyring.from_keys([generate_key()]))
    foreign = RedisTaskQueue(redis, namespace=redis_namespace, envelope=stranger)
    await foreign.publish("prosody", {"text": "sealed elsewhere"})
    await redis.xadd(queue.stream("prosody"), {"payload": b'{"text": "plain"}'})
    hq, prosody = Recorder(expected=1), Recorder(expected=1)
    queue.subscribe("tts.hq", hq)
    queue.subscribe("prosody", prosody)
    with caplog.at_level(logging.ERROR, logger="avatar.infrastructure.queue"):
        await queue.start()
        try:
            await asyncio.wait_for(hq.done.wait(), 10)
            await asyncio.wait_for(prosody.done.wait(), 10)
            for _ in range(100):
                if await redis.xlen(f"{queue.stream('prosody')}:dead") >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await queue.stop()
    assert hq.payloads == [{"text": secret_text}]
    assert prosody.payloads == [{"text": "plain"}]
    assert await redis.xlen(f"{queue.stream('prosody')}:dead") == 2
    assert sum("cannot be read" in r.getMessage() for r in caplog.records) == 2
