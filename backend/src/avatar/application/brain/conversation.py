"""The conversation brain: one per session, streams replies with persona, emotion and memory.

``reply()`` yields a typed stream: first :class:`EmotionDecided`, then :class:`TextDelta` events
(clean text, never markup), then :class:`ReplyEnded`. The history is a token-based sliding window
over whole turns; when it grows past ``summarize_at_tokens`` the oldest turns leave it by a
background task, either folded into a rolling summary or dropped (:class:`HistoryFold`); how far the
window reaches is persisted through ``UnitOfWork.summaries``. Past turns are embedded into long-term
memory (``UnitOfWork.memories``) and the closest ones are put into the prompt, so dropped turns come
back when they matter.

Turns themselves are persisted by the conversation pipeline (``ConversationTurn.ai_response`` holds
what the listener heard); :meth:`ConversationBrain.restore` rebuilds the window from them and the
saved summary.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from avatar.application.brain.persona import Persona, detect_language, language_name
from avatar.application.brain.reply_parser import ReplyParser, strip_markup
from avatar.application.brain.spoken import sentence_cut
from avatar.application.durable_writes import DurableWriter
from avatar.application.ports.llm import ChatErrorKind, ChatMessage, ChatModel, ChatModelError, TextEmbedder
from avatar.application.ports.storage import MemoryHit, UnitOfWorkFactory
from avatar.application.storage_records import MemoryInsert, MemoryItem, StorageApplier, SummarySave
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Emotion

log = logging.getLogger(__name__)

#: Chat templates add a few tokens around every message.
_MESSAGE_OVERHEAD = 8
#: "- the user said: " before each recalled memory.
_MEMORY_LINE_OVERHEAD = 6
_TRAILING_ELLIPSIS = re.compile("[\\s.\u2026,;:\u3001\uff0c\\-\u2013\u2014]+$")


@asynccontextmanager
async def _closing(stream: AsyncIterator[str]) -> AsyncIterator[None]:
    """Close the model's stream when the reply is abandoned, so generation stops at once."""
    try:
        yield
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class ModelStarted:
    """The model's first token arrived (once per reply, before anything decided from it; never for a
    fallback the model did not start). It ends the ``llm_ttft`` stage: a reply without an emotion tag
    releases no text until its first clause is complete, so the first text would time the clause,
    not the model (docs/adr/0014-voice-latency.md, "Eleventh round")."""


@dataclass(frozen=True, slots=True)
class EmotionDecided:
    """The reply's emotion, decided before any text."""

    emotion: Emotion


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of clean reply text (safe to show and speak)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReplyEnded:
    """The last event of every reply, also after a failure (never dropped).

    Attributes:
        text: The whole clean reply as streamed.
        emotion: The reply's emotion.
        turn_number: The turn this reply belongs to.
        fallback: True when the text is the persona's fallback reply (the model was unavailable).
        error: The classified failure, if the model failed before or during the reply.
    """

    text: str
    emotion: Emotion
    turn_number: int
    fallback: bool = False
    error: ChatErrorKind | None = None


BrainEvent = ModelStarted | EmotionDecided | TextDelta | ReplyEnded


class HistoryFold(StrEnum):
    """How the oldest turns leave the history window (docs/adr/0014-voice-latency.md, "Eighth round")."""

    #: The model writes a rolling summary of them, kept in the prompt's head.
    SUMMARIZE = "summarize"
    #: They leave the prompt and stay reachable through long-term memory only: for a model that
    #: cannot summarize (the packaged SmolLM2-135M repeats the transcript), and the cheapest fold
    #: (the prompt's head does not change, so the server's cache keeps it).
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class BrainConfig:
    """Budgets of the brain (mapped from ``settings.llm`` by the composition layer)."""

    context_tokens: int = 8192
    max_reply_tokens: int = 200
    #: The reply stops after this many complete sentences (0: no limit); replies are spoken
    #: (application/brain/spoken.py).
    max_spoken_sentences: int = 3
    temperature: float = 0.7
    history_keep_tokens: int = 5000
    summarize_at_tokens: int = 7000
    fold: HistoryFold = HistoryFold.SUMMARIZE
    summary_max_tokens: int = 160
    memory_top_k: int = 3
    memory_min_score: float = 0.35
    #: Most tokens the recalled memories of one prompt may have (0: no bound). Each is a token the
    #: server computes before the first one of the reply (~3.5 ms each on two CPU cores).
    memory_max_tokens: int = 0
    memory_timeout_s: float = 1.0
    #: Recall memories on the partial transcript while the person speaks and have the model server
    #: compute the prompt up to them (:meth:`ConversationBrain.prime`).
    prime_memories: bool = False
    #: Room kept free for token-count error when the count is approximate.
    safety_margin_tokens: int = 64

    def __post_init__(self) -> None:
        if self.history_keep_tokens >= self.summarize_at_tokens:
            raise InvalidInputError("history_keep_tokens must be below history_summarize_at_tokens")
        if self.max_reply_tokens + self.safety_margin_tokens >= self.context_tokens:
            raise InvalidInputError("max_reply_tokens leaves no room for a prompt in the model context")


@dataclass(frozen=True, slots=True)
class BrainDeps:
    """What every session's brain shares: the model, the embedder, storage, persona and budgets."""

    chat_model: ChatModel
    embedder: TextEmbedder
    uow: UnitOfWorkFactory
    persona: Persona
    config: BrainConfig = field(default_factory=BrainConfig)
    #: Writes memories and summaries, through the storage spool when there is one
    #: (docs/resilience.md); ``None``: straight to ``uow``.
    durable: DurableWriter | None = None
    #: Awaited before background work of the brain (storing memories): returns once no reply of
    #: the process is between its final transcript and its first audio (``CriticalPath.clear``,
    #: docs/adr/0014-voice-latency.md); ``None``: no waiting.
    background_gate: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class HistoryTurn:
    """One exchange in the sliding window."""

    number: int
    user: str
    assistant: str
    tokens: int
    turn_id: uuid.UUID | None = None
    remembered: bool = False
    #: The listener heard the persona's fallback, not the model: the window keeps the user's words
    #: but no assistant reply, so the model is never prompted with its own apology.
    fallback: bool = False
    #: The recalled-memories message this turn was prompted with, kept in the window where it was
    #: sent so the next prompt starts with the same bytes and the model server reuses its cache
    #: (docs/adr/0014-voice-latency.md); its memory texts are not recalled again while in the window.
    recalled: str = ""
    recalled_texts: frozenset[str] = frozenset()
    #: The model's own text as streamed (emotion tags included), for the same reason; empty when
    #: what the listener heard differs (barge-in) or the turn was restored from storage.
    said: str = ""


class ConversationBrain:
    """Replies for one session. Not safe for concurrent ``reply()`` calls (one turn at a time)."""

    def __init__(self, session_id: uuid.UUID, deps: BrainDeps) -> None:
        self.session_id = session_id
        self._chat = deps.chat_model
        self._embedder = deps.embedder
        self._uow = deps.uow
        self._writes = deps.durable or DurableWriter(StorageApplier(deps.uow, None))
        self._persona = deps.persona
        self._config = deps.config
        self._background_gate = deps.background_gate
        self._turns: list[HistoryTurn] = []
        self._summary = ""
        self._covered = 0
        self._next_number = 1
        self._replying = False
        self._fold_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        #: The language of the latest turn (part of the prompt's head; see :meth:`_summarize`).
        self._language: str | None = None
        self._closing = False
        self.summaries_written = 0
        #: Folds of either kind (:class:`HistoryFold`) that landed.
        self.folds = 0
        #: The language and memories of the last prompt head sent ahead by :meth:`prime`, and how
        #: many were sent.
        self._primed: tuple[str | None, tuple[str, ...]] | None = None
        self.primes = 0
        #: A client's own instructions, added after the persona (an OpenAI Realtime
        #: ``session.update``, docs/realtime.md); empty for the web app.
        self.instructions = ""

    @classmethod
    async def restore(cls, session_id: uuid.UUID, deps: BrainDeps) -> ConversationBrain:
        """A brain with the session's saved summary and the persisted turns it does not cover."""
        brain = cls(session_id, deps)
        async with deps.uow() as tx:
            saved = await tx.summaries.load(session_id)
            turns = await tx.turns.list_for_session(session_id)
        if saved is not None:
            brain._summary, brain._covered = saved
        for turn in turns:
            if turn.turn_number <= brain._covered:
                continue
            reply = strip_markup(turn.ai_response)
            fallback = reply in brain._fallback_texts()
            if fallback:
                reply = ""
            brain._turns.append(
                HistoryTurn(
                    turn.turn_number,
                    turn.user_input,
                    reply,
                    brain._turn_tokens(turn.user_input, reply),
                    turn.turn_id,
                    remembered=True,
                    fallback=fallback,
                )
            )
        last = max((t.turn_number for t in turns), default=0)
        brain._next_number = max(last, brain._covered) + 1
        return brain

    # --- what the pipeline and tests read ----------------------------------------------------

    @property
    def summary(self) -> str:
        return self._summary

    @property
    def covered_turns(self) -> int:
        return self._covered

    @property
    def history(self) -> list[HistoryTurn]:
        return list(self._turns)

    def history_tokens(self) -> int:
        return sum(t.tokens for t in self._turns)

    # --- replies -------------------------------------------------------------------------------

    async def reply(
        self, user_text: str, *, turn_id: uuid.UUID | None = None, turn_number: int | None = None
    ) -> AsyncGenerator[BrainEvent, None]:
        """Stream the reply to ``user_text``.

        Closing the iteration early (barge-in) keeps what was released so far as the turn's reply
        until :meth:`record_interrupted` says what was actually heard.

        Raises:
            InvalidInputError: ``user_text`` is empty or cannot fit the model context.
        """
        text = user_text.strip()
        if not text:
            raise InvalidInputError("the user's message is empty")
        number = turn_number if turn_number is not None else self._next_number
        self._next_number = max(self._next_number, number + 1)
        self._replying = True
        self._primed = None  # the next utterance's prime builds on this turn's prompt
        # A summary under way is not cut short: the model queue lets this reply in after it
        # (one request per session at a time). Cancelling it starved it for good in a long
        # conversation: each reply cut the next summary short, the server had already dropped the
        # conversation's cached prompt for it, so every reply computed ~7000 tokens again
        # (docs/resilience.md, "One model server per session").
        self._remember_settled()
        language = detect_language(text)
        self._language = language
        turn = HistoryTurn(number, text, "", self._turn_tokens(text, ""), turn_id)
        released: list[str] = []
        try:
            memories = await self._recall(text)
            messages, used = self._prompt(text, language, memories)
            recalled = self._recalled(used)
            if recalled is not None:
                turn.recalled = recalled.content
                turn.recalled_texts = frozenset(m.text for m in used)
            self._turns.append(turn)
            parser = ReplyParser()
            emotion: Emotion | None = None
            error: ChatErrorKind | None = None
            raw: list[str] = []
            truncated = False
            try:
                stream = self._chat.stream_chat(
                    messages,
                    max_tokens=self._config.max_reply_tokens,
                    temperature=self._config.temperature,
                    session=self.session_id,
                )
                async with _closing(stream):
                    async for delta in stream:
                        if not raw:
                            yield ModelStarted()
                        raw.append(delta)
                        decided, clean = parser.feed(delta)
                        if decided is not None:
                            emotion = decided
                            yield EmotionDecided(decided)
                        if clean:
                            so_far = "".join(released)
                            cut = sentence_cut(so_far + clean, self._config.max_spoken_sentences)
                            if cut is not None:  # enough said: stop the model (generation ends)
                                clean = (so_far + clean)[len(so_far) : cut]
                                truncated = True
                            if clean:
                                released.append(clean)
                                turn.assistant = "".join(released)
                                yield TextDelta(clean)
                            if truncated:
                                break
            except ChatModelError as exc:
                log.warning("chat model failed (%s): %s", exc.kind, exc.message)
                error = exc.kind
                if not released:
                    # Nothing reached the listener: answer with the persona's fallback instead.
                    for event in self._fallback(turn, language, emotion, error):
                        yield event
                    return
            decided, clean = parser.finish()
            if decided is not None:
                emotion = decided
                yield EmotionDecided(decided)
            if clean and not truncated:
                released.append(clean)
            final = "".join(released).rstrip()
            if not final:
                # The model stopped with nothing speakable (a bare emotion tag, only markup): the
                # listener would hear silence, so answer with the persona's fallback as for a failure.
                for event in self._fallback(turn, language, emotion, error):
                    yield event
                return
            turn.assistant = final
            turn.said = _as_said("".join(raw), final, truncated=truncated)
            turn.tokens = self._tokens_of(turn)
            if clean.rstrip() and not truncated:
                yield TextDelta(clean.rstrip())
            yield ReplyEnded(final, emotion or Emotion.NEUTRAL, number, error=error)
        finally:
            self._replying = False
            self._maybe_fold()

    async def warm_up(self, language: str | None = "en", *, as_session: bool = True) -> bool:
        """Have the model server compute this conversation's prompt head (persona, examples,
        history) now, so the next reply's first token does not wait for it: the server keeps the
        work for any later prompt that starts with the same bytes (docs/adr/0014-voice-latency.md).
        ``language`` is a guess of the user's (it is part of the system message); ``as_session``
        false sends it without this session's key, so it claims no model server for a session
        (the start-up warm-up). ``False`` when the model could not be reached (the warm-up is only
        an optimization)."""
        messages, _ = self._prompt("", language, [])
        return await self._send_ahead(messages[:-1], "prompt warm-up", as_session=as_session)

    async def _send_ahead(self, messages: list[ChatMessage], what: str, *, as_session: bool = True) -> bool:
        """Have the model server compute ``messages`` (one token generated) for a later prompt that
        starts with them; ``False`` when the model could not be reached (only an optimization)."""
        try:
            stream = self._chat.stream_chat(
                messages, max_tokens=1, temperature=0.0, session=self.session_id if as_session else None
            )
            async with _closing(stream):
                async for _ in stream:
                    pass
        except ChatModelError as exc:
            log.info("%s skipped: %s", what, exc.message)
            return False
        return True

    async def prime(self, partial_text: str) -> bool:
        """While the person is still speaking: recall memories for the words heard so far and have
        the model server compute the prompt up to them (persona, history, the recalled memories),
        so that the reply, if it recalls the same memories, computes only the person's words.

        After the history's first fold most turns recall memories of the dropped turns, up to
        ``memory_max_tokens`` tokens the server computed after the final transcript
        (docs/adr/0014-voice-latency.md, "Ninth round"). The reply recalls again on the final
        words; a different set only costs what it did before. ``True`` when a prompt was sent.
        Nothing is sent while a reply or a fold is under way, without memories, for the same
        memories as the last time, or when the words read as no clear language or another than
        the last turn's.
        """
        text = partial_text.strip()
        if not self._config.prime_memories or not text or self._busy():
            return False
        language = detect_language(text)
        if language is None or (self._language is not None and language != self._language):
            # Another language (or none clear) is another system message: the server would drop
            # the cached conversation for this prompt, and the reply, in the language of its final
            # words, would compute it all again (first tokens of 3.3-3.5 s in a 16-turn run;
            # docs/adr/0014-voice-latency.md, tenth round).
            return False
        memories = await self._recall(text)
        if not memories or self._busy():
            return False
        try:
            messages, used = self._prompt(text, language, memories)
        except InvalidInputError:
            return False
        key = (language, tuple(m.text for m in used))
        if not used or key == self._primed:
            return False
        self._primed = key
        self.primes += 1
        return await self._send_ahead(messages[:-1], "memory prime")

    def _busy(self) -> bool:
        """A reply, a fold or the session's end is under way (the prompt would change under a prime)."""
        folding = self._fold_task is not None and not self._fold_task.done()
        return self._replying or folding or self._closing

    def _fallback_texts(self) -> set[str]:
        """The persona's fallback replies as clean text (how persisted turns store them)."""
        return {strip_markup(text).strip() for text in self._persona.fallback_replies.values()}

    def _fallback(
        self, turn: HistoryTurn, language: str | None, emotion: Emotion | None, error: ChatErrorKind | None
    ) -> list[BrainEvent]:
        """The persona's fallback reply as events (an emotion first if none was decided yet)."""
        parser = ReplyParser()
        _, head = parser.feed(self._persona.fallback_reply(language))
        _, tail = parser.finish()
        text = (head + tail).strip()
        # Spoken to the listener, but not what the model said: kept out of the history window (and
        # so out of long-term memory and summaries) so the model does not learn to repeat it.
        turn.assistant = turn.said = ""
        turn.fallback = True
        turn.tokens = self._tokens_of(turn)
        events: list[BrainEvent] = []
        if emotion is None:
            emotion = parser.emotion or Emotion.NEUTRAL
            events.append(EmotionDecided(emotion))
        events += [TextDelta(text), ReplyEnded(text, emotion, turn.number, fallback=True, error=error)]
        return events

    def record_interrupted(self, heard_text: str) -> None:
        """Barge-in: keep only what the listener heard as the latest turn's reply."""
        if not self._turns:
            return
        heard = _TRAILING_ELLIPSIS.sub("", strip_markup(heard_text))
        turn = self._turns[-1]
        if not turn.fallback:  # a heard fallback stays out of the window
            turn.assistant = heard
            turn.said = ""
            turn.tokens = self._tokens_of(turn)
        self._remember_settled()

    async def wait_idle(self) -> None:
        """Settle the latest turn into memory and wait for background work (tests, shutdown)."""
        self._remember_settled(include_latest=True)
        while self._background or (self._fold_task is not None and not self._fold_task.done()):
            pending = list(self._background)
            if self._fold_task is not None and not self._fold_task.done():
                pending.append(self._fold_task)
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background work (memory writes, a running summary) before the session goes."""
        self._closing = True
        await self.wait_idle()

    # --- prompt ---------------------------------------------------------------------------------

    def _turn_tokens(self, user: str, assistant: str) -> int:
        count = self._chat.count_tokens(user) + _MESSAGE_OVERHEAD
        if assistant:
            count += self._chat.count_tokens(assistant) + _MESSAGE_OVERHEAD
        return count

    def _tokens_of(self, turn: HistoryTurn) -> int:
        """What ``turn`` costs in the window: its words, what the model said, its recalled memories."""
        count = self._turn_tokens(turn.user, turn.said or turn.assistant)
        if turn.recalled:
            count += self._chat.count_tokens(turn.recalled) + _MESSAGE_OVERHEAD
        return count

    def _system(self, language: str | None, with_summary: bool) -> str:
        """The stable head of every prompt: it changes only when the summary does, so the model
        server's prompt cache reuses its work turn after turn (docs/architecture.md, "Prompt")."""
        parts = [self._persona.system_message()]
        if self.instructions:
            parts.append(self.instructions)
        name = language_name(language)
        if name:
            parts.append(f"The user is writing in {name}; reply in {name}.")
        if with_summary and self._summary:
            parts.append("Summary of the conversation so far:\n" + self._summary)
        return "\n\n".join(parts)

    @staticmethod
    def _recalled(memories: list[MemoryHit]) -> ChatMessage | None:
        """This turn's recalled memories, placed after the history (they change every turn) and
        kept in the window before the turn's words afterwards (:attr:`HistoryTurn.recalled`)."""
        if not memories:
            return None
        lines = "\n".join(
            f"- {'the user said' if m.role == 'user' else 'you said'}: {m.text}" for m in memories
        )
        return ChatMessage("system", "Things you remember from earlier conversations:\n" + lines)

    def _prompt(
        self, user_text: str, language: str | None, memories: list[MemoryHit]
    ) -> tuple[list[ChatMessage], list[MemoryHit]]:
        """The messages for this turn, and the memories that fit into them."""
        cfg = self._config
        budget = cfg.context_tokens - cfg.max_reply_tokens - cfg.safety_margin_tokens
        user_cost = self._chat.count_tokens(user_text) + _MESSAGE_OVERHEAD
        examples: list[ChatMessage] = []
        for ex in self._persona.examples:
            examples += [ChatMessage("user", ex.user), ChatMessage("assistant", ex.assistant)]
        example_cost = sum(self._chat.count_tokens(m.content) + _MESSAGE_OVERHEAD for m in examples)
        # Shed optional context (memories, then examples, then the summary) until the prompt fits.
        for mem_n, use_examples, with_summary in (
            (len(memories), True, True),
            (0, True, True),
            (0, False, True),
            (0, False, False),
        ):
            system = self._system(language, with_summary)
            recalled = self._recalled(memories[:mem_n])
            fixed = self._chat.count_tokens(system) + _MESSAGE_OVERHEAD + user_cost
            if recalled is not None:
                fixed += self._chat.count_tokens(recalled.content) + _MESSAGE_OVERHEAD
            fixed += example_cost if use_examples else 0
            if fixed <= budget:
                break
        else:
            raise InvalidInputError("the message is too long for the model's context")
        history: list[ChatMessage] = []
        room = budget - fixed
        for turn in reversed(self._turns):  # newest first: the window drops the oldest turns
            if turn.tokens > room:
                break
            room -= turn.tokens
            pair = [ChatMessage("system", turn.recalled)] if turn.recalled else []
            pair.append(ChatMessage("user", turn.user))
            if turn.assistant:
                pair.append(ChatMessage("assistant", turn.said or turn.assistant))
            history = pair + history
        shots = examples if use_examples else []
        tail = [recalled] if recalled is not None else []
        messages = [ChatMessage("system", system), *shots, *history, *tail, ChatMessage("user", user_text)]
        return messages, memories[:mem_n]

    # --- long-term memory ---------------------------------------------------------------------

    async def _recall(self, text: str) -> list[MemoryHit]:
        if self._config.memory_top_k <= 0:
            return []
        try:
            async with asyncio.timeout(self._config.memory_timeout_s):
                [vector] = await self._embedder.embed([text])
                async with self._uow() as tx:
                    # Only the memories of this conversation's owner (docs/security.md); a session
                    # without a known owner recalls only itself.
                    session = await tx.sessions.get(self.session_id)
                    owner = session.owner_id if session is not None else None
                    hits = await tx.memories.search(
                        vector,
                        limit=self._config.memory_top_k + 4,
                        session_id=None if owner is not None else self.session_id,
                        owner_id=owner,
                    )
        except Exception as exc:  # memory is an enhancement: a reply never fails for it
            log.warning("memory recall skipped: %s: %s", type(exc).__name__, exc)
            return []
        in_window = {t.user for t in self._turns} | {t.assistant for t in self._turns} | {text}
        in_window |= {m for t in self._turns for m in t.recalled_texts}
        chosen = [h for h in hits if h.score >= self._config.memory_min_score and h.text not in in_window]
        return self._within_budget(chosen[: self._config.memory_top_k])

    def _within_budget(self, hits: list[MemoryHit]) -> list[MemoryHit]:
        """The best memories whose lines fit ``memory_max_tokens`` (one too long is passed over for
        a shorter one after it)."""
        budget = self._config.memory_max_tokens
        if budget <= 0:
            return hits
        kept: list[MemoryHit] = []
        for hit in hits:
            cost = self._chat.count_tokens(hit.text) + _MEMORY_LINE_OVERHEAD
            if cost <= budget:
                kept.append(hit)
                budget -= cost
        return kept

    def _remember_settled(self, *, include_latest: bool = False) -> None:
        """Store settled turns (all but the latest, whose heard text may still change) in memory."""
        settled = self._turns if include_latest else self._turns[:-1]
        todo = [t for t in settled if not t.remembered]
        if not todo:
            return
        for turn in todo:
            turn.remembered = True
        self._spawn(self._store_memories(todo))

    async def _store_memories(self, turns: list[HistoryTurn]) -> None:
        items = [(t, "user", t.user) for t in turns]
        items += [(t, "assistant", t.assistant) for t in turns if t.assistant]
        try:
            if self._background_gate is not None:
                # The previous turn settles when the next reply starts: its embedding (and the
                # recall's, which waits for the embedder) would share the cores with that reply's
                # first token (docs/adr/0014-voice-latency.md, "Ninth round").
                await self._background_gate()
            vectors = await self._embedder.embed([text for _, _, text in items])
            record = MemoryInsert(
                session_id=self.session_id,
                items=[
                    MemoryItem(turn_id=turn.turn_id, role=role, text=text, embedding=list(vector))
                    for (turn, role, text), vector in zip(items, vectors, strict=True)
                ],
            )
            # An unreachable database: the memories wait in the storage spool (docs/resilience.md).
            await self._writes.write(record)
        except Exception:
            log.exception("storing %d memories failed", len(items))

    # --- summarization --------------------------------------------------------------------------

    def _maybe_fold(self) -> None:
        if self._replying or self.history_tokens() < self._config.summarize_at_tokens:
            return
        if self._fold_task is not None and not self._fold_task.done():
            return
        fold = self._summarize() if self._config.fold is HistoryFold.SUMMARIZE else self._drop()
        self._fold_task = asyncio.get_running_loop().create_task(fold)

    def _oldest_to_fold(self) -> list[HistoryTurn]:
        """The oldest turns whose removal brings the window under ``history_keep_tokens``."""
        cfg = self._config
        total = self.history_tokens()
        fold: list[HistoryTurn] = []
        room = cfg.context_tokens - cfg.summary_max_tokens - cfg.safety_margin_tokens - 256
        for turn in self._turns[:-1]:  # the latest turn stays verbatim
            if total <= cfg.history_keep_tokens or turn.tokens > room:
                break
            fold.append(turn)
            total -= turn.tokens
            room -= turn.tokens
        return fold

    async def _summarize(self) -> None:
        fold = self._oldest_to_fold()
        if not fold:
            return
        transcript = "\n".join(
            f"User: {t.user}" + (f"\nAssistant: {t.assistant}" if t.assistant else "") for t in fold
        )
        previous = f"Summary so far:\n{self._summary}\n\n" if self._summary else ""
        messages = [
            ChatMessage(
                "system",
                "You summarize conversations. Write a short factual summary in plain "
                "sentences: who said what, names, facts and wishes to remember.",
            ),
            ChatMessage("user", f"{previous}New part of the conversation:\n{transcript}\n\nSummary:"),
        ]
        parts: list[str] = []
        try:
            stream = self._chat.stream_chat(
                messages, max_tokens=self._config.summary_max_tokens, temperature=0.2, session=self.session_id
            )
            async with _closing(stream):
                async for delta in stream:
                    parts.append(delta)
        except ChatModelError as exc:
            log.warning("summarization postponed: %s", exc.message)
            return
        summary = strip_markup("".join(parts))
        if not summary:
            log.warning("summarization returned nothing; postponed")
            return
        if await self._fold_away(fold, summary):
            self.summaries_written += 1

    async def _drop(self) -> None:
        """The oldest turns leave the window unsummarized (:attr:`HistoryFold.DROP`)."""
        fold = self._oldest_to_fold()
        if fold:
            await self._fold_away(fold, self._summary)

    async def _fold_away(self, fold: list[HistoryTurn], summary: str) -> bool:
        """Persist how far ``summary`` reaches, then take ``fold`` out of the window; ``False``
        (the window unchanged) when that could not be stored."""
        covered = fold[-1].number
        try:
            # An unreachable database: the record waits in the storage spool (docs/resilience.md).
            await self._writes.write(
                SummarySave(session_id=self.session_id, summary=summary, covered_turns=covered)
            )
        except Exception:
            log.exception("saving the window's reach failed; the window keeps those turns")
            return False
        self._summary, self._covered = summary, covered
        self._remember_settled(include_latest=False)  # folded turns must reach memory first
        self._turns = [t for t in self._turns if t.number > covered]
        self.folds += 1
        if not self._closing and not self._replying:
            # The fold changed the prompt (a new summary in the system message, or the history's
            # first turn), so the server's cached prompt no longer matches from there on: have it
            # compute the new prompt now, while the person listens or speaks, instead of the next
            # reply paying for it before its first token (~1 s on two cores for a summary; ~0.5 s
            # for a drop, whose head through the examples is still cached;
            # docs/adr/0014-voice-latency.md).
            await self.warm_up(self._language)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _as_said(raw: str, final: str, *, truncated: bool) -> str:
    """The model's own text for the window: ``raw`` as streamed, or its head up to where ``final``
    (the clean text the listener got) ends when the reply was cut at its sentence limit."""
    if "<think" in raw:  # reasoning is never replayed to the model
        return final
    if not truncated:
        return raw.strip()
    tail = final[-24:]
    at = raw.rfind(tail) if tail else -1
    return raw[: at + len(tail)].strip() if at >= 0 else final
