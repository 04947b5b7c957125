"""Ratings of replies and their export as fine-tuning data (docs/live.md, "Feedback").

``rate`` stores a thumbs up/down on a turn. ``export_finetune`` turns rated turns into lines of the
OpenAI chat fine-tuning format: ``{"messages": [system = the persona, the conversation so far within
a token window (oldest turns dropped first), the rated user message, the assistant reply]}``; a
validation pass sets aside lines a fine-tuning service would reject (an empty reply, a line over the
token limit) with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from avatar.application.brain.reply_parser import strip_markup
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.domain.errors import NotFoundError
from avatar.domain.feedback import Rating, TurnFeedback
from avatar.domain.models import ConversationTurn, Session

Source = Literal["conversation", "live"]
#: Tokens a chat message costs beyond its text (role and separators), as the brain counts them.
MESSAGE_OVERHEAD = 4


def source_of(session: Session) -> Source:
    """``live`` for the live stage's session, else ``conversation``."""
    return "live" if session.metadata.get("source") == "live" else "conversation"


async def rate(
    uow: UnitOfWorkFactory, turn_id: uuid.UUID, rating: Rating, comment: str, now: datetime
) -> TurnFeedback:
    """Store (or replace) the rating of ``turn_id``.

    Raises:
        NotFoundError: There is no such turn.
        DomainError: The comment is too long.
    """
    feedback = TurnFeedback(turn_id, rating, comment.strip(), now)
    async with uow() as tx:
        if await tx.turns.get(turn_id) is None:
            raise NotFoundError(f"turn {turn_id} not found")
        await tx.feedback.put(feedback)
        await tx.commit()
    return feedback


class FinetuneMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class FinetuneLine(BaseModel):
    """One JSONL line of the OpenAI chat fine-tuning format."""

    messages: list[FinetuneMessage]


@dataclass(frozen=True, slots=True)
class ExportFilter:
    rating: Rating | None = Rating.UP
    since: datetime | None = None
    until: datetime | None = None
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    turn_id: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True)
class Export:
    lines: list[FinetuneLine]
    rejected: list[Rejected]


def _line(
    system: str,
    earlier: list[ConversationTurn],
    turn: ConversationTurn,
    count: Callable[[str], int],
    context_tokens: int,
) -> FinetuneLine:
    """The persona, as many of the latest earlier turns as fit in ``context_tokens``, then the turn."""
    budget = (
        context_tokens
        - count(system)
        - count(turn.user_input)
        - count(turn.ai_response)
        - 3 * MESSAGE_OVERHEAD
    )
    kept: list[FinetuneMessage] = []
    for past in reversed(earlier):
        reply = strip_markup(past.ai_response)
        cost = count(past.user_input) + count(reply) + 2 * MESSAGE_OVERHEAD
        if cost > budget:
            break
        budget -= cost
        kept[:0] = [
            FinetuneMessage(role="user", content=past.user_input),
            FinetuneMessage(role="assistant", content=reply),
        ]
    return FinetuneLine(
        messages=[
            FinetuneMessage(role="system", content=system),
            *kept,
            FinetuneMessage(role="user", content=turn.user_input),
            FinetuneMessage(role="assistant", content=strip_markup(turn.ai_response)),
        ]
    )


def validate(line: FinetuneLine, count: Callable[[str], int], max_line_tokens: int) -> str | None:
    """Why a fine-tuning service would reject ``line``, or ``None``."""
    if any(not m.content.strip() for m in line.messages if m.role != "system"):
        return "an empty message"
    if line.messages[-1].role != "assistant":
        return "the last message is not the assistant's"
    total = sum(count(m.content) + MESSAGE_OVERHEAD for m in line.messages)
    if total > max_line_tokens:
        return f"{total} tokens, over the limit of {max_line_tokens}"
    return None


async def export_finetune(
    uow: UnitOfWorkFactory,
    system: str,
    flt: ExportFilter,
    *,
    count_tokens: Callable[[str], int],
    context_tokens: int,
    max_line_tokens: int,
) -> Export:
    """Every rated turn matching ``flt`` as a fine-tuning line, oldest rating first."""
    lines: list[FinetuneLine] = []
    rejected: list[Rejected] = []
    async with uow() as tx:
        ratings = await tx.feedback.list(rating=flt.rating, since=flt.since, until=flt.until)
        sessions: dict[uuid.UUID, tuple[Session | None, list[ConversationTurn]]] = {}
        for feedback in ratings:
            turn = await tx.turns.get(feedback.turn_id)
            if turn is None:
                continue
            if turn.session_id not in sessions:
                sessions[turn.session_id] = (
                    await tx.sessions.get(turn.session_id),
                    await tx.turns.list_for_session(turn.session_id),
                )
            session, turns = sessions[turn.session_id]
            if session is None or (flt.source is not None and source_of(session) != flt.source):
                continue
            earlier = [t for t in turns if t.turn_number < turn.turn_number]
            line = _line(system, earlier, turn, count_tokens, context_tokens)
            reason = validate(line, count_tokens, max_line_tokens)
            if reason is None:
                lines.append(line)
            else:
                rejected.append(Rejected(turn.turn_id, reason))
    return Export(lines, rejected)


@dataclass(frozen=True, slots=True)
class FinetuneExporter:
    """``export_finetune`` with what the composition root knows (the persona's system message, the
    token counter and the context window), for the admin download (docs/live.md, "Feedback")."""

    uow: UnitOfWorkFactory
    system: str
    count_tokens: Callable[[str], int]
    context_tokens: int

    async def export(self, flt: ExportFilter, max_line_tokens: int) -> Export:
        return await export_finetune(
            self.uow,
            self.system,
            flt,
            count_tokens=self.count_tokens,
            context_tokens=self.context_tokens,
            max_line_tokens=max_line_tokens,
        )
