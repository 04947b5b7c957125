"""Task queues (the ``TaskQueue`` port): bounded in-process queues, or Redis streams in compose.

Both deliver at least once: a handler that raises is retried (in-process: right away with backoff;
Redis: by redelivery), and a task that keeps failing is logged as an error and set aside, never
dropped silently. Handlers must therefore be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from avatar.application.ports.queue import TaskHandler
from avatar.domain.errors import CapacityError, DependencyError, InvalidInputError
from avatar.infrastructure.crypto import DecryptionError, Envelope
from avatar.settings import QueueSettings, Settings, default_of

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass
class _Worker:
    task: asyncio.Task[None] | None = None
    busy: bool = False
    #: Set by stop(): a busy worker finishes the task in hand, then exits instead of taking another.
    stopping: bool = False


@dataclass
class _Topic:
    handler: TaskHandler
    concurrency: int
    workers: list[_Worker] = field(default_factory=list)


def _encode(payload: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(payload), separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"task payloads must be JSON: {exc}") from exc


async def _stop_workers(workers: list[_Worker], grace_s: float) -> None:
    """Cancel idle workers now; give busy ones ``grace_s`` to finish the task in hand."""
    tasks = [w.task for w in workers if w.task is not None]
    for worker in workers:
        worker.stopping = True
        if worker.task is not None and not worker.busy:
            worker.task.cancel()
    if tasks:
        _, still_running = await asyncio.wait(tasks, timeout=grace_s)
        for task in still_running:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Subscriptions:
    """Handler registration and worker shutdown shared by both queues."""

    def __init__(self, stop_grace_s: float) -> None:
        self._stop_grace_s = stop_grace_s
        self._topics: dict[str, _Topic] = {}
        self._started = False

    def subscribe(self, topic: str, handler: TaskHandler, *, concurrency: int = 1) -> None:
        if self._started:
            raise RuntimeError("subscribe() must be called before start()")
        if topic in self._topics:
            raise ValueError(f"{topic} already has a handler")
        self._topics[topic] = _Topic(handler, max(1, concurrency))

    async def stop(self) -> None:
        workers = [w for topic in self._topics.values() for w in topic.workers]
        await _stop_workers(workers, self._stop_grace_s)
        for topic in self._topics.values():
            topic.workers.clear()
        self._started = False


class InProcessTaskQueue(_Subscriptions):
    """Bounded ``asyncio.Queue`` per topic with ``concurrency`` worker tasks each (embedded placement)."""

    def __init__(
        self,
        max_pending: int = default_of(QueueSettings, "max_pending"),
        *,
        retry_delay_s: float = 0.2,
        stop_grace_s: float = 5.0,
    ) -> None:
        super().__init__(stop_grace_s)
        self._max_pending = max_pending
        self._retry_delay_s = retry_delay_s
        self._queues: dict[str, asyncio.Queue[tuple[str, str]]] = {}
        self._in_flight: dict[str, int] = {}

    def _queue(self, topic: str) -> asyncio.Queue[tuple[str, str]]:
        if topic not in self._queues:
            self._queues[topic] = asyncio.Queue(self._max_pending)
        return self._queues[topic]

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> str:
        task_id = uuid.uuid4().hex
        try:
            self._queue(topic).put_nowait((task_id, _encode(payload)))
        except asyncio.QueueFull as exc:
            raise CapacityError(f"the {topic} queue is full ({self._max_pending} tasks waiting)") from exc
        return task_id

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for name, topic in self._topics.items():
            for _ in range(topic.concurrency):
                worker = _Worker()
                worker.task = asyncio.create_task(self._work(name, topic, worker), name=f"queue:{name}")
                topic.workers.append(worker)

    async def _work(self, name: str, topic: _Topic, worker: _Worker) -> None:
        queue = self._queue(name)
        while True:
            task_id, raw = await queue.get()
            worker.busy = True
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
            try:
                await self._handle(name, topic.handler, task_id, raw)
            finally:
                worker.busy = False
                self._in_flight[name] -= 1
                queue.task_done()
            if worker.stopping:
                return

    async def _handle(self, name: str, handler: TaskHandler, task_id: str, raw: str) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await handler(json.loads(raw))
                return
            except Exception:
                if attempt == MAX_ATTEMPTS:
                    log.exception("task %s on %s failed %d times; giving up", task_id, name, attempt)
                    return
                log.warning(
                    "task %s on %s failed (attempt %d); retrying", task_id, name, attempt, exc_info=True
                )
                await asyncio.sleep(self._retry_delay_s * attempt)

    async def pending(self, topic: str) -> int:
        return self._queue(topic).qsize() + self._in_flight.get(topic, 0)

    async def join(self, topic: str) -> None:
        """Wait until every task published to ``topic`` so far has been handled (tests, shutdown)."""
        await self._queue(topic).join()


class RedisTaskQueue(_Subscriptions):
    """Redis streams with one consumer group per topic (compose placement).

    Each orchestrator replica is a consumer. A task is acknowledged (and deleted) only after its
    handler returns; a task whose consumer died or whose handler raised stays pending and is
    claimed by any live consumer after ``claim_idle_ms``. After ``max_deliveries`` it is moved to
    ``<stream>:dead`` and logged as an error.
    """

    GROUP = "workers"

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "avatar",
        max_pending: int = default_of(QueueSettings, "max_pending"),
        claim_idle_ms: int = 30_000,
        max_deliveries: int = MAX_ATTEMPTS,
        block_ms: int = 1000,
        stop_grace_s: float = 5.0,
        consumer: str | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        super().__init__(stop_grace_s)
        self._redis = client
        #: Seals each payload while it waits in Redis (AES-256-GCM, docs/security.md, "Encryption
        #: at rest"); an HQ task carries the reply text, a prosody task the audio's key.
        self._envelope = envelope
        self._namespace = namespace
        self._max_pending = max_pending
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._block_ms = block_ms
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    def stream(self, topic: str) -> str:
        return f"{self._namespace}:tasks:{topic}"

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> str:
        from redis.exceptions import RedisError

        body = _encode(payload)
        if self._envelope is not None:
            body = self._envelope.seal_text(body, _task_context(topic))
        key = self.stream(topic)
        try:
            # The length check and the add are not atomic: the bound may be overshot by the number
            # of concurrent publishers, which is fine for back-pressure.
            if await self._redis.xlen(key) >= self._max_pending:
                raise CapacityError(f"the {topic} queue is full ({self._max_pending} tasks waiting)")
            task_id = await self._redis.xadd(key, {"payload": body})
        except RedisError as exc:
            log.error("could not queue a %s task: %s", topic, exc)
            raise DependencyError(f"task queue unavailable: {exc}") from exc
        return task_id.decode() if isinstance(task_id, bytes) else str(task_id)

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for name, topic in self._topics.items():
            await self._ensure_group(name)
            for index in range(topic.concurrency):
                worker = _Worker()
                consumer = f"{self.consumer}-{index}"
                worker.task = asyncio.create_task(
                    self._work(name, topic, worker, consumer), name=f"queue:{name}"
                )
                topic.workers.append(worker)

    async def _ensure_group(self, name: str) -> None:
        """Create the topic's stream and consumer group unless they exist."""
        from redis.exceptions import ResponseError

        try:
            await self._redis.xgroup_create(self.stream(name), self.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _work(self, name: str, topic: _Topic, worker: _Worker, consumer: str) -> None:
        from redis.exceptions import RedisError

        key = self.stream(name)
        while True:
            try:
                entries = await self._claim(key, consumer)
                if not entries:
                    reply = await self._redis.xreadgroup(
                        self.GROUP, consumer, {key: ">"}, count=1, block=self._block_ms
                    )
                    entries = [entry for _, stream_entries in reply or [] for entry in stream_entries]
            except RedisError as exc:
                log.warning("task queue read failed on %s (%s); retrying", name, exc)
                await asyncio.sleep(1.0)
                if "NOGROUP" in str(exc):
                    # Redis came back empty (restarted without persistence, docs/resilience.md):
                    # the consumer group is gone with the stream; make them again so tasks flow.
                    with contextlib.suppress(RedisError):
                        await self._ensure_group(name)
                continue
            for entry_id, fields in entries:
                worker.busy = True
                try:
                    await self._handle(name, key, topic.handler, entry_id, fields)
                finally:
                    worker.busy = False
            if worker.stopping:
                return

    async def _claim(self, key: str, consumer: str) -> list[tuple[Any, Any]]:
        """Take over one task another consumer left unacknowledged for ``claim_idle_ms``."""
        reply = await self._redis.xautoclaim(
            key, self.GROUP, consumer, self._claim_idle_ms, start_id="0-0", count=1
        )
        return [entry for entry in reply[1] if entry and entry[1] is not None]

    async def _handle(self, name: str, key: str, handler: TaskHandler, entry_id: Any, fields: Any) -> None:
        deliveries = await self._deliveries(key, entry_id)
        raw = fields.get(b"payload") or fields.get("payload")
        if deliveries > self._max_deliveries or raw is None:
            log.error(
                "task %s on %s failed %d deliveries; moved to %s:dead", entry_id, name, deliveries - 1, key
            )
            await self._redis.xadd(f"{key}:dead", {"payload": raw or b"", "task_id": entry_id})
            await self._done(key, entry_id)
            return
        try:
            payload = json.loads(self._open(name, raw))
        except (DecryptionError, ValueError) as exc:
            # Altered, sealed under a master key this replica lacks, or not JSON: never retried.
            log.error("task %s on %s cannot be read (%s); moved to %s:dead", entry_id, name, exc, key)
            await self._redis.xadd(f"{key}:dead", {"payload": raw, "task_id": entry_id})
            await self._done(key, entry_id)
            return
        try:
            await handler(payload)
        except Exception:
            # Left unacknowledged on purpose: it will be claimed again after claim_idle_ms.
            log.warning(
                "task %s on %s failed (delivery %d); will be redelivered",
                entry_id,
                name,
                deliveries,
                exc_info=True,
            )
            return
        await self._done(key, entry_id)

    def _open(self, topic: str, raw: bytes | str) -> str:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if self._envelope is None:
            return text
        return self._envelope.open_text(text, _task_context(topic))  # plain (older) tasks pass as is

    async def _deliveries(self, key: str, entry_id: Any) -> int:
        info = await self._redis.xpending_range(key, self.GROUP, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    async def _done(self, key: str, entry_id: Any) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(key, self.GROUP, entry_id)
            pipe.xdel(key, entry_id)
            await pipe.execute()

    async def pending(self, topic: str) -> int:
        return int(await self._redis.xlen(self.stream(topic)))


def _task_context(topic: str) -> str:
    """Binds a sealed payload to its topic (it cannot be replayed into another queue)."""
    return f"task:{topic}"


def redis_client(url: str) -> Any:
    """An asyncio Redis client for ``url`` (``redis://host:port/db``)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # A pooled connection left from before a Redis restart fails on first use: the command is
    # retried on a fresh connection (docs/resilience.md) instead of failing the task it carried.
    return Redis.from_url(
        url,
        socket_connect_timeout=3,
        socket_timeout=None,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


async def build_task_queue(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> InProcessTaskQueue | RedisTaskQueue:
    """The queue ``settings.queue.kind`` asks for; the caller subscribes handlers, then starts it."""
    if settings.queue.kind == "redis":
        client = redis_client(settings.redis.url.get_secret_value())
        stack.push_async_callback(client.aclose)
        try:
            await client.ping()
        except Exception as exc:
            raise DependencyError(f"redis unreachable for the task queue: {exc}") from exc
        from avatar.infrastructure.secrets import load_keyring

        queue: InProcessTaskQueue | RedisTaskQueue = RedisTaskQueue(
            client, max_pending=settings.queue.max_pending, envelope=Envelope(load_keyring(settings))
        )
    else:
        queue = InProcessTaskQueue(settings.queue.max_pending)
    stack.push_async_callback(queue.stop)
    return queue
