"""One live conversation: recognition -> reply stream -> clause chunker -> fast TTS, with barge-in.

The listener task consumes the recognition stream; each final transcript starts a turn whose
reply runs in its own task (thinking: the reply stream feeds the chunker; speaking: a second task
synthesizes each clause as soon as it is cut, so audio flows while the model is still writing).
Only one reply runs at a time: speech (or an ``interrupt``) during a reply cancels it first.
Persistence goes through a :class:`BackgroundWriter` so storage never delays audio.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from avatar.application.avatar.hub import ConversationObserver
from avatar.application.conversation.metrics import ConversationMetrics
from avatar.application.conversation.ports import (
    ReplyEmotion,
    ReplyEngine,
    TextChunker,
    VoiceResolver,
)
from avatar.application.conversation.writer import BackgroundWriter
from avatar.application.ports.asr import (
    RecognitionStream,
    SpeechRecognizer,
    TranscriptEvent,
    TranscriptEventKind,
)
from avatar.application.ports.clock import Clock
from avatar.application.ports.queue import TaskQueue
from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.application.ports.tts import SpeechSynthesizer, SynthesisRequest, VoiceReference
from avatar.domain.errors import AvatarError
from avatar.domain.models import (
    AudioChunk,
    ConversationTurn,
    Emotion,
    SynthesizedAudio,
    Transcription,
    TTSMode,
    new_id,
)
from avatar.domain.storage_keys import raw_input_key, synthesized_key
from avatar.domain.wav import pcm16_wav

log = logging.getLogger(__name__)

Message = dict[str, Any]

PROSODY_TOPIC = "prosody.analyze"
HQ_TOPIC = "tts.hq"
#: Sample rate of ``TranscriptEvent.utterance_pcm`` (the recognizer's contract).
ASR_SAMPLE_RATE = 16000


def transcription_id_for(turn_id: uuid.UUID) -> uuid.UUID:
    """The id of a turn's transcription: derived from the turn so either finds the other."""
    return uuid.uuid5(turn_id, "transcription")


class Phase(enum.StrEnum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass
class ConversationConfig:
    """Per-deployment knobs of the pipeline (from ``Settings``)."""

    language: str | None = None
    default_tts_mode: TTSMode = TTSMode.FAST
    hq_enabled: bool = True
    write_retries: int = 3
    write_backoff_s: float = 0.2
    #: How long barge-in waits for the reply task to wind down before acknowledging anyway.
    barge_in_timeout_s: float = 0.2
    #: Messages kept for a disconnected client (audio is never kept: it would play late).
    outbox_limit: int = 500


@dataclass
class ConversationDeps:
    """Adapters a session uses (shared by every session of a process)."""

    recognizer: SpeechRecognizer
    replies: ReplyEngine
    fast_tts: SpeechSynthesizer
    clock: Clock
    object_store: ObjectStore
    queue: TaskQueue
    uow: UnitOfWorkFactory
    metrics: ConversationMetrics
    chunker_factory: Callable[[], TextChunker]
    config: ConversationConfig = field(default_factory=ConversationConfig)
    voice_resolver: VoiceResolver | None = None
    #: Avatar hook (docs/avatar-control.md): told of phases, emotion, reply audio, barge-in.
    observer: ConversationObserver | None = None


class Outbox:
    """Server -> client messages of one session, consumed by whichever connection is attached.

    While no client is attached, control messages are kept (bounded) for the reconnecting client;
    audio is dropped because it would play out of time (the HQ file covers the turn).
    """

    def __init__(self, limit: int = 500) -> None:
        self._items: collections.deque[Message] = collections.deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.attached = False
        self.dropped = 0

    def send(self, message: Message) -> None:
        if not self.attached and message.get("type") == "audio_chunk":
            return
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def discard_audio(self, turn_id: uuid.UUID) -> int:
        """Remove not-yet-delivered audio of a turn (barge-in: playback must stop)."""
        key = str(turn_id)
        kept = [m for m in self._items if not (m.get("type") == "audio_chunk" and m.get("turn_id") == key)]
        removed = len(self._items) - len(kept)
        self._items = collections.deque(kept)
        return removed

    async def get(self) -> Message:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Clause:
    text: str
    duration_ms: float = 0.0
    complete: bool = False


@dataclass
class _Reply:
    turn: ConversationTurn
    transcription: Transcription
    t_final: float
    #: End of speech -> final transcript: the endpoint wait plus the final decode.
    asr_ms: float
    emotion: Emotion = Emotion.NEUTRAL
    emotion_sent: bool = False
    text_parts: list[str] = field(default_factory=list)
    clauses: list[_Clause] = field(default_factory=list)
    pcm: bytearray = field(default_factory=bytearray)
    sample_rate: int | None = None
    seq: int = 0
    first_audio_at: float | None = None
    audio_ms: float = 0.0
    tts_time_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    finished: bool = False
    interrupted: bool = False
    settled: bool = False
    fast_stored: bool = False
    voice_profile_id: uuid.UUID | None = None
    engine: str = ""
    voice: str = ""

    @property
    def turn_key(self) -> str:
        return str(self.turn.turn_id)


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
        self.tts_mode = tts_mode or cfg.default_tts_mode
        self.voice = voice
        self.voice_profile_id = voice_profile_id
        self.language = language or cfg.language
        self.turn_count = turn_count
        self.phase = Phase.LISTENING
        self.outbox = Outbox(cfg.outbox_limit)
        self.writer = BackgroundWriter(
            retries=cfg.write_retries,
            backoff_s=cfg.write_backoff_s,
            on_failure=self._write_failed,
            name=f"writer-{session_id}",
        )
        self._stream: RecognitionStream | None = None
        self._listener: asyncio.Task[None] | None = None
        self._reply: _Reply | None = None
        self._partials: list[str] = []
        self._reference: VoiceReference | None = None
        self._notices_sent: set[str] = set()
        self._lock = asyncio.Lock()
        self.closed = False
        #: Writes the resumable state (set by the session manager when there is a state store).
        self.on_state_change: Callable[[], Awaitable[None]] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._stream = await self.deps.recognizer.open_stream(language=self.language)
        self.writer.start()
        self._listener = asyncio.create_task(self._listen(), name=f"listen-{self.session_id}")

    async def aclose(self) -> None:
        """End the session: stop any reply, close recognition, settle history, flush writes."""
        if self.closed:
            return
        self.closed = True
        reply = self._reply
        if reply is not None and reply.task is not None and not reply.task.done():
            await self._barge_in(explicit=True)
        if self._stream is not None:
            await self._stream.aclose()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._reply is not None:
            await self._settle(self._reply)
        await self.writer.aclose()
        self._observe(lambda o: o.session_closed(self.session_id))

    # --- client input ---------------------------------------------------------------------

    async def push_audio(self, chunk: AudioChunk) -> None:
        if self._stream is None:
            raise AvatarError("the session is not started")
        await self._stream.push_audio(chunk)

    async def end_utterance(self) -> None:
        if self._stream is not None:
            await self._stream.end_input()

    async def interrupt(self, heard_text: str | None = None, played_ms: float | None = None) -> bool:
        """The client's stop button: returns whether a reply was interrupted."""
        return await self._barge_in(heard_text=heard_text, played_ms=played_ms, explicit=True)

    async def text_input(self, text: str) -> None:
        """A typed message: handled as a final transcript without audio."""
        transcription = Transcription(
            text=text.strip(), is_final=True, confidence=1.0, language=self.language
        )
        await self._on_final(transcription, b"", self.deps.clock.monotonic())

    async def set_tts_mode(
        self, mode: TTSMode, voice: str | None = None, voice_profile_id: uuid.UUID | None = None
    ) -> None:
        self.tts_mode = mode
        if voice is not None:
            self.voice = voice or None
        if voice_profile_id != self.voice_profile_id:
            self.voice_profile_id = voice_profile_id
            self._reference = None
            if voice_profile_id is not None and self.deps.voice_resolver is not None:
                self._reference = await self.deps.voice_resolver(voice_profile_id)
                if self._reference is None:
                    self.voice_profile_id = None
                    self._error(
                        "VOICE_PROFILE_NOT_FOUND",
                        f"voice profile {voice_profile_id} does not exist; the default voice is used",
                    )
        self.outbox.send(self.state_message())
        self._state_changed()

    def state_message(self, *, resumed: bool = False) -> Message:
        return {
            "type": "session_state",
            "session_id": str(self.session_id),
            "state": self.phase.value,
            "resumed": resumed,
            "turns": self.turn_count,
            "tts_mode": self.tts_mode.value,
            "voice": self.voice,
            "voice_profile_id": str(self.voice_profile_id) if self.voice_profile_id else None,
        }

    def snapshot(self) -> dict[str, str]:
        """What another replica needs to resume this session beyond the client's voice choices
        (``ResumableSession.extra``)."""
        return {"turn_count": str(self.turn_count), "language": self.language or ""}

    @property
    def replying(self) -> bool:
        reply = self._reply
        return reply is not None and reply.task is not None and not reply.task.done()

    async def wait_idle(self) -> None:
        """Wait for the running reply (if any) to finish; for tests and benchmarks."""
        reply = self._reply
        if reply is not None and reply.task is not None:
            await asyncio.gather(reply.task, return_exceptions=True)

    # --- recognition events ---------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._stream is not None
        async for event in self._stream.events():
            try:
                await self._on_event(event)
            except Exception as exc:  # one bad event must not end the conversation
                log.exception("session %s: error handling %s", self.session_id, event.kind)
                self._error("INTERNAL_ERROR", f"could not handle {event.kind.value}: {exc}")

    async def _on_event(self, event: TranscriptEvent) -> None:
        kind = event.kind
        if kind is TranscriptEventKind.SPEECH_STARTED:
            self.outbox.send({"type": "speech_started", "timestamp": event.stream_time_ms})
            await self._barge_in()
        elif kind is TranscriptEventKind.PARTIAL and event.transcription is not None:
            tr = event.transcription
            if tr.text:
                self._partials.append(tr.text)
            self.outbox.send(
                {
                    "type": "transcription_partial",
                    "text": tr.text,
                    "confidence": tr.confidence,
                    "is_final": False,
                    "language": tr.language,
                }
            )
        elif kind is TranscriptEventKind.FINAL and event.transcription is not None:
            tr = event.transcription
            # Stream time from the end of speech to this result (wall time for a live client, whose
            # audio keeps arriving during the decode) minus the decode itself: the endpoint wait.
            since_speech_end = event.stream_time_ms - tr.audio_end_ms if tr.audio_end_ms > 0 else 0.0
            endpoint_ms = since_speech_end - tr.latency_ms if since_speech_end > 0 else 0.0
            await self._on_final(
                tr, event.utterance_pcm, self.deps.clock.monotonic(), endpoint_ms=max(0.0, endpoint_ms)
            )
        elif kind is TranscriptEventKind.ERROR and event.error_code == "NO_SPEECH":
            # Push-to-talk released with nothing said: nothing failed, the client is just told.
            self.outbox.send(
                {"type": "notice", "code": "NO_SPEECH", "message": event.message or "no speech was heard"}
            )
        elif kind is TranscriptEventKind.ERROR:
            self._error(event.error_code or "ASR_FAILED", event.message or "speech recognition failed")

    async def _on_final(
        self, transcription: Transcription, pcm: bytes, t_final: float, *, endpoint_ms: float = 0.0
    ) -> None:
        async with self._lock:  # one turn starts at a time
            partials, self._partials = self._partials, []
            text = transcription.text.strip()
            turn_id = new_id()
            transcription = replace(transcription, transcription_id=transcription_id_for(turn_id))
            self.outbox.send(
                {
                    "type": "transcription_final",
                    "transcription_id": str(transcription.transcription_id),
                    "text": text,
                    "confidence": transcription.confidence,
                    "is_final": True,
                    "language": transcription.language,
                    "low_confidence": transcription.low_confidence,
                    "latency_ms": round(transcription.latency_ms, 1),
                }
            )
            if not text:
                return
            await self._barge_in()
            previous = self._reply
            if previous is not None:
                await self._settle(previous)
            self.turn_count += 1
            turn = ConversationTurn(
                turn_id=turn_id,
                session_id=self.session_id,
                turn_number=self.turn_count,
                user_input=text,
                created_at=self.deps.clock.now(),
            )
            reply = _Reply(
                turn=turn,
                transcription=transcription,
                t_final=t_final,
                asr_ms=endpoint_ms + transcription.latency_ms,
                voice_profile_id=self.voice_profile_id,
            )
            reply.stages["endpoint"] = round(endpoint_ms, 2)
            reply.stages["asr_final"] = round(transcription.latency_ms, 2)
            self._reply = reply
            self._persist_input(reply, pcm, partials)
            self._state_changed()
            self.outbox.send(
                {"type": "turn_started", "turn_id": reply.turn_key, "turn_number": turn.turn_number}
            )
            reply.task = asyncio.create_task(self._run_reply(reply), name=f"reply-{turn_id}")

    # --- the reply ------------------------------------------------------------------------

    async def _run_reply(self, reply: _Reply) -> None:
        clauses: asyncio.Queue[str | None] = asyncio.Queue()
        speaker = asyncio.create_task(self._speak(reply, clauses))
        try:
            await self._think(reply, clauses)
            await speaker
        except asyncio.CancelledError:
            speaker.cancel()
            await asyncio.gather(speaker, return_exceptions=True)
            raise
        self._complete(reply)

    async def _think(self, reply: _Reply, clauses: asyncio.Queue[str | None]) -> None:
        self._set_phase(Phase.THINKING)
        chunker = self.deps.chunker_factory()
        clock = self.deps.clock
        events = self.deps.replies.reply(
            self.session_id,
            reply.turn.user_input,
            turn_id=reply.turn.turn_id,
            turn_number=reply.turn.turn_number,
        )
        try:
            async for event in events:
                if isinstance(event, ReplyEmotion):
                    reply.emotion = event.emotion
                    self._send_emotion(reply)
                    continue
                if not event.text:
                    continue
                if not reply.text_parts:
                    self._stage(reply, "llm_ttft", clock.monotonic() - reply.t_final)
                    self._send_emotion(reply)
                reply.text_parts.append(event.text)
                self.outbox.send({"type": "llm_token", "turn_id": reply.turn_key, "token": event.text})
                for clause in chunker.feed(event.text):
                    self._queue_clause(reply, clauses, clause)
            for clause in chunker.flush():
                self._queue_clause(reply, clauses, clause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("session %s: reply failed: %s", self.session_id, exc)
            known = isinstance(exc, AvatarError) and exc.code != "INTERNAL_ERROR"
            code = exc.code if isinstance(exc, AvatarError) and known else "LLM_UNAVAILABLE"
            self._error(code, f"the reply could not be generated: {exc}")
        finally:
            clauses.put_nowait(None)
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    def _queue_clause(self, reply: _Reply, clauses: asyncio.Queue[str | None], clause: str) -> None:
        if not clause.strip():
            return
        if "first_clause" not in reply.stages:
            self._stage(reply, "first_clause", self.deps.clock.monotonic() - reply.t_final)
        clauses.put_nowait(clause)

    async def _speak(self, reply: _Reply, clauses: asyncio.Queue[str | None]) -> None:
        clock = self.deps.clock
        failed = False
        while (text := await clauses.get()) is not None:
            if failed:
                continue
            clause = _Clause(text)
            reply.clauses.append(clause)
            request = SynthesisRequest(
                text=text,
                mode=TTSMode.FAST,
                voice=self.voice,
                language=self.language,
                reference=self._reference,
                emotion=reply.emotion,
            )
            t_request = clock.monotonic()
            try:
                stream = await self.deps.fast_tts.synthesize(request)
            except Exception as exc:
                failed = True
                self._error("TTS_FAILED", f"speech synthesis failed: {exc}")
                continue
            reply.engine, reply.voice = stream.engine, stream.voice
            if stream.notice:
                self._notice("VOICE_SUBSTITUTED", stream.notice)
            chunks = stream.chunks()
            try:
                async for chunk in chunks:
                    self._send_audio(reply, clause, chunk, t_request)
                    # Let the connection's send loop deliver this chunk before the next one is made:
                    # an engine whose stream never suspends would otherwise hold every chunk back
                    # until the whole clause is synthesized.
                    await asyncio.sleep(0)
                clause.complete = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self._error("TTS_FAILED", f"speech synthesis failed: {exc}")
            finally:
                reply.tts_time_s += clock.monotonic() - t_request
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
                await stream.aclose()

    def _send_audio(self, reply: _Reply, clause: _Clause, chunk: AudioChunk, t_request: float) -> None:
        now = self.deps.clock.monotonic()
        if reply.first_audio_at is None:
            reply.first_audio_at = now
            self._stage(reply, "tts_first_chunk", now - t_request)
            e2e_s = reply.asr_ms / 1000.0 + (now - reply.t_final)
            self._stage(reply, "e2e", e2e_s, e2e=True)
            self._set_phase(Phase.SPEAKING)
        if reply.sample_rate is None:
            reply.sample_rate = chunk.sample_rate
        if chunk.sample_rate == reply.sample_rate:
            reply.pcm += chunk.pcm
        clause.duration_ms += chunk.duration_ms
        reply.audio_ms += chunk.duration_ms
        self.outbox.send(
            {
                "type": "audio_chunk",
                "turn_id": reply.turn_key,
                "pcm": chunk.pcm,
                "sr": chunk.sample_rate,
                "mode": TTSMode.FAST.value,
                "seq": reply.seq,
                "duration_ms": round(chunk.duration_ms, 1),
                "text": clause.text,
            }
        )
        seq = reply.seq
        self._observe(lambda o: o.reply_audio(self.session_id, reply.turn.turn_id, seq, chunk))
        reply.seq += 1

    def _complete(self, reply: _Reply) -> None:
        reply.finished = True
        text = "".join(reply.text_parts).strip()
        reply.turn.complete(text, reply.emotion)
        reply.turn.stage_latency_ms = dict(reply.stages)
        self._persist_reply(reply)
        if not text:
            self.outbox.send(
                {
                    "type": "notice",
                    "code": "EMPTY_REPLY",
                    "turn_id": reply.turn_key,
                    "message": "the model finished without a speakable reply; please say it again",
                }
            )
        self.outbox.send(
            {
                "type": "turn_completed",
                "turn_id": reply.turn_key,
                "text": text,
                "emotion": reply.emotion.value,
                "interrupted": False,
                "latency_ms": {k: round(v, 1) for k, v in reply.stages.items()},
            }
        )
        if text and self.tts_mode is TTSMode.HQ and self.deps.config.hq_enabled:
            payload = {
                "session_id": str(self.session_id),
                "turn_id": reply.turn_key,
                "text": text,
                "voice": self.voice,
                "language": self.language,
                "voice_profile_id": str(reply.voice_profile_id) if reply.voice_profile_id else None,
                "emotion": reply.emotion.value,
            }
            self.writer.submit("queue the HQ synthesis", lambda: self._publish(HQ_TOPIC, payload))
        self._set_phase(Phase.LISTENING)

    # --- barge-in -------------------------------------------------------------------------

    async def _barge_in(
        self, *, heard_text: str | None = None, played_ms: float | None = None, explicit: bool = False
    ) -> bool:
        reply = self._reply
        if reply is None or reply.settled or reply.interrupted:
            return False
        running = reply.task is not None and not reply.task.done()
        if not running and not explicit and self._playback_left_ms(reply) <= 0:
            return False
        if not running and reply.first_audio_at is None:
            return False
        self._observe(lambda o: o.reply_interrupted(self.session_id, reply.turn.turn_id))
        if running and reply.task is not None:
            reply.task.cancel()
            done, _ = await asyncio.wait({reply.task}, timeout=self.deps.config.barge_in_timeout_s)
            if not done:
                log.warning("session %s: reply still winding down after barge-in", self.session_id)
        self.outbox.discard_audio(reply.turn.turn_id)
        heard = self._heard_text(reply, heard_text, played_ms)
        reply.interrupted = True
        reply.turn.complete(heard, reply.emotion, interrupted=True)
        reply.turn.stage_latency_ms = dict(reply.stages)
        self.outbox.send({"type": "interrupted", "turn_id": reply.turn_key, "heard_text": heard})
        self.outbox.send(
            {
                "type": "turn_completed",
                "turn_id": reply.turn_key,
                "text": heard,
                "emotion": reply.emotion.value,
                "interrupted": True,
                "latency_ms": {k: round(v, 1) for k, v in reply.stages.items()},
            }
        )
        self.deps.metrics.interrupted()
        self._persist_reply(reply)
        self._set_phase(Phase.LISTENING)
        return True

    def _playback_left_ms(self, reply: _Reply) -> float:
        if reply.first_audio_at is None:
            return 0.0
        elapsed_ms = (self.deps.clock.monotonic() - reply.first_audio_at) * 1000.0
        return reply.audio_ms - elapsed_ms

    def _heard_text(self, reply: _Reply, heard_text: str | None, played_ms: float | None) -> str:
        if heard_text is not None:
            return heard_text.strip()
        if played_ms is None:
            # Without the client's word, assume real-time playback since the first chunk, but
            # never more than what was fully sent.
            if reply.first_audio_at is None:
                return ""
            played_ms = (self.deps.clock.monotonic() - reply.first_audio_at) * 1000.0
        heard: list[str] = []
        position = 0.0
        for clause in reply.clauses:
            position += clause.duration_ms
            if not clause.complete or position > played_ms + 1.0:
                break
            heard.append(clause.text.strip())
        return " ".join(heard)

    async def _settle(self, reply: _Reply) -> None:
        if reply.settled:
            return
        reply.settled = True
        try:
            await self.deps.replies.settle(
                self.session_id, reply.turn.user_input, reply.turn.ai_response, interrupted=reply.interrupted
            )
        except Exception:
            log.exception("session %s: could not record the reply in the history", self.session_id)

    # --- persistence (never on the audio path) ----------------------------------------------

    def _persist_input(self, reply: _Reply, pcm: bytes, partials: list[str]) -> None:
        turn = replace(reply.turn)
        transcription = reply.transcription
        uow = self.deps.uow

        async def add_turn() -> None:
            async with uow() as tx:
                await tx.turns.add(turn)
                await tx.commit()

        self.writer.submit(f"turn {turn.turn_number} row", add_turn)
        audio: dict[str, str] = {}
        if pcm:
            key = raw_input_key(self.session_id, turn.turn_id, self.deps.clock.now())
            data = pcm16_wav(pcm, ASR_SAMPLE_RATE)

            async def upload() -> None:
                audio["url"] = await self.deps.object_store.put(key, data, "audio/wav")
                audio["key"] = key

            self.writer.submit(f"turn {turn.turn_number} input audio", upload)

        async def add_transcription() -> None:
            async with uow() as tx:
                await tx.transcriptions.add(turn.turn_id, transcription, audio.get("url"), partials)
                await tx.commit()

        self.writer.submit(f"turn {turn.turn_number} transcription row", add_transcription)
        if pcm:

            async def request_prosody() -> None:
                if "key" not in audio:
                    return  # the upload failed loudly already; nothing to analyze
                await self._publish(
                    PROSODY_TOPIC,
                    {
                        "session_id": str(self.session_id),
                        "turn_id": str(turn.turn_id),
                        "transcription_id": str(transcription.transcription_id),
                        "audio_key": audio["key"],
                        "audio_url": audio["url"],
                        "sample_rate": ASR_SAMPLE_RATE,
                    },
                )

            self.writer.submit(f"turn {turn.turn_number} prosody request", request_prosody)

    def _persist_reply(self, reply: _Reply) -> None:
        turn = replace(reply.turn, stage_latency_ms=dict(reply.turn.stage_latency_ms))
        uow = self.deps.uow

        async def update_turn() -> None:
            async with uow() as tx:
                await tx.turns.update(turn)
                await tx.commit()

        self.writer.submit(f"turn {turn.turn_number} reply", update_turn)
        if reply.fast_stored or not reply.pcm or reply.sample_rate is None:
            return
        reply.fast_stored = True
        key = synthesized_key(turn.turn_id, TTSMode.FAST, self.deps.clock.now())
        data = pcm16_wav(bytes(reply.pcm), reply.sample_rate)
        row = SynthesizedAudio(
            audio_id=new_id(),
            turn_id=turn.turn_id,
            mode=TTSMode.FAST,
            audio_url="",
            duration_sec=len(reply.pcm) / 2 / reply.sample_rate,
            synthesis_time_ms=reply.tts_time_s * 1000.0,
            voice_profile_id=reply.voice_profile_id,
            engine=reply.engine,
            voice=reply.voice,
        )

        async def store_fast() -> None:
            url = await self.deps.object_store.put(key, data, "audio/wav")
            async with uow() as tx:
                await tx.synthesized.add(replace(row, audio_url=url))
                await tx.commit()

        self.writer.submit(f"turn {turn.turn_number} fast audio", store_fast)

    async def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        await self.deps.queue.publish(topic, payload)

    async def _write_failed(self, what: str, exc: BaseException) -> None:
        self.deps.metrics.write_failed(what.split(" ")[-1] if what else "write")
        self._error("PERSISTENCE_FAILED", f"could not save {what} after retries: {exc}")

    # --- small helpers --------------------------------------------------------------------

    def _stage(self, reply: _Reply, name: str, seconds: float, *, e2e: bool = False) -> None:
        reply.stages[name] = round(seconds * 1000.0, 2)
        self.deps.metrics.observe_stage(name, seconds)
        if e2e:
            self.deps.metrics.observe_e2e(seconds)

    def _state_changed(self) -> None:
        hook = self.on_state_change
        if hook is not None:
            self.writer.submit("session state", hook)

    def _send_emotion(self, reply: _Reply) -> None:
        if reply.emotion_sent:
            return
        reply.emotion_sent = True
        self.outbox.send({"type": "emotion", "turn_id": reply.turn_key, "emotion": reply.emotion.value})
        self._observe(lambda o: o.reply_emotion(self.session_id, reply.turn.turn_id, reply.emotion))

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self.phase:
            self.phase = phase
            self.outbox.send(self.state_message())
            self._observe(lambda o: o.phase_changed(self.session_id, phase.value))

    def _observe(self, call: Callable[[ConversationObserver], None]) -> None:
        """Tell the avatar observer (its methods return at once; a failure never ends the turn)."""
        observer = self.deps.observer
        if observer is None:
            return
        try:
            call(observer)
        except Exception:
            log.exception("session %s: the avatar observer failed", self.session_id)

    def _notice(self, code: str, message: str) -> None:
        if code in self._notices_sent:
            return
        self._notices_sent.add(code)
        self.outbox.send({"type": "notice", "code": code, "message": message})

    def _error(self, code: str, message: str) -> None:
        self.outbox.send({"type": "error", "code": code, "message": message, "trace_id": str(uuid.uuid4())})


async def collect(iterator: AsyncIterator[AudioChunk]) -> tuple[bytes, int]:
    """All of a synthesis stream's audio as one PCM16 buffer and its sample rate."""
    pcm = bytearray()
    rate = 0
    async for chunk in iterator:
        if not rate:
            rate = chunk.sample_rate
        if chunk.sample_rate == rate:
            pcm += chunk.pcm
    return bytes(pcm), rate
