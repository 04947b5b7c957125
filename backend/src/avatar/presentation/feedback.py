"""``POST /api/v1/turns/{turn_id}/feedback``: a thumbs up/down (and a comment) on one reply
(docs/live.md, "Feedback").

Who may rate (all checks in :func:`require_turn_owner`): the owner of the turn's session or an
admin, signed in like any REST caller (docs/security.md); or, as bearer tokens, the session's own
token for a conversation's turn and the live operator key for a turn of the live stage.
"""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.accounts import API_KEY_PREFIX
from avatar.application.conversation import TokenError, verify_token
from avatar.application.feedback import rate, source_of
from avatar.bootstrap import Container, Services
from avatar.domain.errors import ForbiddenError, InvalidInputError, NotFoundError
from avatar.domain.feedback import MAX_COMMENT_CHARS, Rating
from avatar.presentation.auth import current_user

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
    offered = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    async with container.uow() as tx:
        turn = await tx.turns.get(tid)
        session = await tx.sessions.get(turn.session_id) if turn is not None else None
    if turn is None or session is None:
        raise NotFoundError(f"turn {tid} not found")
    if not offered or offered.startswith(API_KEY_PREFIX):
        # an account's API key or the web sign-in: the session's owner or an admin
        user = await current_user(request)
        if not user.may_see(session.owner_id):
            raise NotFoundError(f"turn {tid} not found")
        return tid
    if source_of(session) == "live":
        services: Services = request.app.state.services
        keys = services.live_keys
        if keys is None or not hmac.compare_digest(offered.encode(), keys[1].encode()):
            raise ForbiddenError("a live turn is rated with the live operator key")
        return tid
    try:
        verify_token(container.settings.security.signing_keys(), session.session_id, offered, time.time())
    except TokenError as exc:
        raise ForbiddenError(f"not this turn's session: {exc}") from exc
    return tid


def _is_live_key(request: Request, offered: str) -> bool:
    keys = getattr(request.app.state, "services", None)
    live_keys = keys.live_keys if keys is not None else None
    return (
        live_keys is not None
        and bool(offered)
        and hmac.compare_digest(offered.encode(), live_keys[1].encode())
    )


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
