"""The live stream: chat from every configured platform in, the overlay fed, one message at a time
chosen and answered aloud by the same brain and fast voice as the conversation (docs/live.md).

Flow of one chat message (all in the platform client's task, cheap and non-blocking, so a burst of
10 messages/s or more never loses an overlay line): viewer book -> overlay -> filters -> queue.
The stage task takes the queue's choice, asks the brain (persona, emotion, token window,
summaries, memory; the viewer is named in the prompt), synthesizes the reply with the fast voice,
publishes it to the ``/stage`` pages and the overlay, waits while it plays, pauses, and goes on.
Every message that is not answered is counted with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from avatar.application.brain.conversation import EmotionDecided, ReplyEnded, TextDelta
from avatar.application.conversation.ports import ReplyEngine
from avatar.application.live.overlay import OverlayState
from avatar.application.live.policy import ChatFilter, FilterConfig, ReplyQueue
from avatar.application.ports.chat import ChatSource, ConnectionState
from avatar.application.ports.clock import Clock
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.domain.live import ChatMessage, DropReason
from avatar.domain.models import ConversationTurn, Emotion, Session, TTSMode, new_id
from avatar.domain.wav import pcm16_wav

log = logging.getLogger(__name__)


class LiveMetrics(Protocol):
    def received(self, platform: str) -> None: ...

    def dropped(self, reason: str) -> None: ...

    def replied(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """The stage's pacing and the filters (mapped from ``settings.live``)."""

    avatar_name: str = "AVATAR"
    pause_s: float = 2.0
    queue_capacity: int = 20
    max_age_s: float = 60.0
    language: str | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)


@dataclass(frozen=True, slots=True)
class Speech:
    """One spoken reply as the ``/stage`` page plays it."""

    id: int
    turn_id: uuid.UUID
    to_user: str
    text: str
    emotion: Emotion
    wav: bytes
    duration_s: float
    at: datetime


@dataclass(slots=True)
class Viewer:
    """What the stage remembers of a viewer (by ``platform:user_id``) during the run."""

    name: str
    messages: int = 0
    answered: int = 0
    donated: int = 0


@dataclass(frozen=True, slots=True)
class PlatformStatus:
    platform: str
    state: ConnectionState
    connects: int


class LiveService:
    """Owns the platform clients' tasks and the stage task; ``start`` once, ``aclose`` at the end."""

    def __init__(
        self,
        sources: Sequence[ChatSource],
        *,
        replies: ReplyEngine,
        tts: SpeechSynthesizer,
        uow: UnitOfWorkFactory,
        clock: Clock,
        metrics: LiveMetrics,
        config: LiveConfig,
        overlay: OverlayState | None = None,
        owner: Callable[[], Awaitable[uuid.UUID]] | None = None,
    ) -> None:
        self.sources = list(sources)
        #: Who owns the stage's session and turns (the streamer: the local owner, an admin).
        self._owner = owner
        self._replies = replies
        self._tts = tts
        self._uow = uow
        self._clock = clock
        self._metrics = metrics
        self.config = config
        self.overlay = overlay or OverlayState()
        self.filter = ChatFilter(config.filters)
        self.queue = ReplyQueue(config.queue_capacity, config.max_age_s, self._count_drop)
        self.viewers: dict[str, Viewer] = {}
        self.speeches: deque[Speech] = deque(maxlen=20)
        self.paused = False
        self.session_id: uuid.UUID | None = None
        self._turns = 0
        self._wake = asyncio.Event()
        self._speech_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- chat in ----------------------------------------------------------------------------------

    def _count_drop(self, message: ChatMessage, reason: DropReason) -> None:
        self._metrics.dropped(reason.value)
        log.debug("live: %s from %s dropped: %s", message.platform, message.display_name, reason)

    async def on_message(self, message: ChatMessage) -> None:
        """A platform client's sink: overlay always, queue when the filters let it through."""
        self._metrics.received(message.platform.value)
        viewer = self.viewers.setdefault(message.key, Viewer(message.display_name))
        viewer.name = message.display_name
        viewer.messages += 1
        viewer.donated += message.amount
        self.overlay.add_chat(message, self._clock.now())
        reason = self.filter.verdict(message, self._clock.monotonic())
        if reason is None and self.paused:
            reason = DropReason.PAUSED
        if reason is not None:
            self._count_drop(message, reason)
            return
        self.queue.push(message, self._clock.monotonic())
        self._wake.set()

    def ban(self, key: str) -> None:
        """Never answer this viewer (``platform:user_id``) again; their queued messages go."""
        self.filter.banned.add(key)
        self.queue.drop_all(DropReason.BANNED, [key])

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self.queue.drop_all(DropReason.PAUSED)

    def status(self) -> list[PlatformStatus]:
        return [PlatformStatus(s.platform.value, s.state, s.connects) for s in self.sources]

    # --- the stage ----------------------------------------------------------------------------------

    def prompt_for(self, message: ChatMessage) -> str:
        """The brain's input: who speaks (named, regular or new, donation) and what they wrote."""
        viewer = self.viewers.get(message.key, Viewer(message.display_name))
        facts = [f"{message.platform.value} live chat", f"viewer {message.display_name}"]
        if viewer.answered:
            facts.append(f"a regular you have answered {viewer.answered} time(s)")
        else:
            facts.append("first time you answer them")
        if message.amount:
            unit = "bits" if message.platform.value == "twitch" else "KRW"
            facts.append(f"just gave {message.amount} {unit}")
        return f"[{'; '.join(facts)}; address them by name] {message.display_name}: {message.text}"

    async def answer(self, message: ChatMessage) -> Speech:
        """Reply to ``message`` aloud: brain, fast voice, overlay, stage; returns what was spoken."""
        started = self._clock.monotonic()
        session_id = await self._session()
        self._turns += 1
        turn = ConversationTurn(
            turn_id=new_id(),
            session_id=session_id,
            turn_number=self._turns,
            user_input=self.prompt_for(message),
            created_at=self._clock.now(),
        )
        emotion = Emotion.NEUTRAL
        parts: list[str] = []
        async for event in self._replies.reply(
            session_id, turn.user_input, turn_id=turn.turn_id, turn_number=turn.turn_number
        ):
            if isinstance(event, EmotionDecided):
                emotion = event.emotion
            elif isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ReplyEnded):
                emotion = event.emotion
                parts = [event.text]
        text = "".join(parts).strip()
        await self._replies.settle(session_id, turn.user_input, text, interrupted=False)
        turn.complete(text, emotion)
        turn.stage_latency_ms["llm_total"] = (self._clock.monotonic() - started) * 1000
        pcm, rate = await self._synthesize(text)
        turn.stage_latency_ms["reply_ready"] = (self._clock.monotonic() - started) * 1000
        async with self._uow() as tx:
            await tx.turns.add(turn)
            await tx.commit()
        viewer = self.viewers.setdefault(message.key, Viewer(message.display_name))
        viewer.answered += 1
        speech = Speech(
            id=len(self.speeches) + 1 if not self.speeches else self.speeches[-1].id + 1,
            turn_id=turn.turn_id,
            to_user=message.display_name,
            text=text,
            emotion=emotion,
            wav=pcm16_wav(pcm, rate),
            duration_s=len(pcm) / 2 / rate if rate else 0.0,
            at=self._clock.now(),
        )
        self.speeches.append(speech)
        self._speech_changed.set()
        self._speech_changed = asyncio.Event()
        self.overlay.add_reply(text, emotion.value, speech.at, self.config.avatar_name)
        self._metrics.replied(self._clock.monotonic() - started)
        return speech

    async def _synthesize(self, text: str) -> tuple[bytes, int]:
        if not text:
            return b"", 0
        stream = await self._tts.synthesize(
            SynthesisRequest(text=text, mode=TTSMode.FAST, language=self.config.language)
        )
        try:
            pcm = bytearray()
            async for chunk in stream.chunks():
                pcm += chunk.pcm
            return bytes(pcm), stream.sample_rate
        finally:
            await stream.aclose()

    async def _session(self) -> uuid.UUID:
        if self.session_id is None:
            session = Session.start(self._clock.now(), {"source": "live"})
            if self._owner is not None:
                session = dataclasses.replace(session, owner_id=await self._owner())
            async with self._uow() as tx:
                await tx.sessions.add(session)
                await tx.commit()
            self.session_id = session.session_id
        return self.session_id

    async def wait_speech(self, seen_id: int, within_s: float) -> bool:
        """Wait for a speech newer than ``seen_id``; False on timeout."""
        if self.speeches and self.speeches[-1].id > seen_id:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._speech_changed.wait(), within_s)
            return True
        return False

    async def _stage(self) -> None:
        while True:
            message = self.queue.pop(self._clock.monotonic())
            if message is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)  # also expires stale messages
                continue
            try:
                speech = await self.answer(message)
            except Exception:  # one failed reply must not end the show
                log.exception("live: the reply to %s failed", message.display_name)
                continue
            # One spoken reply at a time: let it play out, then the configured pause.
            await asyncio.sleep(speech.duration_s + self.config.pause_s)

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for source in self.sources:
            self._tasks.append(loop.create_task(source.run(self.on_message), name=f"live-{source.platform}"))
        self._tasks.append(loop.create_task(self._stage(), name="live-stage"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.session_id is not None:
            try:
                await self._replies.forget(self.session_id)
                async with self._uow() as tx:
                    session = await tx.sessions.get(self.session_id)
                    if session is not None:
                        session.end(self._clock.now())
                        await tx.sessions.update(session)
                        await tx.commit()
            except Exception:
                log.exception("live: closing the stage session failed")
