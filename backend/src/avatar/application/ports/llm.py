"""Chat model and text embedding ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from avatar.application.ports.common import ComponentHealth

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


class ChatModel(Protocol):
    """An OpenAI-compatible chat model that streams tokens (vLLM, llama.cpp server, hosted APIs)."""

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas as the model writes them. Cancelling the iteration stops generation."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs in this model's context (the model's tokenizer when available)."""
        ...

    async def health(self) -> ComponentHealth: ...


class TextEmbedder(Protocol):
    """Multilingual sentence embeddings for long-term semantic memory."""

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
