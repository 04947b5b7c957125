"""Long-term memory search: ``GET /api/v1/memory/search`` over past conversations (pgvector)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel

from avatar.application.brain import BrainConfig, BrainFactory, load_persona
from avatar.bootstrap import Container
from avatar.domain.errors import InvalidInputError
from avatar.presentation.deps import ContainerDep
from avatar.settings import Settings

router = APIRouter(prefix="/api/v1/memory", tags=["memory"])


def brain_config(settings: Settings) -> BrainConfig:
    llm = settings.llm
    return BrainConfig(
        context_tokens=llm.n_ctx,
        max_reply_tokens=llm.max_tokens,
        temperature=llm.temperature,
        history_keep_tokens=llm.history_keep_tokens,
        summarize_at_tokens=llm.history_summarize_at_tokens,
        memory_top_k=llm.memory_top_k,
    )


async def startup(app: FastAPI, container: Container) -> None:
    """Load the persona (a bad file fails start-up with its path) and offer the brain factory.

    The conversation pipeline gets a session's brain with
    ``await container.extras["brain_factory"](session_id)``.
    """
    settings = container.settings
    persona = load_persona(settings.llm.persona_file)
    container.extras["brain_factory"] = BrainFactory(
        container.chat_model, container.text_embedder, container.uow, persona, brain_config(settings)
    )


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
    container: ContainerDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="What to look for, any language")],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
    session_id: Annotated[uuid.UUID | None, Query(description="Only this conversation")] = None,
) -> MemorySearchPublic:
    """Past utterances closest in meaning to ``q`` (multilingual: a Korean query finds English)."""
    query = q.strip()
    if not query:
        raise InvalidInputError("q must contain some text")
    [vector] = await container.text_embedder.embed([query])
    async with container.uow() as tx:
        hits = await tx.memories.search(vector, limit=limit, session_id=session_id)
    return MemorySearchPublic(
        query=query,
        hits=[
            MemoryHitPublic(
                session_id=h.session_id, turn_id=h.turn_id, role=h.role, text=h.text, score=h.score
            )
            for h in hits
        ],
    )
