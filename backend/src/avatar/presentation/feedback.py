"""``POST /api/v1/turns/{turn_id}/feedback``: a thumbs up/down (and a comment) on one reply
(docs/live.md, "Feedback").

Who may rate: the holder of the turn's session token (``Authorization: Bearer``, the token the
session was created with) for a conversation's turn; the live operator key for a turn of the live
stage. Both checks are in :func:`require_turn_owner`, to be replaced by accounts in one place.
"""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.conversation import TokenError, verify_token
from avatar.application.feedback import rate, source_of
from avatar.bootstrap import Container, Services
from avatar.domain.errors import InvalidInputError
from avatar.domain.feedback import MAX_COMMENT_CHARS, Rating

router = APIRouter(prefix="/api/v1/turns", tags=["feedback"])


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: Literal["up", "down"]
    comment: str = Field(default="", max_length=MAX_COMMENT_CHARS)


class FeedbackPublic(BaseModel):
    turn_id: uuid.UUID
    rating: Literal["up", "down"]
    comment: str
    at: datetime


def _turn_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{raw!r} is not a turn id (a UUID)") from exc


async def require_turn_owner(turn_id: str, request: Request) -> uuid.UUID:
    """The turn's id when the bearer may rate it; 401/403/404 otherwise."""
    tid = _turn_id(turn_id)
    container: Container = request.app.state.container
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise HTTPException(401, "a bearer token is required (the session's token, or the live operator key)")
    offered = auth[7:].strip()
    async with container.uow() as tx:
        turn = await tx.turns.get(tid)
        session = await tx.sessions.get(turn.session_id) if turn is not None else None
    if turn is None or session is None:
        raise HTTPException(404, f"turn {tid} not found")
    if source_of(session) == "live":
        services: Services = request.app.state.services
        keys = services.live_keys
        if keys is None or not hmac.compare_digest(offered.encode(), keys[1].encode()):
            raise HTTPException(403, "a live turn is rated with the live operator key")
        return tid
    try:
        verify_token(container.settings.security.signing_keys(), session.session_id, offered, time.time())
    except TokenError as exc:
        raise HTTPException(403, f"not this turn's session: {exc}") from exc
    return tid


@router.post("/{turn_id}/feedback", response_model=FeedbackPublic)
async def post_feedback(
    body: FeedbackIn, tid: Annotated[uuid.UUID, Depends(require_turn_owner)], request: Request
) -> FeedbackPublic:
    container: Container = request.app.state.container
    stored = await rate(container.uow, tid, Rating(body.rating), body.comment, datetime.now(UTC))
    return FeedbackPublic(
        turn_id=stored.turn_id,
        rating=stored.rating.value,
        comment=stored.comment,
        at=stored.created_at or datetime.now(UTC),
    )
