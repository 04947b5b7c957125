"""Chat for OpenAI's ``/v1/chat/completions``: the avatar model answers as AVATAR (the persona, its
rules and examples, and what the caller said in earlier conversations), the configured chat model
answers the client's messages as they are (docs/openai.md, "Chat").

The API is stateless like OpenAI's: nothing is stored, the client sends the conversation each
time; only the caller's long-term memories (from spoken sessions) are read.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from avatar.application.brain.conversation import BrainConfig
from avatar.application.brain.persona import Persona, detect_language, language_name
from avatar.application.brain.reply_parser import ReplyParser
from avatar.application.ports.llm import ChatMessage, ChatModel, TextEmbedder
from avatar.application.ports.storage import MemoryHit, UnitOfWorkFactory
from avatar.domain.errors import InvalidInputError, NotFoundError
from avatar.domain.models import Emotion, User

log = logging.getLogger(__name__)

#: Chat templates add a few tokens around every message (as the brain counts them).
MESSAGE_OVERHEAD = 8
MAX_MESSAGES = 512


class ChatModelNotFoundError(NotFoundError):
    code = "MODEL_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class ChatOrder:
    """A validated chat request.

    Attributes:
        model: The avatar model's name or the chat model's.
        messages: The conversation so far (``system``, ``user``, ``assistant``), oldest first.
        max_tokens: Most tokens of the reply (None: the avatar's reply budget, or the server's).
        temperature: 0..2 (None: the avatar's, or the server's default).
    """

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass
class ChatReply:
    """One reply being written: iterate :meth:`deltas`; afterwards ``text``, ``usage`` and
    ``finish_reason`` are final. ``emotion`` is the avatar's (None for the plain model)."""

    model: str
    prompt: list[ChatMessage]
    prompt_tokens: int
    max_tokens: int | None
    temperature: float | None
    persona: bool
    #: Whose request this is: the model's queue serves callers round-robin by it, as it serves
    #: sessions (``ChatModel.stream_chat``'s ``session``; docs/resilience.md, "Many users on one box").
    caller: uuid.UUID | None = None
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str = "stop"
    emotion: Emotion | None = None
    _parts: list[str] = field(default_factory=list)


class OpenAIChat:
    """The models ``/v1/models`` lists and the replies ``/v1/chat/completions`` streams."""

    def __init__(
        self,
        chat_model: ChatModel,
        embedder: TextEmbedder,
        uow: UnitOfWorkFactory,
        persona: Persona,
        config: BrainConfig,
        *,
        avatar_model: str,
        base_model: str,
    ) -> None:
        self._chat = chat_model
        self._embedder = embedder
        self._uow = uow
        self._persona = persona
        self._config = config
        self.avatar_model = avatar_model
        self.base_model = base_model

    def models(self) -> list[str]:
        """The model names a client may ask for: the avatar first."""
        return (
            [self.avatar_model]
            if self.avatar_model == self.base_model
            else [self.avatar_model, self.base_model]
        )

    async def start(self, order: ChatOrder, caller: User) -> ChatReply:
        """Validate ``order`` and build the prompt (recalling the caller's memories for the avatar).

        Raises:
            ChatModelNotFoundError: an unknown model (404).
            InvalidInputError: no messages, too many, or a conversation that cannot fit the context.
        """
        if order.model not in self.models():
            raise ChatModelNotFoundError(
                f"the model {order.model!r} does not exist; use {' or '.join(map(repr, self.models()))}"
            )
        if not order.messages:
            raise InvalidInputError("messages must hold at least one message", code="INVALID_MESSAGES")
        if len(order.messages) > MAX_MESSAGES:
            raise InvalidInputError(f"at most {MAX_MESSAGES} messages", code="INVALID_MESSAGES")
        if order.temperature is not None and not 0.0 <= order.temperature <= 2.0:
            raise InvalidInputError("temperature must be within 0..2", code="INVALID_TEMPERATURE")
        cfg = self._config
        if order.max_tokens is not None and not 1 <= order.max_tokens <= cfg.context_tokens // 2:
            raise InvalidInputError(
                f"max_tokens must be within 1..{cfg.context_tokens // 2}", code="INVALID_MAX_TOKENS"
            )
        persona = order.model == self.avatar_model
        max_tokens: int | None = order.max_tokens
        temperature: float | None = order.temperature
        if persona:
            max_tokens = order.max_tokens or cfg.max_reply_tokens
            temperature = cfg.temperature if order.temperature is None else order.temperature
            prompt = await self._persona_prompt(order.messages, caller, max_tokens)
        else:
            prompt = self._fit(list(order.messages), [], max_tokens or cfg.max_reply_tokens)
        return ChatReply(
            model=order.model,
            prompt=prompt,
            prompt_tokens=self._tokens(prompt),
            max_tokens=max_tokens,
            temperature=temperature,
            persona=persona,
            caller=caller.user_id,
        )

    async def deltas(self, reply: ChatReply) -> AsyncGenerator[str, None]:
        """The reply's text as it is written (the avatar's emotion tag taken off).

        Raises:
            ChatModelError: the model failed (before any text: the caller answers 503).
        """
        parser = ReplyParser() if reply.persona else None
        stream = self._chat.stream_chat(
            reply.prompt, max_tokens=reply.max_tokens, temperature=reply.temperature, session=reply.caller
        )
        try:
            async for raw in stream:
                text = raw
                if parser is not None:
                    emotion, text = parser.feed(raw)
                    reply.emotion = emotion or reply.emotion
                if text:
                    reply._parts.append(text)
                    yield text
            if parser is not None:
                emotion, tail = parser.finish()
                reply.emotion = emotion or reply.emotion or Emotion.NEUTRAL
                if tail:
                    reply._parts.append(tail)
                    yield tail
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            reply.text = "".join(reply._parts)
            reply.completion_tokens = self._chat.count_tokens(reply.text) if reply.text else 0
            limit = reply.max_tokens
            reply.finish_reason = (
                "length" if limit is not None and reply.completion_tokens >= limit else "stop"
            )

    # --- prompt -----------------------------------------------------------------------------------

    def _tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self._chat.count_tokens(m.content) + MESSAGE_OVERHEAD for m in messages)

    def _fit(self, head: list[ChatMessage], tail: list[ChatMessage], reply_tokens: int) -> list[ChatMessage]:
        """``head + tail`` within the context, dropping the oldest non-system messages of ``head``."""
        cfg = self._config
        budget = cfg.context_tokens - reply_tokens - cfg.safety_margin_tokens
        messages = head + tail
        while self._tokens(messages) > budget:
            droppable = [i for i, m in enumerate(head) if m.role != "system"]
            if len(droppable) <= 1:  # the newest message itself does not fit
                raise InvalidInputError(
                    "the messages are too long for the model's context", code="CONTEXT_TOO_LONG"
                )
            head.pop(droppable[0])
            messages = head + tail
        return messages

    async def _persona_prompt(
        self, messages: Sequence[ChatMessage], caller: User, reply_tokens: int
    ) -> list[ChatMessage]:
        """The brain's prompt order (docs/architecture.md, "Prompt"): the persona's system message
        (with the client's own system messages as instructions), its examples, the conversation,
        this turn's recalled memories, then the newest message."""
        client_system = [m.content for m in messages if m.role == "system"]
        conversation = [m for m in messages if m.role != "system"]
        if not conversation:
            raise InvalidInputError("messages must hold a user message", code="INVALID_MESSAGES")
        last = conversation[-1]
        parts = [self._persona.system_message()]
        name = language_name(detect_language(last.content))
        if name:
            parts.append(f"The user is writing in {name}; reply in {name}.")
        if client_system:
            parts.append("Instructions from the application:\n" + "\n".join(client_system))
        head = [ChatMessage("system", "\n\n".join(parts))]
        for ex in self._persona.examples:
            head += [ChatMessage("user", ex.user), ChatMessage("assistant", ex.assistant)]
        head += conversation[:-1]
        tail: list[ChatMessage] = []
        if last.role == "user":
            memories = await self._recall(last.content, caller, {m.content for m in conversation})
            if memories:
                lines = "\n".join(
                    f"- {'the user said' if m.role == 'user' else 'you said'}: {m.text}" for m in memories
                )
                tail.append(
                    ChatMessage("system", "Things you remember from earlier conversations:\n" + lines)
                )
        tail.append(last)
        return self._fit(head, tail, reply_tokens)

    async def _recall(self, text: str, caller: User, seen: set[str]) -> list[MemoryHit]:
        """The caller's own memories closest to ``text`` (never another user's, docs/security.md)."""
        cfg = self._config
        if cfg.memory_top_k <= 0 or not text.strip():
            return []
        try:
            async with asyncio.timeout(cfg.memory_timeout_s * 3):
                [vector] = await self._embedder.embed([text])
                async with self._uow() as tx:
                    hits = await tx.memories.search(
                        vector, limit=cfg.memory_top_k + 4, owner_id=caller.user_id
                    )
        except Exception as exc:  # memory is an enhancement: a reply never fails for it
            log.warning("memory recall skipped: %s: %s", type(exc).__name__, exc)
            return []
        chosen = [h for h in hits if h.score >= cfg.memory_min_score and h.text not in seen]
        return chosen[: cfg.memory_top_k]
