"""What the conversation pipeline needs beyond the shared ports: the reply engine, the clause
chunker and the voice resolver. Adapters live in the composition code. (Session state for
reconnects is the shared ``avatar.application.ports.session_state.SessionStateStore``.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from avatar.application.brain import BrainEvent
from avatar.application.ports.tts import VoiceReference
from avatar.domain.models import ConversationTurn

#: The reply events are the brain's own (one vocabulary): ``ModelStarted`` at the model's first
#: token (optional), ``EmotionDecided``, then ``TextDelta`` pieces, then ``ReplyEnded`` (which says
#: whether the persona's fallback answered).
ReplyEvent = BrainEvent


class ReplyEngine(Protocol):
    """The conversational brain as the pipeline sees it: one streamed reply per user utterance.

    ``reply`` may be cancelled at any point (barge-in); the pipeline then reports what the person
    actually heard through :meth:`settle`, which is called exactly once per reply.
    """

    def reply(
        self,
        session_id: uuid.UUID,
        user_text: str,
        *,
        turn_id: uuid.UUID | None = None,
        turn_number: int | None = None,
    ) -> AsyncIterator[ReplyEvent]: ...

    async def settle(
        self, session_id: uuid.UUID, user_text: str, heard_reply: str, *, interrupted: bool
    ) -> None: ...

    async def prime(self, session_id: uuid.UUID, partial_text: str) -> None:
        """The person is still speaking (``partial_text`` heard so far): prepare what the reply's
        prompt will most likely start with. Only an optimization; never raises for a model error."""
        ...

    async def restore(self, session_id: uuid.UUID, turns: Sequence[ConversationTurn]) -> None:
        """Rebuild a session's history (resume on another replica or after a restart)."""
        ...

    async def forget(self, session_id: uuid.UUID) -> None:
        """Drop the session's in-memory state (the session ended)."""
        ...


class TextChunker(Protocol):
    """Cuts a token stream into speakable clauses (``avatar_common.text.ClauseChunker``)."""

    def feed(self, text: str) -> list[str]: ...

    def flush(self) -> list[str]: ...


class VoiceResolver(Protocol):
    """Turns a voice profile id into a cloning reference (``None`` when there is no such profile,
    or when it belongs to someone else than the owner of ``session_id``: docs/security.md)."""

    async def __call__(
        self, profile_id: uuid.UUID, session_id: uuid.UUID | None = None
    ) -> VoiceReference | None: ...
