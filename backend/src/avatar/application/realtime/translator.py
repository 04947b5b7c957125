"""The session's pipeline messages (docs/protocol.md) as OpenAI Realtime server events.

One :class:`RealtimeTranslator` per connection. It keeps the conversation's items (user inputs and
assistant replies, with their ids), the response in progress and the audio clock, and turns each
:data:`ServerMessage` of the session's outbox into the Realtime events a client expects
(docs/realtime.md, "Event mapping"). Reply audio is resampled to 24 kHz here. It does no I/O: events
go to ``emit``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from avatar.application.conversation.events import (
    AudioChunkMsg,
    ErrorMsg,
    InterruptedMsg,
    LlmTokenMsg,
    NoticeMsg,
    ServerMessage,
    SpeechStartedMsg,
    TranscriptionFinalMsg,
    TranscriptionPartialMsg,
    TurnCompletedMsg,
    TurnStartedMsg,
)
from avatar.application.realtime.config import RealtimeConfig
from avatar.application.realtime.events import (
    REALTIME_SAMPLE_RATE,
    CommittedEvent,
    ContentOut,
    DeltaEvent,
    DoneEvent,
    ItemEvent,
    ItemOut,
    OutputItemEvent,
    PartEvent,
    ResponseEvent,
    ResponseOut,
    ServerEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    StatusDetails,
    TokenDetails,
    TranscriptionCompletedEvent,
    TranscriptionDeltaEvent,
    TruncatedEvent,
    UsageOut,
    error_event,
    new_item_id,
    new_response_id,
)
from avatar.application.realtime.ports import RealtimeDeps, StreamResampler

#: Pipeline error codes that are the server's fault (OpenAI's ``server_error``).
_SERVER_ERRORS = frozenset(
    {
        "ASR_FAILED",
        "LLM_UNAVAILABLE",
        "TTS_FAILED",
        "VRAM_EXHAUSTED",
        "PERSISTENCE_FAILED",
        "INTERNAL_ERROR",
        "BUSY",
    }
)


@dataclass
class Item:
    """A conversation item this connection has seen."""

    id: str
    role: str
    turn_id: uuid.UUID | None = None
    audio_ms: float = 0.0


@dataclass
class Response:
    """The reply in progress, as a Realtime response with one assistant message item."""

    id: str
    item_id: str
    turn_id: uuid.UUID
    audio_out: bool
    user_text: str
    text: list[str] = field(default_factory=list)
    audio_ms: float = 0.0
    resampler: StreamResampler | None = None
    source_rate: int = 0
    cancel_reason: str | None = None

    @property
    def modalities(self) -> list[str]:
        return ["audio"] if self.audio_out else ["text"]


class RealtimeTranslator:
    """Pipeline messages in, Realtime server events out (through ``emit``)."""

    def __init__(
        self,
        deps: RealtimeDeps,
        config: RealtimeConfig,
        emit: Callable[[ServerEvent], None],
        *,
        beta: bool = False,
    ) -> None:
        self.deps = deps
        self.config = config
        self.emit = emit
        self.beta = beta
        self.items: dict[str, Item] = {}
        self.last_item_id: str | None = None
        self.response: Response | None = None
        #: Audio appended by the client (ms): the clock of ``audio_start_ms`` / ``audio_end_ms``.
        self.appended_ms = 0.0
        #: Audio appended since the last committed item.
        self.uncommitted_ms = 0.0
        #: A client ``input_audio_buffer.commit`` waiting for its transcript.
        self.commit_event: str | None = None
        self.commit_pending = False
        #: Set once a pending commit became an item (or turned out empty).
        self.commit_resolved = asyncio.Event()
        #: Texts of items the client created, whose pipeline transcript must not become an audio item.
        self.expected_texts: collections.deque[str] = collections.deque()
        #: User texts not yet answered (``usage.input_tokens`` of the next response).
        self.unanswered: list[str] = []
        #: ``response.create`` options for the next response.
        self.next_audio_out: bool | None = None
        self.next_response_id: str | None = None
        #: ``conversation.item.truncate`` waiting for the pipeline's ``interrupted``: turn -> event.
        self.truncations: dict[uuid.UUID, TruncatedEvent] = {}
        self._speech_item: str | None = None
        self._partial_text = ""
        #: Told when the VAD hears speech start and when an utterance became an item.
        self.on_speech_started: Callable[[], None] | None = None
        self.on_committed: Callable[[], None] | None = None

    # --- items --------------------------------------------------------------------------------

    def add_item(self, item: ItemOut, *, turn_id: uuid.UUID | None = None, done: bool = True) -> None:
        """Record an item and announce it (GA: ``conversation.item.added`` then ``.done``; beta:
        ``conversation.item.created``)."""
        previous = self.last_item_id
        self.items[item.id] = Item(item.id, item.role, turn_id)
        self.last_item_id = item.id
        if self.beta:
            self.emit(ItemEvent(type="conversation.item.created", item=item, previous_item_id=previous))
            return
        self.emit(ItemEvent(type="conversation.item.added", item=item, previous_item_id=previous))
        if done:
            self.emit(ItemEvent(type="conversation.item.done", item=item, previous_item_id=previous))

    # --- pipeline messages ----------------------------------------------------------------------

    def pipeline(self, message: ServerMessage) -> None:
        if isinstance(message, SpeechStartedMsg):
            self._speech_started(message)
        elif isinstance(message, TranscriptionPartialMsg):
            self._partial(message)
        elif isinstance(message, TranscriptionFinalMsg):
            self._final(message)
        elif isinstance(message, TurnStartedMsg):
            self._turn_started(message)
        elif isinstance(message, LlmTokenMsg):
            self._token(message)
        elif isinstance(message, AudioChunkMsg):
            self._audio(message)
        elif isinstance(message, InterruptedMsg):
            self._interrupted(message)
        elif isinstance(message, TurnCompletedMsg):
            self._completed(message)
        elif isinstance(message, NoticeMsg):
            self._notice(message)
        elif isinstance(message, ErrorMsg):
            kind = "server_error" if message.code in _SERVER_ERRORS else "invalid_request_error"
            self.emit(error_event(message.message, code=message.code.lower(), kind=kind))
        # session_state, emotion, hq_ready, prosody_analysis, pong and heartbeat have no
        # Realtime counterpart (docs/realtime.md).

    def _speech_started(self, message: SpeechStartedMsg) -> None:
        self._partial_text = ""
        if not self.config.vad:
            return
        self._speech_item = new_item_id()
        start = max(0, int(min(message.timestamp, self.appended_ms)))
        self.emit(SpeechStartedEvent(audio_start_ms=start, item_id=self._speech_item))
        if self.on_speech_started is not None:
            self.on_speech_started()

    def _partial(self, message: TranscriptionPartialMsg) -> None:
        """A live transcript: its growth since the last one as a transcription delta (a partial that
        revises earlier words is skipped; the completed event carries the final text)."""
        text = message.text.strip()
        if self.config.transcription is None or not text.startswith(self._partial_text):
            return
        delta, self._partial_text = text[len(self._partial_text) :], text
        if delta:
            self._speech_item = self._speech_item or new_item_id()
            self.emit(TranscriptionDeltaEvent(item_id=self._speech_item, delta=delta))

    def _final(self, message: TranscriptionFinalMsg) -> None:
        text = message.text.strip()
        if self.expected_texts and self.expected_texts[0] == text:
            self.expected_texts.popleft()  # a client-created item, announced already
            self.unanswered.append(text)
            return
        self.commit_event = None
        self.commit_pending = False
        self.commit_resolved.set()
        self._partial_text = ""
        item_id, self._speech_item = self._speech_item or new_item_id(), None
        if self.config.vad:
            end = max(0, int(self.appended_ms - self.config.server_silence_ms))
            self.emit(SpeechStoppedEvent(audio_end_ms=end, item_id=item_id))
        if not text:  # noise, not words: the speech ends without an item
            self.uncommitted_ms = 0.0
            return
        self.emit(CommittedEvent(item_id=item_id, previous_item_id=self.last_item_id))
        transcribed = self.config.transcription is not None
        content = ContentOut(type="input_audio", transcript=text if transcribed else None)
        self.add_item(ItemOut(id=item_id, role="user", content=[content]))
        if transcribed:
            usage = {"type": "duration", "seconds": round(self.uncommitted_ms / 1000.0, 3)}
            self.emit(TranscriptionCompletedEvent(item_id=item_id, transcript=text, usage=usage))
        self.uncommitted_ms = 0.0
        self.unanswered.append(text)
        if self.on_committed is not None:
            self.on_committed()

    def _notice(self, message: NoticeMsg) -> None:
        if message.code == "NO_SPEECH" and self.commit_pending:
            self.commit_pending = False
            self.commit_resolved.set()
            self.emit(
                error_event(
                    "the input audio buffer holds no speech to commit",
                    code="input_audio_buffer_commit_empty",
                    event_id=self.commit_event,
                )
            )
            self.commit_event = None

    # --- the response ---------------------------------------------------------------------------

    def _turn_started(self, message: TurnStartedMsg) -> None:
        audio_out = self.config.audio_out if self.next_audio_out is None else self.next_audio_out
        response_id = self.next_response_id or new_response_id()
        self.next_audio_out = self.next_response_id = None
        user_text, self.unanswered = " ".join(self.unanswered), []
        resp = Response(response_id, new_item_id(), message.turn_id, audio_out, user_text)
        self.response = resp
        self.emit(
            ResponseEvent(
                type="response.created",
                response=ResponseOut(id=resp.id, output_modalities=resp.modalities),
            )
        )
        item = ItemOut(id=resp.item_id, role="assistant", status="in_progress")
        self.emit(OutputItemEvent(type="response.output_item.added", response_id=resp.id, item=item))
        self.add_item(item, turn_id=message.turn_id, done=False)
        self.emit(
            PartEvent(
                type="response.content_part.added",
                response_id=resp.id,
                item_id=resp.item_id,
                part=self._part(resp, ""),
            )
        )

    def _current(self, turn_id: uuid.UUID) -> Response | None:
        resp = self.response
        return resp if resp is not None and resp.turn_id == turn_id else None

    def _token(self, message: LlmTokenMsg) -> None:
        resp = self._current(message.turn_id)
        if resp is None:
            return
        resp.text.append(message.token)
        kind = "response.output_audio_transcript.delta" if resp.audio_out else "response.output_text.delta"
        self.emit(DeltaEvent(type=kind, response_id=resp.id, item_id=resp.item_id, delta=message.token))

    def _audio(self, message: AudioChunkMsg) -> None:
        resp = self._current(message.turn_id)
        if resp is None or not resp.audio_out:
            return
        if resp.resampler is None or resp.source_rate != message.sr:
            self._flush_audio(resp)
            resp.resampler = self.deps.resampler(message.sr, REALTIME_SAMPLE_RATE)
            resp.source_rate = message.sr
        self._send_audio(resp, resp.resampler.push(message.data))

    def _send_audio(self, resp: Response, pcm: bytes) -> None:
        if not pcm:
            return
        resp.audio_ms += len(pcm) / 2 / REALTIME_SAMPLE_RATE * 1000.0
        delta = base64.b64encode(pcm).decode("ascii")
        self.emit(
            DeltaEvent(
                type="response.output_audio.delta", response_id=resp.id, item_id=resp.item_id, delta=delta
            )
        )

    def _flush_audio(self, resp: Response) -> None:
        if resp.resampler is not None:
            self._send_audio(resp, resp.resampler.flush())
            resp.resampler = None

    def _interrupted(self, message: InterruptedMsg) -> None:
        resp = self._current(message.turn_id)
        if resp is not None and resp.cancel_reason is None:
            resp.cancel_reason = "turn_detected"

    def cancel_requested(self) -> None:
        """The client cancelled the response in progress (``response.cancel``)."""
        if self.response is not None and self.response.cancel_reason is None:
            self.response.cancel_reason = "client_cancelled"

    def _completed(self, message: TurnCompletedMsg) -> None:
        resp = self._current(message.turn_id)
        if resp is not None:
            self._finish(resp, message)
        truncated = self.truncations.pop(message.turn_id, None)
        if truncated is not None:
            self.emit(truncated)

    def _finish(self, resp: Response, message: TurnCompletedMsg) -> None:
        self.response = None
        text = "".join(resp.text).strip()
        cancelled = message.interrupted
        common = {"response_id": resp.id, "item_id": resp.item_id}
        if resp.audio_out:
            self._flush_audio(resp)
            self.emit(DoneEvent(type="response.output_audio.done", **common))
            self.emit(DoneEvent(type="response.output_audio_transcript.done", transcript=text, **common))
        else:
            self.emit(DoneEvent(type="response.output_text.done", text=text, **common))
        part = self._part(resp, text)
        self.emit(PartEvent(type="response.content_part.done", part=part, **common))
        item = ItemOut(
            id=resp.item_id,
            role="assistant",
            status="incomplete" if cancelled else "completed",
            content=[self._item_content(resp, text)],
        )
        known = self.items.get(resp.item_id)
        if known is not None:
            known.audio_ms = resp.audio_ms
        self.emit(OutputItemEvent(type="response.output_item.done", response_id=resp.id, item=item))
        if not self.beta:
            self.emit(ItemEvent(type="conversation.item.done", item=item))
        status = "cancelled" if cancelled else "completed"
        details = StatusDetails(
            type=status, reason=(resp.cancel_reason or "turn_detected") if cancelled else None
        )
        self.emit(
            ResponseEvent(
                type="response.done",
                response=ResponseOut(
                    id=resp.id,
                    status=status,
                    status_details=details,
                    output=[item],
                    output_modalities=resp.modalities,
                    usage=self._usage(resp.user_text, text),
                ),
            )
        )

    def _usage(self, user_text: str, reply_text: str) -> UsageOut:
        """Tokens of the user's words and of the reply in the chat model's tokenizer (the persona,
        history and memories of the prompt are not counted; docs/realtime.md)."""
        count = self.deps.count_tokens
        tokens_in = count(user_text) if user_text else 0
        tokens_out = count(reply_text) if reply_text else 0
        return UsageOut(
            total_tokens=tokens_in + tokens_out,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            input_token_details=TokenDetails(text_tokens=tokens_in, audio_tokens=0, cached_tokens=0),
            output_token_details=TokenDetails(text_tokens=tokens_out, audio_tokens=0),
        )

    def _item_content(self, resp: Response, text: str) -> ContentOut:
        if resp.audio_out:
            return ContentOut(type="audio" if self.beta else "output_audio", transcript=text)
        return ContentOut(type="text" if self.beta else "output_text", text=text)

    @staticmethod
    def _part(resp: Response, text: str) -> ContentOut:
        if resp.audio_out:
            return ContentOut(type="audio", transcript=text)
        return ContentOut(type="text", text=text)
