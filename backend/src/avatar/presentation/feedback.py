"""``POST /api/v1/turns/{turn_id}/feedback``: a thumbs up/down (and a comment) on one reply
(docs/live.md, "Feedback").

Who may rate (all checks in :func:`require_turn_owner`): the owner of the turn's session or an
admin, signed in like any REST caller (docs/security.md); or, as bearer tokens, the session's own
token for a conversation's turn and the live operator key for a turn of the live stage.

``GET /api/v1/admin/export/finetune`` downloads the rated replies as JSONL (the filters of
``avatar export finetune``), ``GET /api/v1/admin/export/finetune/validation`` reports the lines the
validation pass set aside; admins only (others 403).
"""

from __future__ import annotations

import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.accounts import API_KEY_PREFIX
from avatar.application.conversation import TokenError, verify_token
from avatar.application.feedback import Export, ExportFilter, FinetuneExporter, rate, source_of
from avatar.bootstrap import Container, Services
from avatar.domain.errors import ForbiddenError, InvalidInputError, NotFoundError
from avatar.domain.feedback import MAX_COMMENT_CHARS, Rating
from avatar.presentation.auth import AdminDep, current_user

router = APIRouter(prefix="/api/v1/turns", tags=["feedback"])
export_router = APIRouter(prefix="/api/v1/admin/export", tags=["feedback"])


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


class RejectedPublic(BaseModel):
    turn_id: uuid.UUID
    reason: str


class ExportValidationPublic(BaseModel):
    """What the validation pass of the export found (docs/live.md, "Feedback")."""

    lines: int
    rejected: list[RejectedPublic]


def _when(raw: str | None, name: str) -> datetime | None:
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{name}={raw[:40]!r} is not an ISO date or time") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def _export(
    request: Request,
    rating: Literal["up", "down", "all"],
    since: str | None,
    until: str | None,
    source: Literal["conversation", "live", "all"],
    max_line_tokens: int,
) -> Export:
    services: Services = request.app.state.services
    exporter: FinetuneExporter | None = services.finetune
    if exporter is None:
        raise NotFoundError("the fine-tuning export is not available in this server")
    flt = ExportFilter(
        rating=None if rating == "all" else Rating(rating),
        since=_when(since, "since"),
        until=_when(until, "until"),
        source=None if source == "all" else source,
    )
    return await exporter.export(flt, max_line_tokens)


RatingQuery = Annotated[Literal["up", "down", "all"], Query()]
SourceQuery = Annotated[Literal["conversation", "live", "all"], Query()]
MaxTokensQuery = Annotated[int, Query(ge=16, le=1_000_000)]


@export_router.get("/finetune", response_class=Response)
async def download_finetune(
    request: Request,
    _admin: AdminDep,
    rating: RatingQuery = "up",
    since: str | None = None,
    until: str | None = None,
    source: SourceQuery = "all",
    max_line_tokens: MaxTokensQuery = 16384,
) -> Response:
    """The rated replies as JSONL in the OpenAI chat fine-tuning format (UTF-8); the counts of
    written and set-aside lines in ``X-Export-Lines`` and ``X-Export-Rejected``."""
    result = await _export(request, rating, since, until, source, max_line_tokens)
    body = "".join(line.model_dump_json() + "\n" for line in result.lines).encode()
    return Response(
        body,
        media_type="application/jsonl; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="finetune.jsonl"',
            "Cache-Control": "no-store",
            "X-Export-Lines": str(len(result.lines)),
            "X-Export-Rejected": str(len(result.rejected)),
        },
    )


@export_router.get("/finetune/validation", response_model=ExportValidationPublic)
async def validate_finetune(
    request: Request,
    _admin: AdminDep,
    rating: RatingQuery = "up",
    since: str | None = None,
    until: str | None = None,
    source: SourceQuery = "all",
    max_line_tokens: MaxTokensQuery = 16384,
) -> ExportValidationPublic:
    """How many lines the same download would hold and which replies it sets aside, and why."""
    result = await _export(request, rating, since, until, source, max_line_tokens)
    return ExportValidationPublic(
        lines=len(result.lines),
        rejected=[RejectedPublic(turn_id=r.turn_id, reason=r.reason) for r in result.rejected],
    )
