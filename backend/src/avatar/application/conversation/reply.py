"""One reply of a conversation, from the final transcript to the last audio chunk or a barge-in.

Two tasks run under one :class:`asyncio.TaskGroup`: thinking (the reply stream feeds the clause
chunker) and speaking (each clause is synthesized as soon as it is cut, so audio flows while the
model is still writing). The reply's life is one explicit :class:`ReplyState`; the interruption
claims its state before any await, so one barge-in reports exactly one ``interrupted``
(docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable
from typing import Protocol

from avatar.application.avatar.hub import ConversationObserver
from avatar.application.brain import EmotionDecided, ModelStarted, ReplyEnded
from avatar.application.conversation.deps import ConversationDeps
from avatar.application.conversation.events import (
    AudioChunkMsg,
    EmotionMsg,
    InterruptedMsg,
    LlmTokenMsg,
    NoticeMsg,
    Phase,
    ServerMessage,
    TurnCompletedMsg,
)
from avatar.application.conversation.metrics import ConversationMetrics
from avatar.application.conversation.playout import Clause, Playout
from avatar.application.conversation.recorder import ReplyAudio, TurnRecorder
from avatar.application.ports.llm import ChatErrorKind
from avatar.application.ports.tts import SynthesisRequest, VoiceReference
from avatar.domain.errors import AvatarError, CapacityError
from avatar.domain.models import AudioChunk, ConversationTurn, Emotion, Transcription, TTSMode

log = logging.getLogger(__name__)

#: How the end of the reply stream reaches the speaker.
_END = None


class ReplyState(enum.Enum):
    """A reply's life: thinking -> speaking -> completed | interrupted, then settled once the
    brain has been told what was heard."""

    THINKING = "thinking"
    SPEAKING = "speaking"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    SETTLED = "settled"


class ReplyHost(Protocol):
    """What a reply needs from its session: the voice choices (read when used, as the client may
    change them mid-reply), where messages go, and how problems and phases are reported."""

    session_id: uuid.UUID
    voice: str | None
    voice_profile_id: uuid.UUID | None
    language: str | None
    tts_mode: TTSMode

    @property
    def reference(self) -> VoiceReference | None: ...

    def send(self, message: ServerMessage) -> None: ...

    def set_phase(self, phase: Phase) -> None: ...

    def error(self, code: str, message: str, *, cause: BaseException | None = None) -> None: ...

    def notice(self, code: str, message: str) -> None: ...

    def observe(self, call: Callable[[ConversationObserver], None]) -> None: ...


class StageTimes:
    """A reply's stage latencies (docs/protocol.md ``latency_ms``), also observed as metrics."""

    def __init__(
        self, metrics: ConversationMetrics, t_final: float, endpoint_ms: float, asr_ms: float
    ) -> None:
        self.metrics = metrics
        self.t_final = t_final
        #: End of speech -> final transcript: the endpoint wait plus the final decode.
        self.speech_to_final_s = (endpoint_ms + asr_ms) / 1000.0
        self.ms: dict[str, float] = {"endpoint": round(endpoint_ms, 2), "asr_final": round(asr_ms, 2)}

    def mark(self, name: str, seconds: float) -> None:
        self.ms[name] = round(seconds * 1000.0, 2)
        self.metrics.observe_stage(name, seconds)

    def since_final(self, name: str, now: float) -> None:
        """``name`` happened at ``now``: its stage is the time since the final transcript (once)."""
        if name not in self.ms:
            self.mark(name, now - self.t_final)

    def first_audio(self, now: float, t_request: float) -> None:
        self.mark("tts_first_chunk", now - t_request)
        e2e = self.speech_to_final_s + (now - self.t_final)
        self.mark("e2e", e2e)
        self.metrics.observe_e2e(e2e)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.ms.items()}


class Reply:
    """One turn's reply; :meth:`start` runs it, :meth:`interrupt` stops it (once)."""

    def __init__(
        self,
        turn: ConversationTurn,
        transcription: Transcription,
        *,
        t_final: float,
        endpoint_ms: float,
        host: ReplyHost,
        deps: ConversationDeps,
        recorder: TurnRecorder,
    ) -> None:
        self.turn = turn
        self.turn_id = turn.turn_id
        self.transcription = transcription
        self.host = host
        self.deps = deps
        self.recorder = recorder
        self.state = ReplyState.THINKING
        self.emotion = Emotion.NEUTRAL
        self.emotion_sent = False
        self.text_parts: list[str] = []
        self.playout = Playout()
        self.audio = ReplyAudio(voice_profile_id=host.voice_profile_id)
        self.seq = 0
        self.stages = StageTimes(deps.metrics, t_final, endpoint_ms, transcription.latency_ms)
        self.task: asyncio.Task[None] | None = None
        self._on_critical_path = False

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if self.deps.critical_path is not None:
            self.deps.critical_path.enter()
            self._on_critical_path = True
        self.task = asyncio.create_task(self._run(), name=f"reply-{self.turn_id}")

    def _off_critical_path(self) -> None:
        """The first audio went out (or the reply ended without any): background work may run."""
        if self._on_critical_path and self.deps.critical_path is not None:
            self._on_critical_path = False
            self.deps.critical_path.leave()

    async def _run(self) -> None:
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._think(clauses))
                group.create_task(self._speak(clauses))
        finally:
            self._off_critical_path()
        if self.state in (ReplyState.THINKING, ReplyState.SPEAKING):
            self._complete()

    # --- thinking -------------------------------------------------------------------------

    async def _think(self, clauses: asyncio.Queue[str | None]) -> None:
        self.host.set_phase(Phase.THINKING)
        chunker, clock = self.deps.chunker_factory(), self.deps.clock
        events = self.deps.replies.reply(
            self.host.session_id,
            self.turn.user_input,
            turn_id=self.turn_id,
            turn_number=self.turn.turn_number,
        )
        try:
            async for event in events:
                if isinstance(event, ModelStarted):
                    self.stages.since_final("llm_ttft", clock.monotonic())
                elif isinstance(event, EmotionDecided):
                    self.emotion = event.emotion
                    self._send_emotion()
                elif isinstance(event, ReplyEnded):
                    self._ended(event)
                elif event.text:
                    if not self.text_parts:
                        # A reply the model did not start (the persona's fallback), or an engine
                        # that does not report the model's first token: the first text ends the stage.
                        self.stages.since_final("llm_ttft", clock.monotonic())
                        self._send_emotion()
                    self.text_parts.append(event.text)
                    self.host.send(LlmTokenMsg(turn_id=self.turn_id, token=event.text))
                    for clause in chunker.feed(event.text):
                        self._queue_clause(clauses, clause)
            for clause in chunker.flush():
                self._queue_clause(clauses, clause)
        except Exception as exc:
            log.warning("session %s: reply failed: %s", self.host.session_id, exc)
            known = isinstance(exc, AvatarError) and exc.code != "INTERNAL_ERROR"
            code = exc.code if isinstance(exc, AvatarError) and known else "LLM_UNAVAILABLE"
            self.host.error(code, "the reply could not be generated", cause=exc)
        finally:
            clauses.put_nowait(_END)
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def _ended(self, event: ReplyEnded) -> None:
        """The brain's last word: a fallback given because the model failed is told to the client."""
        if event.fallback and event.error is ChatErrorKind.BUSY:
            self.host.send(
                NoticeMsg(
                    code="BUSY",
                    turn_id=self.turn_id,
                    message="the language model is busy with other conversations and could not answer "
                    "in time; the persona's fallback reply was given, please say it again",
                )
            )
        elif event.fallback and event.error is not None:
            self.host.send(
                NoticeMsg(
                    code="LLM_UNAVAILABLE",
                    turn_id=self.turn_id,
                    message=f"the language model is unavailable ({event.error.value}); "
                    "the persona's fallback reply was given",
                )
            )

    def _queue_clause(self, clauses: asyncio.Queue[str | None], clause: str) -> None:
        if not clause.strip():
            return
        self.stages.since_final("first_clause", self.deps.clock.monotonic())
        clauses.put_nowait(clause)

    # --- speaking -------------------------------------------------------------------------

    async def _speak(self, clauses: asyncio.Queue[str | None]) -> None:
        failed = False
        while (text := await clauses.get()) is not _END:
            if failed:
                continue
            try:
                await self._speak_clause(text)
            except Exception as exc:
                failed = True
                if isinstance(exc, CapacityError):  # no synthesis slot in time: said, not hidden
                    self.host.send(
                        NoticeMsg(
                            code="BUSY",
                            turn_id=self.turn_id,
                            message="the voice is busy with other conversations and could not speak "
                            "the rest of this reply in time; its text is complete",
                        )
                    )
                else:
                    self.host.error("TTS_FAILED", "speech synthesis failed", cause=exc)

    async def _speak_clause(self, text: str) -> None:
        clock, host = self.deps.clock, self.host
        clause = self.playout.start_clause(text)
        request = SynthesisRequest(
            text=text,
            mode=TTSMode.FAST,
            voice=host.voice,
            language=host.language,
            reference=host.reference,
            emotion=self.emotion,
            session_id=host.session_id,
        )
        t_request = clock.monotonic()
        # The reply's first audio is on the critical path: the model writing its later sentences
        # waits until the voice has made it (docs/adr/0014-voice-latency.md, "Seventh round").
        pause = self.deps.generation_pause
        resume = pause.hold() if pause is not None and self.seq == 0 else None
        try:
            stream = await self.deps.fast_tts.synthesize(request)
        except BaseException:
            if resume is not None:
                resume()
            raise
        self.audio.engine, self.audio.voice = stream.engine, stream.voice
        if stream.notice:
            host.notice("VOICE_SUBSTITUTED", stream.notice)
        chunks = stream.chunks()
        try:
            async for chunk in chunks:
                if resume is not None:
                    resume()
                    resume = None
                self._send_audio(clause, chunk, t_request)
                # Let the connection's send loop deliver this chunk before the next one is made:
                # an engine whose stream never suspends would otherwise hold every chunk back
                # until the whole clause is synthesized.
                await asyncio.sleep(0)
            clause.complete = True
        finally:
            if resume is not None:
                resume()
            self.audio.tts_time_s += clock.monotonic() - t_request
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
            await stream.aclose()

    def _send_audio(self, clause: Clause, chunk: AudioChunk, t_request: float) -> None:
        now = self.deps.clock.monotonic()
        if self.playout.sent(clause, chunk.duration_ms, now):
            self.stages.first_audio(now, t_request)
            self._off_critical_path()
            if self.state is ReplyState.THINKING:
                self.state = ReplyState.SPEAKING
            self.host.set_phase(Phase.SPEAKING)
        self.audio.add(chunk)
        self.host.send(
            AudioChunkMsg(
                turn_id=self.turn_id,
                data=chunk.pcm,
                sr=chunk.sample_rate,
                mode=TTSMode.FAST,
                seq=self.seq,
                duration_ms=round(chunk.duration_ms, 1),
                text=clause.text,
            )
        )
        seq, turn_id = self.seq, self.turn_id
        self.host.observe(lambda o: o.reply_audio(self.host.session_id, turn_id, seq, chunk))
        self.seq += 1

    # --- the end --------------------------------------------------------------------------

    def _complete(self) -> None:
        self.state = ReplyState.COMPLETED
        text = "".join(self.text_parts).strip()
        self.turn.complete(text, self.emotion)
        self.turn.stage_latency_ms = dict(self.stages.ms)
        self.recorder.record_reply(self.turn, self.audio)
        if not text:
            self.host.send(
                NoticeMsg(
                    code="EMPTY_REPLY",
                    turn_id=self.turn_id,
                    message="the model finished without a speakable reply; please say it again",
                )
            )
        self.host.send(self._completed_message(text, interrupted=False))
        host = self.host
        if text and host.tts_mode is TTSMode.HQ and self.deps.config.hq_enabled:
            self.recorder.request_hq(
                self.turn_id, text, host.voice, host.language, self.audio.voice_profile_id, self.emotion
            )
        host.set_phase(Phase.LISTENING)

    def interruptible(self, *, explicit: bool) -> bool:
        """Whether a barge-in stops this reply: while it runs, or while its audio still plays
        (always for the client's explicit ``interrupt`` once audio was sent)."""
        if self.state in (ReplyState.INTERRUPTED, ReplyState.SETTLED):
            return False
        if self.running:
            return True
        if not self.playout.started:
            return False
        return explicit or self.playout.left_ms(self.deps.clock.monotonic()) > 0

    async def interrupt(self, heard_text: str | None, played_ms: float | None) -> None:
        """Stop the reply and report it once; the caller checked :meth:`interruptible`.

        The state is claimed before the first await, so a second barge-in arriving meanwhile (the
        server's speech detection and the client's ``interrupt`` for the same speech) finds it
        interrupted and does nothing.
        """
        self.state = ReplyState.INTERRUPTED
        self.host.observe(lambda o: o.reply_interrupted(self.host.session_id, self.turn_id))
        if self.task is not None and not self.task.done():
            self.task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=self.deps.config.barge_in_timeout_s)
            if not done:
                log.warning("session %s: reply still winding down after barge-in", self.host.session_id)
        heard = self.playout.heard_text(self.deps.clock.monotonic(), heard_text, played_ms)
        self.turn.complete(heard, self.emotion, interrupted=True)
        self.turn.stage_latency_ms = dict(self.stages.ms)
        self.host.send(InterruptedMsg(turn_id=self.turn_id, heard_text=heard))
        self.host.send(self._completed_message(heard, interrupted=True))
        self.deps.metrics.interrupted()
        self.recorder.record_reply(self.turn, self.audio)
        self.host.set_phase(Phase.LISTENING)

    async def settle(self) -> None:
        """Tell the brain what the listener heard of this reply (once)."""
        if self.state is ReplyState.SETTLED:
            return
        interrupted = self.state is ReplyState.INTERRUPTED
        self.state = ReplyState.SETTLED
        try:
            await self.deps.replies.settle(
                self.host.session_id, self.turn.user_input, self.turn.ai_response, interrupted=interrupted
            )
        except Exception:
            log.exception("session %s: could not record the reply in the history", self.host.session_id)

    # --- small helpers --------------------------------------------------------------------

    def _completed_message(self, text: str, *, interrupted: bool) -> TurnCompletedMsg:
        return TurnCompletedMsg(
            turn_id=self.turn_id,
            text=text,
            emotion=self.emotion,
            interrupted=interrupted,
            latency_ms=self.stages.rounded(),
        )

    def _send_emotion(self) -> None:
        if self.emotion_sent:
            return
        self.emotion_sent = True
        self.host.send(EmotionMsg(turn_id=self.turn_id, emotion=self.emotion))
        emotion = self.emotion
        self.host.observe(lambda o: o.reply_emotion(self.host.session_id, self.turn_id, emotion))
