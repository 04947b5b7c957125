"""Long-term memory search: ``GET /api/v1/memory/search`` over past conversations (pgvector)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from avatar.application.validation import SafeStr
from avatar.presentation.auth import CallerDep
from avatar.presentation.deps import ContainerDep, ServicesDep
from avatar.presentation.ownership import visible_session

router = APIRouter(prefix="/api/v1/memory", tags=["memory"])


class MemoryHitPublic(BaseModel):
    session_id: uuid.UUID
    turn_id: uuid.UUID | None
    role: str
    text: str
    score: float


class MemorySearchPublic(BaseModel):
    query: str
    hits: list[MemoryHitPublic]


@router.get("/search", response_model=MemorySearchPublic)
async def search_memory(
    services: ServicesDep,
    container: ContainerDep,
    user: CallerDep,
    q: Annotated[SafeStr, Query(min_length=1, max_length=1000, description="What to look for, any language")],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
    session_id: Annotated[uuid.UUID | None, Query(description="Only this conversation")] = None,
) -> MemorySearchPublic:
    """The caller's past utterances closest in meaning to ``q`` (multilingual: a Korean query finds
    English). Only the caller's own conversations are searched, admins included."""
    if session_id is not None:
        await visible_session(container, services, session_id, user, "memory.search")
        owner = None
    else:
        owner = user.user_id
    hits = await services.memory.search(q, limit=limit, session_id=session_id, owner_id=owner)
    return MemorySearchPublic(
        query=q.strip(),
        hits=[
            MemoryHitPublic(
                session_id=h.session_id, turn_id=h.turn_id, role=h.role, text=h.text, score=h.score
            )
            for h in hits
        ],
    )
