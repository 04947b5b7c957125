"""Chat-in port: a platform's live chat as a stream of normalized messages (docs/live.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from avatar.domain.live import ChatMessage, Platform

ConnectionState = Literal["stopped", "connecting", "connected", "backoff"]
ChatSink = Callable[[ChatMessage], Awaitable[None]]


class ChatSource(Protocol):
    """A live platform's chat. ``run`` connects, delivers every message to ``sink`` and reconnects
    with backoff on its own until cancelled; it returns only when cancelled."""

    @property
    def platform(self) -> Platform: ...

    @property
    def state(self) -> ConnectionState: ...

    @property
    def connects(self) -> int:
        """Successful connections so far (a reconnect makes it grow)."""
        ...

    async def run(self, sink: ChatSink) -> None: ...
