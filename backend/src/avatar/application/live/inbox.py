"""What the director console lists: the latest chat messages with the filters' verdict and what
became of each (docs/live.md, "Director console")."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from avatar.domain.live import ChatMessage, DropReason

#: ``queued``: waiting for the stage; ``picked``: the director chose it, answered next;
#: ``answering``/``answered``: the stage works on it / has spoken; ``dropped``: not answered (see
#: ``reason``); ``failed``: the reply failed.
IncomingStatus = Literal["queued", "picked", "answering", "answered", "dropped", "failed"]


@dataclass(slots=True)
class Incoming:
    """One chat message as the console shows it."""

    id: int
    message: ChatMessage
    #: The filters' verdict on arrival (``None``: it may be answered).
    verdict: DropReason | None
    status: IncomingStatus
    received: datetime
    #: Why it was not answered (the verdict, or later: queue full, stale, paused, banned, skipped).
    reason: DropReason | None = None
    #: The stored turn of its reply, once answered.
    turn_id: uuid.UUID | None = None


class Inbox:
    """The last ``size`` messages, newest last; found again by id or by the message itself."""

    def __init__(self, size: int = 200) -> None:
        self._entries: deque[Incoming] = deque()
        self._size = size
        self._by_message: dict[int, Incoming] = {}
        self._next_id = 1

    def add(self, message: ChatMessage, verdict: DropReason | None, received: datetime) -> Incoming:
        entry = Incoming(
            id=self._next_id,
            message=message,
            verdict=verdict,
            status="queued" if verdict is None else "dropped",
            received=received,
            reason=verdict,
        )
        self._next_id += 1
        self._entries.append(entry)
        self._by_message[id(message)] = entry
        while len(self._entries) > self._size:
            old = self._entries.popleft()
            self._by_message.pop(id(old.message), None)
        return entry

    def get(self, entry_id: int) -> Incoming | None:
        for entry in self._entries:
            if entry.id == entry_id:
                return entry
        return None

    def of(self, message: ChatMessage) -> Incoming | None:
        """The entry of this very message object (not of an equal one)."""
        entry = self._by_message.get(id(message))
        return entry if entry is not None and entry.message is message else None

    def entries(self) -> list[Incoming]:
        return list(self._entries)
