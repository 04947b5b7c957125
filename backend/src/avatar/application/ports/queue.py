"""Task queue port: side work (HQ synthesis, prosody, uploads) off the response path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

TaskHandler = Callable[[dict[str, Any]], Awaitable[None]]


class TaskQueue(Protocol):
    """At-least-once queue of JSON payloads by topic (in-process or Redis streams)."""

    async def publish(self, topic: str, payload: Mapping[str, Any]) -> str:
        """Enqueue; returns the task id. Raises ``CapacityError`` when the queue is full."""
        ...

    def subscribe(self, topic: str, handler: TaskHandler, *, concurrency: int = 1) -> None:
        """Register a handler; must be called before :meth:`start`."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop consuming; tasks already taken are finished or left for redelivery."""
        ...

    async def pending(self, topic: str) -> int: ...
