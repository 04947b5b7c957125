"""One OpenAI Realtime connection driving one :class:`ConversationSession` (docs/realtime.md).

Client events become the pipeline's own inputs (audio chunks, typed text, end of utterance,
interrupt, voice choice); what the pipeline says comes back through :class:`RealtimeTranslator`.
Nothing here runs a second pipeline: turns are stored, counted and scored exactly as for the web app.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from avatar.application.conversation.session import ConversationSession
from avatar.application.realtime.config import ConfigError, RealtimeConfig
from avatar.application.realtime.events import (
    REALTIME_SAMPLE_RATE,
    ClientEvent,
    ContentOut,
    ItemCreateIn,
    ItemOut,
    ItemTruncateIn,
    OutputAudioClearIn,
    PlainEvent,
    ResponseCancelIn,
    ResponseCreateIn,
    ServerEvent,
    SessionEvent,
    SessionUpdateIn,
    TranscriptionCompletedEvent,
    TruncatedEvent,
    error_event,
    new_item_id,
    new_response_id,
)
from avatar.application.realtime.ports import RealtimeDeps
from avatar.application.realtime.translator import RealtimeTranslator
from avatar.application.realtime.voices import UnknownVoiceError, choose_voice
from avatar.domain.models import AudioChunk

#: Sample rate of the utterance audio the pipeline stores (the recognizer's contract).
_PIPELINE_INPUT_RATE = 16000
#: How long ``response.create`` after a manual ``commit`` waits for that audio's transcript.
COMMIT_WAIT_S = 60.0


class RealtimeConversation:
    """Client events in (:meth:`handle`, :meth:`append_audio`), server events out (``emit``)."""

    def __init__(
        self,
        session: ConversationSession,
        deps: RealtimeDeps,
        emit: Callable[[ServerEvent], None],
        *,
        beta: bool = False,
    ) -> None:
        self.session = session
        self.deps = deps
        self.emit = emit
        self.beta = beta
        self.config = RealtimeConfig(server_silence_ms=deps.silence_duration_ms)
        self.translator = RealtimeTranslator(deps, self.config, emit, beta=beta)
        self.translator.on_speech_started = self._speech_resumed
        self.translator.on_committed = self._utterance_committed
        self.session.auto_reply = self.config.auto_reply
        self._tasks: set[asyncio.Task[None]] = set()
        self._delayed: asyncio.Task[None] | None = None

    @property
    def session_id(self) -> str:
        return str(self.session.session_id)

    def created(self) -> ServerEvent:
        """``session.created``: the first event of every connection."""
        return SessionEvent(type="session.created", session=self._described())

    def _described(self) -> dict[str, object]:
        return self.config.describe(self.session_id, self.deps.model, beta=self.beta)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- a longer silence_duration_ms than the recognizer's (docs/realtime.md) -----------------

    def _utterance_committed(self) -> None:
        if self.config.delayed_reply:
            self._speech_resumed()
            self._delayed = self._spawn(self._reply_after(self.config.reply_delay_ms / 1000.0))

    def _speech_resumed(self) -> None:
        if self._delayed is not None:
            self._delayed.cancel()
            self._delayed = None

    async def _reply_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._delayed = None
        await self.session.respond()  # a reply still playing is interrupted first, as on speech

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _error(self, message: str, code: str, event_id: str | None, param: str | None = None) -> None:
        self.emit(error_event(message, code=code, param=param, event_id=event_id))

    # --- dispatch -----------------------------------------------------------------------------

    async def handle(self, event: ClientEvent) -> None:
        """One validated client event (``input_audio_buffer.append`` goes to :meth:`append_audio`)."""
        if isinstance(event, SessionUpdateIn):
            await self._session_update(event)
        elif isinstance(event, ItemCreateIn):
            await self._item_create(event)
        elif isinstance(event, ItemTruncateIn):
            await self._truncate(event)
        elif isinstance(event, ResponseCreateIn):
            await self._response_create(event)
        elif isinstance(event, ResponseCancelIn | OutputAudioClearIn):
            await self._cancel(event)
        elif event.type == "input_audio_buffer.commit":
            await self._commit(event.event_id)
        elif event.type == "input_audio_buffer.clear":
            # Audio already handed to the recognizer cannot be taken back: an utterance it is
            # decoding may still become an item (docs/realtime.md, "Not supported").
            self.translator.uncommitted_ms = 0.0
            self.emit(PlainEvent(type="input_audio_buffer.cleared"))

    # --- session.update -----------------------------------------------------------------------

    async def _session_update(self, event: SessionUpdateIn) -> None:
        trial = dataclasses.replace(self.config)
        try:
            voice = trial.apply(event.session)
        except ConfigError as exc:
            self._error(str(exc), "invalid_value", event.event_id, exc.param)
            return
        if voice is not None:
            try:
                choice = choose_voice(voice, await self.deps.voices())
            except UnknownVoiceError as exc:
                self._error(str(exc), "invalid_value", event.event_id, "session.audio.output.voice")
                return
            trial.voice = choice.name
            context = self.session.context
            await self.session.set_tts_mode(context.tts_mode, choice.voice or "", choice.voice_profile_id)
        instructions_changed = trial.instructions != self.config.instructions
        vars(self.config).update(vars(trial))  # the translator holds this same object
        self.session.auto_reply = self.config.auto_reply
        if instructions_changed and self.deps.instructions is not None:
            self.deps.instructions.set_instructions(self.session.session_id, self.config.instructions)
        self.emit(SessionEvent(type="session.updated", session=self._described()))

    # --- input audio --------------------------------------------------------------------------

    async def append_audio(self, pcm: bytes) -> None:
        """PCM16 24 kHz from ``input_audio_buffer.append`` (already decoded and checked)."""
        t = self.translator
        chunk = AudioChunk(pcm=pcm, sample_rate=REALTIME_SAMPLE_RATE, timestamp_ms=int(t.appended_ms))
        t.appended_ms += chunk.duration_ms
        t.uncommitted_ms += chunk.duration_ms
        await self.session.push_audio(chunk)

    async def _commit(self, event_id: str | None) -> None:
        t = self.translator
        if t.uncommitted_ms <= 0.0:
            self._error("the input audio buffer is empty", "input_audio_buffer_commit_empty", event_id)
            return
        t.commit_pending = True
        t.commit_resolved.clear()
        t.commit_event = event_id
        await self.session.end_utterance()

    # --- items ----------------------------------------------------------------------------------

    async def _item_create(self, event: ItemCreateIn) -> None:
        item, eid = event.item, event.event_id
        if item.type != "message" or item.role not in ("user", "system"):
            self._error(
                "only user and system message items can be created (docs/realtime.md)",
                "unsupported_item",
                eid,
                "item.role" if item.type == "message" else "item.type",
            )
            return
        item_id = item.id or new_item_id()
        if item_id in self.translator.items:
            self._error(f"an item with id {item_id!r} already exists", "item_already_exists", eid, "item.id")
            return
        texts = [c.text for c in item.content if c.type in ("input_text", "text") and c.text]
        audio = [c.audio for c in item.content if c.type in ("input_audio", "audio") and c.audio]
        if bool(texts) == bool(audio):
            self._error(
                "a message item needs either input_text or input_audio content",
                "invalid_value",
                eid,
                "item.content",
            )
            return
        if item.role == "system":
            joined = "\n".join(t for t in texts if t)
            self.config.instructions = "\n".join(p for p in (self.config.instructions, joined) if p)
            if self.deps.instructions is not None:
                self.deps.instructions.set_instructions(self.session.session_id, self.config.instructions)
            self.translator.add_item(
                ItemOut(id=item_id, role="system", content=[ContentOut(type="input_text", text=joined)])
            )
            return
        if texts:
            text = " ".join(t.strip() for t in texts if t.strip())
            if not text:
                self._error("the item's text is empty", "invalid_value", eid, "item.content")
                return
            self.translator.add_item(
                ItemOut(id=item_id, role="user", content=[ContentOut(type="input_text", text=text)])
            )
            self.translator.expected_texts.append(text)
            await self.session.text_input(text, hold=True)
            return
        await self._audio_item(item_id, "".join(a for a in audio if a), eid)

    async def _audio_item(self, item_id: str, data: str, event_id: str | None) -> None:
        try:
            pcm = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self._error("the item's audio is not valid base64", "invalid_audio", event_id, "item.content")
            return
        if not pcm or len(pcm) % 2:
            self._error("audio must be PCM16 mono 24 kHz", "invalid_audio", event_id, "item.content")
            return
        t = self.translator
        t.add_item(ItemOut(id=item_id, role="user", content=[ContentOut(type="input_audio")]))
        transcription = await self.deps.transcribe(pcm, REALTIME_SAMPLE_RATE)
        text = transcription.text.strip()
        if t.config.transcription is not None:
            usage = {"type": "duration", "seconds": round(len(pcm) / 2 / REALTIME_SAMPLE_RATE, 3)}
            self.emit(TranscriptionCompletedEvent(item_id=item_id, transcript=text, usage=usage))
        resampler = self.deps.resampler(REALTIME_SAMPLE_RATE, _PIPELINE_INPUT_RATE)
        pcm16k = resampler.push(pcm) + resampler.flush()
        t.expected_texts.append(text)
        await self.session.audio_input(transcription, pcm16k)

    async def _truncate(self, event: ItemTruncateIn) -> None:
        t, eid = self.translator, event.event_id
        item = t.items.get(event.item_id)
        if item is None or item.role != "assistant" or item.turn_id is None:
            self._error(
                f"no assistant item {event.item_id!r} in this conversation", "item_not_found", eid, "item_id"
            )
            return
        finished = t.response is None or t.response.item_id != item.id
        if finished and event.audio_end_ms > item.audio_ms + 1.0:
            self._error(
                f"audio_end_ms {event.audio_end_ms} is past the item's {int(item.audio_ms)} ms of audio",
                "invalid_value",
                eid,
                "audio_end_ms",
            )
            return
        truncated = TruncatedEvent(
            item_id=item.id, content_index=event.content_index, audio_end_ms=event.audio_end_ms
        )
        if item.turn_id == self._latest_turn():
            # The reply is running or its audio may still play: the pipeline keeps only the words
            # heard in that much audio (its own barge-in); the event follows its turn_completed.
            t.truncations[item.turn_id] = truncated
            t.cancel_requested()
            if await self.session.interrupt(played_ms=float(event.audio_end_ms)):
                return
            t.truncations.pop(item.turn_id, None)
        self.emit(truncated)

    def _latest_turn(self) -> uuid.UUID | None:
        assistants = [i for i in self.translator.items.values() if i.role == "assistant"]
        return assistants[-1].turn_id if assistants else None

    # --- responses ----------------------------------------------------------------------------

    async def _response_create(self, event: ResponseCreateIn) -> None:
        t, eid, params = self.translator, event.event_id, event.response
        if t.response is not None:
            self._error(
                f"response {t.response.id} is in progress; cancel it or wait for response.done",
                "conversation_already_has_active_response",
                eid,
            )
            return
        if params is not None and params.conversation == "none":
            self._error(
                "out-of-band responses (conversation: none) are not supported",
                "unsupported_value",
                eid,
                "response.conversation",
            )
            return
        modalities = (params.output_modalities or params.modalities) if params is not None else None
        t.next_audio_out = None if not modalities else "audio" in modalities
        t.next_response_id = new_response_id()
        if t.commit_pending:
            self._spawn(self._respond_after_commit(eid))
            return
        await self._respond(eid)

    async def _respond_after_commit(self, event_id: str | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COMMIT_WAIT_S):
                await self.translator.commit_resolved.wait()
        await self._respond(event_id)

    async def _respond(self, event_id: str | None) -> None:
        if not await self.session.respond():
            self.translator.next_audio_out = self.translator.next_response_id = None
            self._error(
                "there is no new input to respond to: create a user item or commit audio first",
                "response_create_no_input",
                event_id,
            )

    async def _cancel(self, event: ResponseCancelIn | OutputAudioClearIn) -> None:
        t = self.translator
        wanted = event.response_id if isinstance(event, ResponseCancelIn) else None
        if t.response is None or (wanted is not None and wanted != t.response.id):
            if isinstance(event, OutputAudioClearIn):
                self.emit(PlainEvent(type="output_audio_buffer.cleared"))
                return
            self._error("no response is in progress", "response_cancel_not_active", event.event_id)
            return
        t.cancel_requested()
        await self.session.interrupt()
        if isinstance(event, OutputAudioClearIn):
            self.emit(PlainEvent(type="output_audio_buffer.cleared"))
