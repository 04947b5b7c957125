"""Long-term memory search: past utterances closest in meaning to a query (any language)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from avatar.application.ports.llm import TextEmbedder
from avatar.application.ports.storage import MemoryHit, UnitOfWorkFactory
from avatar.domain.errors import InvalidInputError


class MemorySearch:
    """Embeds the query and ranks the remembered utterances by cosine similarity."""

    def __init__(self, embedder: TextEmbedder, uow: UnitOfWorkFactory) -> None:
        self._embedder = embedder
        self._uow = uow

    async def search(
        self,
        query: str,
        *,
        limit: int = 5,
        session_id: uuid.UUID | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> Sequence[MemoryHit]:
        """The ``limit`` closest remembered utterances, optionally of one session or one owner only.

        Raises:
            InvalidInputError: when ``query`` has no text.
        """
        text = query.strip()
        if not text:
            raise InvalidInputError("q must contain some text")
        [vector] = await self._embedder.embed([text])
        async with self._uow() as tx:
            return await tx.memories.search(vector, limit=limit, session_id=session_id, owner_id=owner_id)
