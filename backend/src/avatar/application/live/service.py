"""The live stream: chat from every configured platform in, the overlay fed, one message at a time
chosen and answered aloud by the same brain and fast voice as the conversation (docs/live.md).

Flow of one chat message (all in the platform client's task, cheap and non-blocking, so a burst of
10 messages/s or more never loses an overlay line): viewer book -> overlay -> filters -> queue.
The stage task takes the director's pick (docs/live.md, "Director console") or else the queue's
choice, asks the brain (persona, emotion, token window, summaries, memory; the viewer is named in
the prompt), synthesizes the reply with the fast voice, publishes it to the ``/stage`` pages and the
overlay, waits while it plays, pauses, and goes on.
Every message that is not answered is counted with its reason. The avatar hub is told of each
reply like a conversation's (phase, emotion, audio), so the VTube Studio bridge moves the avatar's
mouth with the live replies too (docs/avatar-control.md).
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

from avatar.application.avatar.hub import ConversationObserver
from avatar.application.brain.conversation import EmotionDecided, ReplyEnded, TextDelta
from avatar.application.conversation.ports import ReplyEngine
from avatar.application.live.inbox import Inbox, Incoming
from avatar.application.live.overlay import OverlayState
from avatar.application.live.policy import ChatFilter, FilterConfig, ReplyQueue
from avatar.application.ports.chat import ChatSource, ConnectionState
from avatar.application.ports.clock import Clock
from avatar.application.ports.storage import UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest
from avatar.domain.errors import ConflictError, NotFoundError
from avatar.domain.live import ChatMessage, DropReason, Platform
from avatar.domain.models import AudioChunk, ConversationTurn, Emotion, Session, TTSMode, new_id
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
    """One spoken reply as the ``/stage`` page plays it (``turn_id`` ``None``: a line the director
    typed, not stored as a turn)."""

    id: int
    turn_id: uuid.UUID | None
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
    #: Its client runs (the director may disconnect and connect it again).
    running: bool = False


@dataclass(frozen=True, slots=True)
class SayLine:
    """A line the director typed for the avatar to say as it is."""

    text: str
    emotion: Emotion = Emotion.NEUTRAL


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
        observer: ConversationObserver | None = None,
    ) -> None:
        self.sources = list(sources)
        #: Who owns the stage's session and turns (the streamer: the local owner, an admin).
        self._owner = owner
        #: Told of each reply's phases, emotion and audio (the avatar hub, docs/avatar-control.md).
        self._observer = observer
        self._replies = replies
        self._tts = tts
        self._uow = uow
        self._clock = clock
        self._metrics = metrics
        self.config = config
        self.overlay = overlay or OverlayState()
        self.filter = ChatFilter(config.filters)
        self.queue = ReplyQueue(config.queue_capacity, config.max_age_s, self._count_drop)
        self.inbox = Inbox()
        #: The director's picks and typed lines, spoken before the queue's choice.
        self._picks: deque[Incoming | SayLine] = deque()
        self._source_tasks: dict[Platform, asyncio.Task[None]] = {}
        self.viewers: dict[str, Viewer] = {}
        self.speeches: deque[Speech] = deque(maxlen=20)
        self.paused = False
        self.session_id: uuid.UUID | None = None
        self._turns = 0
        self._wake = asyncio.Event()
        self._speech_changed = asyncio.Event()
        self._stage_task: asyncio.Task[None] | None = None

    # --- chat in ----------------------------------------------------------------------------------

    def _count_drop(self, message: ChatMessage, reason: DropReason) -> None:
        self._metrics.dropped(reason.value)
        entry = self.inbox.of(message)
        if entry is not None:
            entry.status, entry.reason = "dropped", reason
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
        self.inbox.add(message, reason, self._clock.now())
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
        return [
            PlatformStatus(s.platform.value, s.state, s.connects, running=self._running(s.platform))
            for s in self.sources
        ]

    # --- the director (docs/live.md, "Director console") ----------------------------------------

    def _entry(self, entry_id: int) -> Incoming:
        entry = self.inbox.get(entry_id)
        if entry is None:
            raise NotFoundError(f"chat message {entry_id} is not listed (any more)")
        return entry

    def pick(self, entry_id: int) -> Incoming:
        """Answer this message next, whatever the filters or the pause said."""
        entry = self._entry(entry_id)
        if entry.status in ("picked", "answering", "answered"):
            raise ConflictError(f"chat message {entry_id} is already {entry.status}")
        self.queue.remove(entry.message)
        entry.status, entry.reason = "picked", None
        self._picks.append(entry)
        self._wake.set()
        return entry

    def skip(self, entry_id: int) -> Incoming:
        """Never answer this message (it leaves the queue or the picks)."""
        entry = self._entry(entry_id)
        if entry.status not in ("queued", "picked"):
            raise ConflictError(f"chat message {entry_id} is {entry.status}, not waiting")
        if entry in self._picks:
            self._picks.remove(entry)
        self.queue.remove(entry.message)
        self._count_drop(entry.message, DropReason.SKIPPED)
        return entry

    def say(self, line: SayLine) -> None:
        """Have the avatar say ``line`` as it is, after the reply now being spoken."""
        self._picks.append(line)
        self._wake.set()

    def _source(self, platform: Platform) -> ChatSource:
        for source in self.sources:
            if source.platform == platform:
                return source
        raise NotFoundError(f'{platform.value} is not configured (docs/live.md, "Turning it on")')

    def _running(self, platform: Platform) -> bool:
        task = self._source_tasks.get(platform)
        return task is not None and not task.done()

    def connect(self, platform: Platform) -> None:
        """Start the platform's chat client (it reconnects on its own until disconnected)."""
        source = self._source(platform)
        if not self._running(platform):
            task = asyncio.get_running_loop().create_task(
                source.run(self.on_message), name=f"live-{platform.value}"
            )
            self._source_tasks[platform] = task

    async def disconnect(self, platform: Platform) -> None:
        """Stop the platform's chat client; nothing more is read from it until ``connect``."""
        self._source(platform)
        task = self._source_tasks.pop(platform, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
        self._tell(lambda o: o.phase_changed(session_id, "thinking"))
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
        chunks, rate = await self._synthesize(text, emotion)
        turn.stage_latency_ms["reply_ready"] = (self._clock.monotonic() - started) * 1000
        async with self._uow() as tx:
            await tx.turns.add(turn)
            await tx.commit()
        viewer = self.viewers.setdefault(message.key, Viewer(message.display_name))
        viewer.answered += 1
        speech = self._publish(session_id, turn.turn_id, message.display_name, text, emotion, chunks, rate)
        self._metrics.replied(self._clock.monotonic() - started)
        return speech

    async def speak_line(self, line: SayLine) -> Speech:
        """Say the director's ``line`` as it is (no brain, not stored as a turn)."""
        session_id = await self._session()
        self._tell(lambda o: o.phase_changed(session_id, "thinking"))
        chunks, rate = await self._synthesize(line.text, line.emotion)
        return self._publish(session_id, None, "", line.text, line.emotion, chunks, rate)

    def _publish(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID | None,
        to_user: str,
        text: str,
        emotion: Emotion,
        chunks: list[AudioChunk],
        rate: int,
    ) -> Speech:
        """The reply to the stage pages, the overlay and the avatar hub (as the conversation tells
        it: emotion, speaking, each audio chunk; docs/avatar-control.md)."""
        pcm = b"".join(c.pcm for c in chunks)
        speech = Speech(
            id=len(self.speeches) + 1 if not self.speeches else self.speeches[-1].id + 1,
            turn_id=turn_id,
            to_user=to_user,
            text=text,
            emotion=emotion,
            wav=pcm16_wav(pcm, rate),
            duration_s=len(pcm) / 2 / rate if rate else 0.0,
            at=self._clock.now(),
        )
        hub_turn = turn_id or new_id()

        def tell(o: ConversationObserver) -> None:
            o.reply_emotion(session_id, hub_turn, emotion)
            o.phase_changed(session_id, "speaking")
            for seq, chunk in enumerate(chunks):
                o.reply_audio(session_id, hub_turn, seq, chunk)

        self._tell(tell)
        self.speeches.append(speech)
        self._speech_changed.set()
        self._speech_changed = asyncio.Event()
        self.overlay.add_reply(text, emotion.value, speech.at, self.config.avatar_name)
        return speech

    def _tell(self, call: Callable[[ConversationObserver], None]) -> None:
        """Report to the avatar hub; an avatar failure never stops the show."""
        if self._observer is None:
            return
        try:
            call(self._observer)
        except Exception:
            log.exception("live: the avatar observer failed")

    async def _synthesize(self, text: str, emotion: Emotion) -> tuple[list[AudioChunk], int]:
        if not text:
            return [], 0
        stream = await self._tts.synthesize(
            SynthesisRequest(text=text, mode=TTSMode.FAST, language=self.config.language, emotion=emotion)
        )
        try:
            chunks = [chunk async for chunk in stream.chunks() if chunk.pcm]
            return chunks, stream.sample_rate
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
            sid = session.session_id
            # While the show runs, the avatar (VTube Studio) follows it, not a conversation.
            self._tell(lambda o: o.hold_stage(sid))
        return self.session_id

    async def wait_speech(self, seen_id: int, within_s: float) -> bool:
        """Wait for a speech newer than ``seen_id``; False on timeout."""
        if self.speeches and self.speeches[-1].id > seen_id:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._speech_changed.wait(), within_s)
            return True
        return False

    def _next(self) -> Incoming | SayLine | None:
        """The director's next pick or line, else the queue's choice."""
        if self._picks:
            return self._picks.popleft()
        message = self.queue.pop(self._clock.monotonic())
        if message is None:
            return None
        entry = self.inbox.of(message)
        if entry is None:  # listed no more: answer it all the same
            entry = Incoming(0, message, None, "queued", self._clock.now())
        return entry

    async def _perform(self, item: Incoming | SayLine) -> Speech | None:
        if isinstance(item, SayLine):
            try:
                return await self.speak_line(item)
            except Exception:
                log.exception("live: saying the director's line failed")
                return None
        item.status = "answering"
        try:
            speech = await self.answer(item.message)
        except Exception:  # one failed reply must not end the show
            log.exception("live: the reply to %s failed", item.message.display_name)
            item.status = "failed"
            return None
        item.status, item.turn_id = "answered", speech.turn_id
        return speech

    async def _stage(self) -> None:
        while True:
            item = self._next()
            if item is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)  # also expires stale messages
                continue
            speech = await self._perform(item)
            if speech is None:
                self._listening()
                continue
            # One spoken reply at a time: let it play out, then the configured pause.
            await asyncio.sleep(speech.duration_s)
            self._listening()
            await asyncio.sleep(self.config.pause_s)

    def _listening(self) -> None:
        session_id = self.session_id
        if session_id is not None:
            self._tell(lambda o: o.phase_changed(session_id, "listening"))

    # --- life -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._stage_task is not None:
            return
        for source in self.sources:
            self.connect(source.platform)
        self._stage_task = asyncio.get_running_loop().create_task(self._stage(), name="live-stage")

    async def aclose(self) -> None:
        tasks = [*self._source_tasks.values(), *([self._stage_task] if self._stage_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._source_tasks.clear()
        self._stage_task = None
        if self.session_id is not None:
            sid = self.session_id
            self._tell(lambda o: o.hold_stage(None))
            self._tell(lambda o: o.session_closed(sid))
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
