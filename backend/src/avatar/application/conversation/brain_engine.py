"""The conversation brain (one :class:`ConversationBrain` per session) as a :class:`ReplyEngine`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

from avatar.application.brain import BrainDeps, ConversationBrain
from avatar.application.conversation.ports import ReplyEvent
from avatar.domain.models import ConversationTurn


class BrainReplyEngine:
    """Keeps each live session's brain; a session this process has not seen is restored from
    the stored turns and summary (reconnect on another replica)."""

    def __init__(self, deps: BrainDeps) -> None:
        self._deps = deps
        self._brains: dict[uuid.UUID, ConversationBrain] = {}

    def brain(self, session_id: uuid.UUID) -> ConversationBrain:
        brain = self._brains.get(session_id)
        if brain is None:
            brain = ConversationBrain(session_id, self._deps)
            self._brains[session_id] = brain
        return brain

    def set_instructions(self, session_id: uuid.UUID, instructions: str) -> None:
        """Instructions of the session's client, added after the persona (docs/realtime.md)."""
        self.brain(session_id).instructions = instructions.strip()

    async def reply(
        self,
        session_id: uuid.UUID,
        user_text: str,
        *,
        turn_id: uuid.UUID | None = None,
        turn_number: int | None = None,
    ) -> AsyncIterator[ReplyEvent]:
        events = self.brain(session_id).reply(user_text, turn_id=turn_id, turn_number=turn_number)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def prime(self, session_id: uuid.UUID, partial_text: str) -> None:
        brain = self._brains.get(session_id)
        if brain is not None:  # a session without a brain yet has no memories in its window to build on
            await brain.prime(partial_text)

    async def settle(
        self, session_id: uuid.UUID, user_text: str, heard_reply: str, *, interrupted: bool
    ) -> None:
        brain = self._brains.get(session_id)
        if brain is not None and interrupted:
            brain.record_interrupted(heard_reply)

    async def restore(self, session_id: uuid.UUID, turns: Sequence[ConversationTurn]) -> None:
        if session_id in self._brains:
            return
        self._brains[session_id] = await ConversationBrain.restore(session_id, self._deps)

    async def forget(self, session_id: uuid.UUID) -> None:
        brain = self._brains.pop(session_id, None)
        if brain is not None:
            await brain.aclose()
