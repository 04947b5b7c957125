"""Server -> client messages of one session, consumed by whichever connection is attached.

Control messages (everything but reply audio) are never dropped: the client's view of the
conversation (``turn_completed``, ``interrupted``, ``error`` ...) must stay whole. Only reply audio
is shed, and only past ``limit`` queued messages: the oldest queued chunk goes first (the client is
behind real time, so it is the one that would play latest), the client is told once per turn with
a ``notice`` ``AUDIO_SHED`` and every shed chunk is counted (docs/protocol.md).
While no client is attached audio is not queued at all: it would play out of time, and the stored
turn audio covers the turn.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Callable

from avatar.application.conversation.events import AudioChunkMsg, NoticeMsg, ServerMessage

AUDIO_SHED = "AUDIO_SHED"
#: Turns whose shedding was announced that an outbox remembers: only the latest turns still send
#: audio, so a slow client's long session does not pile them up (issue 15, item 7).
SHED_TURNS_KEPT = 8


class Outbox:
    """A FIFO of :data:`ServerMessage` that sheds only audio when a client reads too slowly."""

    def __init__(self, limit: int = 500, on_shed: Callable[[int], None] | None = None) -> None:
        self._items: collections.deque[ServerMessage] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self._on_shed = on_shed
        self._shed_turns: collections.deque[uuid.UUID] = collections.deque(maxlen=SHED_TURNS_KEPT)
        self.attached = False
        #: Audio chunks shed so far (a slow client).
        self.shed = 0

    def send(self, message: ServerMessage) -> None:
        if isinstance(message, AudioChunkMsg) and not self.attached:
            return
        self._items.append(message)
        if len(self._items) > self._limit:
            self._shed_audio()
        self._ready.set()

    def _shed_audio(self) -> None:
        """Drop the oldest queued audio chunk(s) until the queue is back at its limit."""
        excess = len(self._items) - self._limit
        kept: collections.deque[ServerMessage] = collections.deque()
        shed: list[AudioChunkMsg] = []
        for item in self._items:
            if excess > 0 and isinstance(item, AudioChunkMsg):
                shed.append(item)
                excess -= 1
            else:
                kept.append(item)
        if not shed:
            return  # only control messages: all kept, whatever the count
        self._items = kept
        self.shed += len(shed)
        if self._on_shed is not None:
            self._on_shed(len(shed))
        for turn_id in dict.fromkeys(m.turn_id for m in shed):
            if turn_id not in self._shed_turns:
                self._shed_turns.append(turn_id)
                self._items.append(
                    NoticeMsg(
                        code=AUDIO_SHED,
                        turn_id=turn_id,
                        message="the connection is too slow for the reply audio: parts of it were skipped",
                    )
                )

    def discard_audio(self, turn_id: uuid.UUID) -> int:
        """Remove not-yet-delivered audio of a turn (barge-in: playback must stop)."""
        kept = [m for m in self._items if not (isinstance(m, AudioChunkMsg) and m.turn_id == turn_id)]
        removed = len(self._items) - len(kept)
        self._items = collections.deque(kept)
        return removed

    async def get(self) -> ServerMessage:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)
