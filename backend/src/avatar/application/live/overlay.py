"""What the OBS overlay shows: viewer chat and the avatar's replies, newest last (docs/live.md)."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from avatar.domain.live import ChatMessage, Platform

FADE_AFTER = timedelta(minutes=10)


class OverlayLine(BaseModel):
    """One line of the overlay (the ``messages`` items of ``GET /api/v1/overlay/state``)."""

    id: int
    platform: Platform | None
    user: str
    text: str
    is_streamer: bool
    kind: Literal["chat", "reply"]
    emotion: str | None = None
    amount: int = 0
    at: datetime


class OverlaySnapshot(BaseModel):
    version: int
    show_streamer_chat: bool
    fade_after_s: float
    messages: list[OverlayLine]


class OverlayState:
    """The last ``max_lines`` lines; readers wait on :meth:`wait_change` for live pushes."""

    def __init__(self, max_lines: int = 200, fade_after: timedelta = FADE_AFTER) -> None:
        self._lines: deque[OverlayLine] = deque(maxlen=max_lines)
        self._fade_after = fade_after
        self._next_id = 1
        self.version = 0
        self.show_streamer_chat = True
        self._changed = asyncio.Event()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def add_chat(self, message: ChatMessage, received: datetime) -> OverlayLine:
        """Show ``message``; its line fades ``fade_after`` from ``received`` (this server's clock,
        so a platform clock that is off cannot fade a line early)."""
        line = OverlayLine(
            id=self._next_id,
            platform=message.platform,
            user=message.display_name,
            text=message.text,
            is_streamer=message.is_streamer,
            kind="chat",
            amount=message.amount,
            at=received,
        )
        self._append(line)
        return line

    def add_reply(self, text: str, emotion: str, at: datetime, name: str) -> OverlayLine:
        line = OverlayLine(
            id=self._next_id,
            platform=None,
            user=name,
            text=text,
            is_streamer=False,
            kind="reply",
            emotion=emotion,
            at=at,
        )
        self._append(line)
        return line

    def _append(self, line: OverlayLine) -> None:
        self._next_id += 1
        self._lines.append(line)
        self._bump()

    def clear(self) -> None:
        self._lines.clear()
        self._bump()

    def set_show_streamer_chat(self, show: bool) -> None:
        self.show_streamer_chat = show
        self._bump()

    def snapshot(self, now: datetime) -> OverlaySnapshot:
        """Lines still within the fade time; the streamer's own chat only when shown."""
        lines = [
            line
            for line in self._lines
            if now - line.at < self._fade_after and (self.show_streamer_chat or not line.is_streamer)
        ]
        return OverlaySnapshot(
            version=self.version,
            show_streamer_chat=self.show_streamer_chat,
            fade_after_s=self._fade_after.total_seconds(),
            messages=lines,
        )

    async def wait_change(self, seen_version: int, within_s: float) -> bool:
        """Wait until the version differs from ``seen_version``; False on timeout."""
        if self.version != seen_version:
            return True
        try:
            await asyncio.wait_for(self._changed.wait(), within_s)
        except TimeoutError:
            return False
        return True
