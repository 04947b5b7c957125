"""Chat model and text embedding ports."""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from avatar.application.ports.common import ComponentHealth
from avatar.domain.errors import DependencyError

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


class ChatErrorKind(enum.StrEnum):
    """Why a chat request failed (the ``kind`` label of ``llm_errors_total``)."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    RATE_LIMITED = "rate_limited"
    BAD_RESPONSE = "bad_response"
    CIRCUIT_OPEN = "circuit_open"
    #: Every slot of the model was taken for longer than the bounded wait: the model works but
    #: cannot serve this request in time (clients are told ``BUSY``, not that the model is down).
    BUSY = "busy"


class ChatModelError(DependencyError):
    """The chat model could not produce (the rest of) a reply.

    Attributes:
        kind: The classified cause.
        partial: True when some text had already been streamed before the failure.
        code: ``BUSY`` for :attr:`ChatErrorKind.BUSY`, ``LLM_UNAVAILABLE`` for every other kind.
    """

    code = "LLM_UNAVAILABLE"

    def __init__(self, kind: ChatErrorKind, message: str, *, partial: bool = False) -> None:
        super().__init__(message, code="BUSY" if kind is ChatErrorKind.BUSY else None)
        self.kind = kind
        self.partial = partial


class ChatModel(Protocol):
    """An OpenAI-compatible chat model that streams tokens (vLLM, llama.cpp server, hosted APIs)."""

    def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        session: uuid.UUID | None = None,
    ) -> AsyncIterator[str]:
        """Yield text deltas as the model writes them. Cancelling the iteration stops generation.

        Requests beyond what the model serves at once wait their turn for a bounded time:
        round-robin between sessions (``session``; ``None`` for callers without one), first come
        first served within a session, at most one request of a session at the model at once;
        another request never cancels one in flight.

        Raises:
            ChatModelError: the model failed before or during the reply (classified by ``kind``);
                ``kind`` is ``BUSY`` when no slot freed up within the bounded wait.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs in this model's context (the model's tokenizer when available)."""
        ...

    async def health(self) -> ComponentHealth: ...


class TextEmbedder(Protocol):
    """Multilingual sentence embeddings for long-term semantic memory."""

    @property
    def dim(self) -> int:
        """Length of every vector :meth:`embed` returns."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order; runs off the event loop."""
        ...


class GenerationPause(Protocol):
    """Stops the chat model's generation for a moment (docs/adr/0014-voice-latency.md, "Seventh
    round"): on a small CPU the embedded model server writing a reply's later sentences makes the
    voice's first chunk of that reply about twice as slow; the reply holds the model meanwhile."""

    def hold(self) -> Callable[[], None]:
        """Pause generation now; call the returned function (once or more) to let it go on.
        Generation also goes on by itself after a bound, so a hold that is never released cannot
        stop the model for good."""
        ...
