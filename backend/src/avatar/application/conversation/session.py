"""One live conversation: recognition -> reply -> speech, with barge-in (docs/protocol.md).

The listener task consumes the recognition stream and routes its events; each final transcript
starts a turn whose :class:`Reply` runs in its own task. Only one reply runs at a time: speech (or
an ``interrupt``) during a reply stops it first, and reports it once. Persistence goes through a
:class:`TurnRecorder` on a :class:`BackgroundWriter`, so storage never delays audio.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from avatar.application.conversation.context import SessionContext
from avatar.application.conversation.deps import ConversationDeps
from avatar.application.conversation.events import (
    NoticeMsg,
    SpeechStartedMsg,
    TranscriptionFinalMsg,
    TranscriptionPartialMsg,
    TurnStartedMsg,
)
from avatar.application.conversation.outbox import Outbox
from avatar.application.conversation.recorder import TurnRecorder
from avatar.application.conversation.reply import Reply
from avatar.application.ports.asr import (
    RecognitionStream,
    TranscriptEvent,
    TranscriptEventKind,
)
from avatar.domain.errors import AvatarError
from avatar.domain.models import AudioChunk, ConversationTurn, Transcription, TTSMode, new_id

log = logging.getLogger(__name__)


def transcription_id_for(turn_id: uuid.UUID) -> uuid.UUID:
    """The id of a turn's transcription: derived from the turn so either finds the other."""
    return uuid.uuid5(turn_id, "transcription")


@dataclass
class _HeldInput:
    """A final transcript (or typed text) waiting for its reply to be asked for (docs/realtime.md)."""

    turn_id: uuid.UUID
    text: str
    transcription: Transcription
    pcm: bytes
    partials: list[str]
    t_final: float
    endpoint_ms: float


class ConversationSession:
    """The pipeline of one conversation; outlives a connection (reconnect) until closed."""

    def __init__(
        self,
        session_id: uuid.UUID,
        deps: ConversationDeps,
        *,
        turn_count: int = 0,
        tts_mode: TTSMode | None = None,
        voice: str | None = None,
        voice_profile_id: uuid.UUID | None = None,
        language: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.deps = deps
        cfg = deps.config
        self.outbox = Outbox(cfg.outbox_limit, on_shed=deps.metrics.audio_shed)
        self.context = SessionContext(
            session_id,
            self.outbox,
            tts_mode=tts_mode or cfg.default_tts_mode,
            voice=voice,
            voice_profile_id=voice_profile_id,
            language=language or cfg.language,
            turn_count=turn_count,
            observer=deps.observer,
        )
        self.recorder = TurnRecorder(
            session_id, deps, report=self.context.error, notice=self.context.notice, tell=self.outbox.send
        )
        self.writer = self.recorder.writer
        self._stream: RecognitionStream | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reply: Reply | None = None
        self._partials: list[str] = []
        #: The reply engine preparing the next prompt from a partial transcript (one at a time).
        self._priming: asyncio.Task[None] | None = None
        #: When the newest microphone chunk arrived (monotonic), for timing the endpoint.
        self._audio_arrived: float | None = None
        #: Stream time of the audio handed to the current recognition stream (its newest sample).
        self._pushed_ms = 0.0
        self._lock = asyncio.Lock()
        #: Whether a final transcript starts its reply at once (the web app). An OpenAI Realtime
        #: client may ask for each reply itself (``response.create``); its inputs are then held
        #: until :meth:`respond` (docs/realtime.md).
        self.auto_reply = True
        self._held: list[_HeldInput] = []
        self.closed = False
        #: Writes the resumable state (set by the session manager when there is a state store).
        self.on_state_change: Callable[[], Awaitable[None]] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._stream = await self.deps.recognizer.open_stream(language=self.context.language)
        self._pushed_ms = 0.0
        self.writer.start()
        self._listener = asyncio.create_task(self._listen(), name=f"listen-{self.session_id}")

    async def park(self) -> None:
        """The client left: give back the recognizer's stream (a slot of the ASR engine), so a
        session waiting for its reconnect costs memory only. A reply in flight, the history and
        the writes go on; events the recognizer had already produced are still handled."""
        if self.closed or self._stream is None:
            return
        stream, self._stream = self._stream, None
        await stream.aclose()  # the listener drains what is left, then ends

    async def resume(self) -> None:
        """The client is back: open a new recognition stream (after :meth:`park`)."""
        if self.closed or self._stream is not None:
            return
        self._stream = await self.deps.recognizer.open_stream(language=self.context.language)
        self._pushed_ms, self._audio_arrived = 0.0, None
        self._listener = asyncio.create_task(self._listen(), name=f"listen-{self.session_id}")

    async def aclose(self) -> None:
        """End the session: stop any reply, close recognition, settle history, flush writes."""
        if self.closed:
            return
        self.closed = True
        if self.replying:
            await self._barge_in(explicit=True)
        if self._stream is not None:
            await self._stream.aclose()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._priming is not None:
            self._priming.cancel()
            await asyncio.gather(self._priming, return_exceptions=True)
        if self._reply is not None:
            await self._reply.settle()
        await self.writer.aclose()
        self.context.observe(lambda o: o.session_closed(self.session_id))

    @property
    def replying(self) -> bool:
        return self._reply is not None and self._reply.running

    async def wait_idle(self) -> None:
        """Wait for the running reply (if any) to finish; for tests and benchmarks."""
        reply = self._reply
        if reply is not None and reply.task is not None:
            await asyncio.gather(reply.task, return_exceptions=True)

    # --- client input ---------------------------------------------------------------------

    async def push_audio(self, chunk: AudioChunk) -> None:
        if self._stream is None:
            raise AvatarError("the session is not started")
        self._audio_arrived = self.deps.clock.monotonic()
        await self._stream.push_audio(chunk)
        self._pushed_ms += chunk.duration_ms

    async def end_utterance(self) -> None:
        if self._stream is not None:
            await self._stream.end_input()

    async def interrupt(self, heard_text: str | None = None, played_ms: float | None = None) -> bool:
        """The client's stop button: returns whether a reply was interrupted."""
        return await self._barge_in(heard_text=heard_text, played_ms=played_ms, explicit=True)

    async def text_input(self, text: str, *, hold: bool = False) -> None:
        """A typed message: handled as a final transcript without audio; with ``hold`` it waits for
        :meth:`respond` (an OpenAI Realtime ``conversation.item.create``)."""
        transcription = Transcription(
            text=text.strip(), is_final=True, confidence=1.0, language=self.context.language
        )
        await self._on_final(transcription, b"", self.deps.clock.monotonic(), hold=hold)

    async def audio_input(self, transcription: Transcription, pcm16k: bytes) -> None:
        """A whole recorded utterance already transcribed (an OpenAI Realtime audio item); it is
        held for :meth:`respond` like a typed message. ``pcm16k`` is PCM16 mono at 16 kHz."""
        await self._on_final(transcription, pcm16k, self.deps.clock.monotonic(), hold=True)

    @property
    def held_inputs(self) -> int:
        """Inputs waiting for :meth:`respond`."""
        return len(self._held)

    async def respond(self) -> bool:
        """Start the reply to the held inputs (joined as one turn); ``False`` when none is held."""
        async with self._lock:
            return await self._reply_to_held()

    async def set_tts_mode(
        self, mode: TTSMode, voice: str | None = None, voice_profile_id: uuid.UUID | None = None
    ) -> None:
        await self.context.choose_voice(mode, voice, voice_profile_id, self.deps.voice_resolver)
        self.outbox.send(self.context.state_message())
        self._state_changed()

    # --- recognition events ---------------------------------------------------------------

    async def _listen(self) -> None:
        stream = self._stream
        assert stream is not None
        async for event in stream.events():
            try:
                await self._on_event(event)
            except Exception as exc:  # one bad event must not end the conversation
                log.exception("session %s: error handling %s", self.session_id, event.kind)
                self.context.error("INTERNAL_ERROR", f"could not handle {event.kind.value}", cause=exc)

    async def _on_event(self, event: TranscriptEvent) -> None:
        kind, tr = event.kind, event.transcription
        if kind is TranscriptEventKind.SPEECH_STARTED:
            self.outbox.send(SpeechStartedMsg(timestamp=event.stream_time_ms))
            await self._barge_in()
        elif kind is TranscriptEventKind.PARTIAL and tr is not None:
            if tr.text:
                self._partials.append(tr.text)
                self._prime(tr.text)
            self.outbox.send(
                TranscriptionPartialMsg(text=tr.text, confidence=tr.confidence, language=tr.language)
            )
        elif kind is TranscriptEventKind.FINAL and tr is not None:
            # Stream time from the end of speech to this result (wall time for a live client, whose
            # audio keeps arriving during the decode) minus the decode itself: the endpoint wait.
            # The end of speech is the last loud sample of the utterance (what a listener hears),
            # not where the VAD decided or where the recognizer's tail of silence ends, so the
            # stages add up to what the person waits (docs/adr/0014-voice-latency.md).
            speech_end_ms = tr.speech_end_ms if 0 < tr.speech_end_ms <= tr.audio_end_ms else tr.audio_end_ms
            # The newest audio is the newest chunk handed to the stream: the recognizer's own clock
            # stops where it decided, often inside that chunk (up to a chunk's length earlier;
            # measured 7-63 ms short with 100 ms chunks, docs/adr/0014-voice-latency.md).
            newest_ms = max(event.stream_time_ms, self._pushed_ms)
            since_speech_end = newest_ms - speech_end_ms if tr.audio_end_ms > 0 else 0.0
            if since_speech_end > 0 and self._audio_arrived is not None:
                # A live client's audio arrives as it is recorded: the newest sample is as old as
                # the time since its chunk arrived, which the stream clock does not see.
                since_speech_end += max(0.0, self.deps.clock.monotonic() - self._audio_arrived) * 1000.0
            endpoint_ms = since_speech_end - tr.latency_ms if since_speech_end > 0 else 0.0
            await self._on_final(tr, event.utterance_pcm, self.deps.clock.monotonic(), max(0.0, endpoint_ms))
        elif kind is TranscriptEventKind.ERROR and event.error_code == "NO_SPEECH":
            # Push-to-talk released with nothing said: nothing failed, the client is just told.
            self.outbox.send(NoticeMsg(code="NO_SPEECH", message=event.message or "no speech was heard"))
        elif kind is TranscriptEventKind.ERROR and event.error_code == "BUSY":
            # The recognizer was serving other conversations and this utterance got no turn in
            # time (asr.queue_timeout_s): the person is asked to say it again (docs/protocol.md).
            message = event.message or "the speech recognizer is busy; please say it again"
            self.outbox.send(NoticeMsg(code="BUSY", message=message))
        elif kind is TranscriptEventKind.ERROR:
            self.context.error(event.error_code or "ASR_FAILED", event.message or "speech recognition failed")

    def _prime(self, partial_text: str) -> None:
        """Let the reply engine prepare the next prompt while the person speaks (not while a reply
        runs, and one preparation at a time)."""
        if self.replying or (self._priming is not None and not self._priming.done()):
            return
        self._priming = asyncio.create_task(self._prime_run(partial_text), name=f"prime-{self.session_id}")

    async def _prime_run(self, partial_text: str) -> None:
        try:
            await self.deps.replies.prime(self.session_id, partial_text)
        except Exception:  # an optimization only: the reply recalls and computes its prompt anyway
            log.warning("session %s: preparing the next prompt failed", self.session_id, exc_info=True)

    async def _on_final(
        self, tr: Transcription, pcm: bytes, t_final: float, endpoint_ms: float = 0.0, *, hold: bool = False
    ) -> None:
        async with self._lock:  # one turn starts at a time
            partials, self._partials = self._partials, []
            text = tr.text.strip()
            turn_id = new_id()
            tr = replace(tr, transcription_id=transcription_id_for(turn_id))
            self.outbox.send(
                TranscriptionFinalMsg(
                    transcription_id=transcription_id_for(turn_id),
                    text=text,
                    confidence=tr.confidence,
                    language=tr.language,
                    low_confidence=tr.low_confidence,
                    latency_ms=round(tr.latency_ms, 1),
                )
            )
            if not text:
                return
            self._held.append(_HeldInput(turn_id, text, tr, pcm, partials, t_final, endpoint_ms))
            if self.auto_reply and not hold:
                await self._reply_to_held()

    async def _reply_to_held(self) -> bool:
        """Start one turn answering every held input (usually exactly one); under ``_lock``."""
        if not self._held:
            return False
        held, self._held = self._held, []
        pending = self.recorder.writer.pending
        if pending >= self.deps.config.max_pending_writes:
            # Storage is behind this conversation: a new turn would only add to the backlog. The
            # turn is not taken (nothing of it was stored yet), the person is asked to repeat it,
            # and what waits is written in order (docs/resilience.md, "Storage slower than talk").
            self.deps.metrics.task_skipped("turn")
            log.warning("session %s: %d writes still pending; a turn was not taken", self.session_id, pending)
            self.outbox.send(
                NoticeMsg(
                    code="BUSY",
                    message="the server is still saving this conversation; please say that again in a moment",
                )
            )
            return False
        first, last = held[0], held[-1]
        text = " ".join(h.text for h in held)
        tr = replace(first.transcription, text=text) if len(held) > 1 else first.transcription
        pcm = b"".join(h.pcm for h in held)
        partials = [p for h in held for p in h.partials]
        await self._barge_in()
        if self._reply is not None:
            await self._reply.settle()
        reply = self._new_reply(first.turn_id, text, tr, last.t_final, first.endpoint_ms)
        self._reply = reply
        self.recorder.record_input(reply.turn, tr, pcm, partials)
        self._state_changed()
        self.outbox.send(TurnStartedMsg(turn_id=first.turn_id, turn_number=reply.turn.turn_number))
        reply.start()
        return True

    def _new_reply(
        self, turn_id: uuid.UUID, text: str, tr: Transcription, t_final: float, endpoint_ms: float
    ) -> Reply:
        self.context.turn_count += 1
        number, now = self.context.turn_count, self.deps.clock.now()
        turn = ConversationTurn(turn_id, self.session_id, number, user_input=text, created_at=now)
        return Reply(
            turn,
            tr,
            t_final=t_final,
            endpoint_ms=endpoint_ms,
            host=self.context,
            deps=self.deps,
            recorder=self.recorder,
        )

    # --- barge-in -------------------------------------------------------------------------

    async def _barge_in(
        self, *, heard_text: str | None = None, played_ms: float | None = None, explicit: bool = False
    ) -> bool:
        """Stop the current reply if speech (or the client) interrupts it; ``True`` once per reply."""
        reply = self._reply
        if reply is None or not reply.interruptible(explicit=explicit):
            return False
        await reply.interrupt(heard_text, played_ms)
        self.outbox.discard_audio(reply.turn_id)
        return True

    # --- persistence ----------------------------------------------------------------------

    def _state_changed(self) -> None:
        hook = self.on_state_change
        if hook is not None:
            self.writer.submit("session state", hook)
