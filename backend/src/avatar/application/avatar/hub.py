"""The avatar event hub: the conversation reports what happens (:class:`ConversationObserver`),
the hub turns it into :mod:`avatar.application.avatar.events` for every subscriber of a session
(``WS /ws/{session_id}/avatar``) and for the *stage* (the most recently active session, which the
VTube Studio bridge animates).

Nothing here may delay the reply audio: every observer method returns at once. Mouth frames are
computed by a per-session worker task from a queue, off the audio path; an interruption drops the
turn's queued audio and is published immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from avatar.application.avatar.events import (
    AvatarEvent,
    ExpressionEvent,
    HelloEvent,
    IdleEvent,
    InterruptedEvent,
    MouthEvent,
    ParameterSpec,
    StateEvent,
)
from avatar.application.avatar.mouth import FRAME_MS, MouthAnalyzer, PhonemeTiming
from avatar.application.avatar.parameters import PARAMETERS
from avatar.application.avatar.poses import PoseConfig
from avatar.domain.models import AudioChunk, Emotion

log = logging.getLogger(__name__)

State = Literal["listening", "thinking", "speaking"]
#: Interrupted turns a channel remembers (to drop their late audio): only the latest turns still
#: send audio, so a long session's barge-ins never pile up (issue 15, item 7: soak without growth).
INTERRUPTED_KEPT = 8
#: Closed sessions remembered so that their late events (a reply's last chunk, the phase going back
#: to listening after the close) do not open a channel that nothing would ever close again.
ENDED_KEPT = 4096
#: Events kept for a slow subscriber before the oldest are dropped.
SUBSCRIPTION_LIMIT = 2000


class ConversationObserver(Protocol):
    """What a conversation session reports for the avatar. Every method must return at once and
    never raise into the session (the session guards the calls anyway)."""

    def phase_changed(self, session_id: uuid.UUID, phase: str) -> None: ...

    def reply_emotion(self, session_id: uuid.UUID, turn_id: uuid.UUID, emotion: Emotion) -> None: ...

    def reply_audio(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID,
        seq: int,
        chunk: AudioChunk,
        phonemes: list[PhonemeTiming] | None = None,
    ) -> None: ...

    def reply_interrupted(self, session_id: uuid.UUID, turn_id: uuid.UUID) -> None: ...

    def session_closed(self, session_id: uuid.UUID) -> None: ...

    def hold_stage(self, session_id: uuid.UUID | None) -> None:
        """Keep the stage on ``session_id`` (the live show's session) whatever else is active;
        ``None`` lets the most recently active session take it again (docs/avatar-control.md)."""
        ...


class Subscription:
    """A bounded stream of events for one consumer (a WebSocket, the VTube Studio bridge)."""

    def __init__(self, on_close: Callable[[Subscription], None], limit: int = SUBSCRIPTION_LIMIT) -> None:
        self._queue: asyncio.Queue[AvatarEvent | None] = asyncio.Queue()
        self._limit = limit
        self._on_close = on_close
        self.dropped = 0
        self.closed = False

    def put(self, event: AvatarEvent) -> None:
        if self.closed:
            return
        if self._queue.qsize() >= self._limit:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> AvatarEvent | None:
        """The next event, or None once the subscription is closed."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(None)
            self._on_close(self)


@dataclass
class _Turn:
    analyzer: MouthAnalyzer
    offset_ms: float = 0.0


@dataclass
class _AudioItem:
    turn_id: uuid.UUID
    seq: int
    chunk: AudioChunk
    phonemes: list[PhonemeTiming] | None


@dataclass
class _Channel:
    session_id: uuid.UUID
    state: State = "listening"
    expression: ExpressionEvent | None = None
    subscribers: set[Subscription] = field(default_factory=set)
    turns: dict[uuid.UUID, _Turn] = field(default_factory=dict)
    interrupted: deque[uuid.UUID] = field(default_factory=lambda: deque(maxlen=INTERRUPTED_KEPT))
    inbox: asyncio.Queue[_AudioItem] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    idle_task: asyncio.Task[None] | None = None
    speaking: asyncio.Event = field(default_factory=asyncio.Event)
    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float = 0.0
    #: Monotonic time at which the client will have played all audio sent so far.
    playback_end: float = 0.0
    generation: int = 0


class AvatarHub:
    """Per-session avatar channels; implements :class:`ConversationObserver`."""

    def __init__(
        self, poses: PoseConfig, *, rng: random.Random | None = None, frame_ms: float = FRAME_MS
    ) -> None:
        self.poses = poses
        self.frame_ms = frame_ms
        self._rng = rng or random.Random()
        self._channels: dict[uuid.UUID, _Channel] = {}
        self._stage_subscribers: set[Subscription] = set()
        self.stage_id: uuid.UUID | None = None
        #: The live show's session while it runs: the stage stays there (``hold_stage``).
        self.held_stage: uuid.UUID | None = None
        self._closed = False
        self._ended: OrderedDict[uuid.UUID, None] = OrderedDict()

    # --- subscribers ------------------------------------------------------------------------

    def subscribe(self, session_id: uuid.UUID) -> Subscription:
        """Events of one session, starting with its ``hello`` (and current expression)."""
        self._ended.pop(session_id, None)  # watched again: its events count again
        channel = self._channel(session_id)

        def remove(sub: Subscription) -> None:
            channel.subscribers.discard(sub)

        sub = Subscription(remove)
        channel.subscribers.add(sub)
        self._greet(channel, sub)
        if self.stage_id is None or self.stage_id not in self._channels:
            # Nothing is on stage yet: a watched session takes it at once, so the stage (the
            # VTube Studio bridge, the overlay) idles with it before its first reply.
            self._make_stage(channel)
        self._ensure_idle(channel)
        return sub

    def subscribe_stage(self) -> Subscription:
        """Events of whichever session is the stage (most recently active) at the time."""
        sub = Subscription(self._stage_subscribers.discard)
        self._stage_subscribers.add(sub)
        if self.stage_id is not None:
            channel = self._channel(self.stage_id)
            self._greet(channel, sub)
            self._ensure_idle(channel)
        return sub

    def hello(self, session_id: uuid.UUID) -> HelloEvent:
        channel = self._channels.get(session_id)
        return HelloEvent(
            session_id=str(session_id),
            state=channel.state if channel else "listening",
            frame_ms=self.frame_ms,
            parameters=[
                ParameterSpec(name=p.name, min=p.min, max=p.max, default=p.default, explanation=p.explanation)
                for p in PARAMETERS.values()
            ],
        )

    async def aclose(self) -> None:
        self._closed = True
        for channel in list(self._channels.values()):
            await self._close_channel(channel)
        for sub in list(self._stage_subscribers):
            sub.close()

    # --- ConversationObserver ---------------------------------------------------------------

    def phase_changed(self, session_id: uuid.UUID, phase: str) -> None:
        if phase not in ("listening", "thinking", "speaking"):
            return
        if phase == "thinking":
            self._ended.pop(session_id, None)  # a new turn: the session is live again
        channel = self._open_channel(session_id)
        if channel is None:
            return
        state: State = "listening"
        if phase == "speaking" or phase == "thinking":
            state = "speaking" if phase == "speaking" else "thinking"
        channel.state = state
        if state == "speaking":
            self._set_speaking(channel, True)
        else:
            # The client is still playing what was sent: idle motion resumes when that ends.
            left_s = channel.playback_end - time.monotonic()
            if left_s > 0:
                generation = channel.generation
                asyncio.get_running_loop().call_later(
                    left_s, lambda: channel.generation == generation and self._set_speaking(channel, False)
                )
            else:
                self._set_speaking(channel, False)
        if state != "listening":
            self._make_stage(channel)
        self._publish(channel, StateEvent(session_id=str(session_id), state=state, t_ms=time.time() * 1000.0))

    def reply_emotion(self, session_id: uuid.UUID, turn_id: uuid.UUID, emotion: Emotion) -> None:
        channel = self._open_channel(session_id)
        if channel is None:
            return
        pose = self.poses.pose(emotion)
        values = {name: spec.default for name, spec in PARAMETERS.items() if name in _EXPRESSION_PARAMS}
        values.update(pose.parameters)
        event = ExpressionEvent(
            turn_id=str(turn_id),
            emotion=emotion.value,
            parameters=values,
            transition_ms=round(pose.transition_s * 1000.0, 1),
            hotkey=pose.hotkey,
        )
        channel.expression = event
        self._make_stage(channel)
        self._publish(channel, event)

    def reply_audio(
        self,
        session_id: uuid.UUID,
        turn_id: uuid.UUID,
        seq: int,
        chunk: AudioChunk,
        phonemes: list[PhonemeTiming] | None = None,
    ) -> None:
        channel = self._open_channel(session_id)
        if channel is None or turn_id in channel.interrupted:
            return
        if phonemes is None and chunk.phonemes:
            phonemes = [PhonemeTiming(p.phoneme, p.start_ms, p.end_ms) for p in chunk.phonemes]
        # Real-time playback from the first chunk on (what the client's player does).
        now = time.monotonic()
        channel.playback_end = max(channel.playback_end, now) + chunk.duration_ms / 1000.0
        if not self._listened(channel) and channel.inbox.empty():
            # Nobody renders this session: keep the turn's clock, skip the per-chunk mouth
            # analysis and its task (docs/benchmarks.md, "load": a cost of every reply chunk).
            self._turn(channel, turn_id).offset_ms += chunk.duration_ms
            return
        channel.inbox.put_nowait(_AudioItem(turn_id, seq, chunk, phonemes))
        if channel.worker is None or channel.worker.done():
            channel.worker = asyncio.get_running_loop().create_task(
                self._work(channel), name=f"avatar-mouth-{session_id}"
            )

    def reply_interrupted(self, session_id: uuid.UUID, turn_id: uuid.UUID) -> None:
        channel = self._open_channel(session_id)
        if channel is None or turn_id in channel.interrupted:
            return
        channel.interrupted.append(turn_id)
        channel.playback_end = 0.0
        self._set_speaking(channel, False)
        channel.turns.pop(turn_id, None)
        kept = []
        while not channel.inbox.empty():
            item = channel.inbox.get_nowait()
            if item.turn_id != turn_id:
                kept.append(item)
        for item in kept:
            channel.inbox.put_nowait(item)
        self._publish(channel, InterruptedEvent(turn_id=str(turn_id)))

    def hold_stage(self, session_id: uuid.UUID | None) -> None:
        self.held_stage = session_id
        if session_id is not None:
            self._ended.pop(session_id, None)
            self._make_stage(self._channel(session_id))

    def session_closed(self, session_id: uuid.UUID) -> None:
        if self.held_stage == session_id:
            self.held_stage = None
        self._ended[session_id] = None
        self._ended.move_to_end(session_id)
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        channel = self._channels.get(session_id)
        if channel is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._close_channel(channel))

    # --- internals --------------------------------------------------------------------------

    def _open_channel(self, session_id: uuid.UUID) -> _Channel | None:
        """The channel of a session's event; ``None`` for a late event of a closed session."""
        channel = self._channels.get(session_id)
        if channel is None and session_id in self._ended:
            return None
        return channel or self._channel(session_id)

    def _channel(self, session_id: uuid.UUID) -> _Channel:
        channel = self._channels.get(session_id)
        if channel is None:
            channel = _Channel(session_id)
            self._channels[session_id] = channel
        return channel

    @staticmethod
    def _set_speaking(channel: _Channel, speaking: bool) -> None:
        channel.generation += 1
        if speaking:
            channel.speaking.set()
            channel.quiet.clear()
        else:
            channel.speaking.clear()
            channel.quiet.set()

    def _greet(self, channel: _Channel, sub: Subscription) -> None:
        sub.put(self.hello(channel.session_id))
        if channel.expression is not None:
            sub.put(channel.expression)

    def _make_stage(self, channel: _Channel) -> None:
        channel.last_active = time.monotonic()
        if self.held_stage is not None and self.held_stage != channel.session_id:
            return  # the live show keeps the stage while it runs
        if self.stage_id != channel.session_id:
            self.stage_id = channel.session_id
            for sub in list(self._stage_subscribers):
                self._greet(channel, sub)
            if self._stage_subscribers:
                self._ensure_idle(channel)

    def _publish(self, channel: _Channel, event: AvatarEvent) -> None:
        for sub in list(channel.subscribers):
            sub.put(event)
        if self.stage_id == channel.session_id:
            for sub in list(self._stage_subscribers):
                sub.put(event)

    def _listened(self, channel: _Channel) -> bool:
        return bool(channel.subscribers) or (
            self.stage_id == channel.session_id and bool(self._stage_subscribers)
        )

    def _turn(self, channel: _Channel, turn_id: uuid.UUID) -> _Turn:
        turn = channel.turns.get(turn_id)
        if turn is None:
            turn = channel.turns[turn_id] = _Turn(MouthAnalyzer(self.frame_ms))
            # Keep only the latest turns' state: older turns are finished.
            for old in list(channel.turns)[:-2]:
                channel.turns.pop(old, None)
        return turn

    async def _work(self, channel: _Channel) -> None:
        while not channel.inbox.empty():
            item = channel.inbox.get_nowait()
            if item.turn_id in channel.interrupted:
                continue
            turn = self._turn(channel, item.turn_id)
            chunk = item.chunk
            frames = turn.analyzer.frames(chunk.pcm, chunk.sample_rate, item.phonemes)
            event = MouthEvent(
                turn_id=str(item.turn_id),
                seq=item.seq,
                chunk_offset_ms=round(turn.offset_ms, 1),
                duration_ms=round(chunk.duration_ms, 1),
                frame_ms=self.frame_ms,
                source="phonemes" if item.phonemes else "level",
                frames=frames,
            )
            turn.offset_ms += chunk.duration_ms
            self._publish(channel, event)
            await asyncio.sleep(0)  # let the audio path run between chunks

    def _ensure_idle(self, channel: _Channel) -> None:
        if self._closed or (channel.idle_task is not None and not channel.idle_task.done()):
            return
        with contextlib.suppress(RuntimeError):
            channel.idle_task = asyncio.get_running_loop().create_task(
                self._idle(channel), name=f"avatar-idle-{channel.session_id}"
            )

    async def _idle(self, channel: _Channel) -> None:
        """Random head/gaze targets while not speaking; a stepwise return to centre when speech
        starts (docs/avatar-control.md, "idle")."""
        cfg = self.poses.idle
        rng = self._rng
        current = {"AvatarHeadX": 0.0, "AvatarHeadY": 0.0, "AvatarEyeX": 0.0, "AvatarEyeY": 0.0}
        while self._listened(channel):
            if channel.speaking.is_set():
                if any(abs(v) > 1e-6 for v in current.values()):
                    start = dict(current)
                    for step in range(1, cfg.return_steps + 1):
                        factor = 1.0 - step / cfg.return_steps
                        current = {k: round(v * factor, 3) for k, v in start.items()}
                        event = IdleEvent(
                            active=False, parameters=dict(current), transition_ms=cfg.return_step_s * 1000
                        )
                        self._publish(channel, event)
                        await asyncio.sleep(cfg.return_step_s)
                # Re-check the listeners every second while the avatar speaks.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.quiet.wait(), 1.0)
                continue
            current = {
                "AvatarHeadX": round(rng.uniform(-cfg.head_range_deg, cfg.head_range_deg), 2),
                "AvatarHeadY": round(rng.uniform(-cfg.head_range_deg, cfg.head_range_deg) / 2, 2),
                "AvatarEyeX": round(rng.uniform(-cfg.eye_range, cfg.eye_range), 3),
                "AvatarEyeY": round(rng.uniform(-cfg.eye_range, cfg.eye_range) / 2, 3),
            }
            event = IdleEvent(active=True, parameters=dict(current), transition_ms=cfg.transition_s * 1000)
            self._publish(channel, event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.speaking.wait(), rng.uniform(*cfg.interval_s))

    async def _close_channel(self, channel: _Channel) -> None:
        self._channels.pop(channel.session_id, None)
        for task in (channel.worker, channel.idle_task):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for sub in list(channel.subscribers):
            sub.close()
        if self.stage_id == channel.session_id:
            self.stage_id = None


#: Parameters an expression always sets (to the pose's value or back to the default).
_EXPRESSION_PARAMS = (
    "AvatarSmile",
    "AvatarBrows",
    "AvatarEyeOpen",
    "AvatarHeadX",
    "AvatarHeadY",
    "AvatarHeadZ",
)
