"""What a conversation leaves behind, written off the audio path through a session's
:class:`BackgroundWriter`: turn and transcription rows, the input and reply audio, and the
prosody and HQ requests on the task queue."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from avatar.application.conversation.events import NoticeMsg
from avatar.application.conversation.writer import BackgroundWriter
from avatar.application.durable_writes import DurableWriter, Outcome
from avatar.application.ports.spool import SpoolFullError
from avatar.application.storage_records import (
    SpoolRecord,
    StorageApplier,
    StoredObject,
    SynthesizedInsert,
    TranscriptionInsert,
    TurnInsert,
    TurnUpdate,
)
from avatar.application.tasks import HQTask, ProsodyTask, enqueue
from avatar.application.validation import sanitize_text
from avatar.domain.errors import CapacityError
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

if TYPE_CHECKING:
    from avatar.application.conversation.deps import ConversationDeps

log = logging.getLogger(__name__)

#: Sample rate of ``TranscriptEvent.utterance_pcm`` (the recognizer's contract).
ASR_SAMPLE_RATE = 16000


@dataclass
class ReplyAudio:
    """The fast voice's audio of one reply, kept to be stored once the reply ends."""

    voice_profile_id: uuid.UUID | None = None
    pcm: bytearray = field(default_factory=bytearray)
    sample_rate: int | None = None
    tts_time_s: float = 0.0
    engine: str = ""
    voice: str = ""
    stored: bool = False

    def add(self, chunk: AudioChunk) -> None:
        if self.sample_rate is None:
            self.sample_rate = chunk.sample_rate
        if chunk.sample_rate == self.sample_rate:
            self.pcm += chunk.pcm


#: The ``notice`` a session gets (once) when its writes wait in the storage spool.
STORAGE_DEFERRED = "STORAGE_DEFERRED"
#: The ``notice`` a session gets (each time) when a turn's prosody analysis could not be queued.
BUSY = "BUSY"


class TurnRecorder:
    """Queues every write of one session on its own writer; nothing here is awaited by a reply.
    Each write is a typed record (``application/storage_records.py``) given to the durable writer:
    during a storage outage it waits in the spool and the client is told once (``notice``
    ``STORAGE_DEFERRED``); a write that fails otherwise (each store retries transient errors
    itself), or finds the spool full (``SPOOL_FULL``), is counted and reported to the client through
    ``report``; the conversation goes on (docs/resilience.md). A prosody request that finds the
    analysis queue full loses nothing stored (the turn, its audio and transcription are saved): the
    analysis of that turn is skipped, counted, and the client gets a ``notice`` ``BUSY`` through
    ``tell`` (docs/protocol.md)."""

    def __init__(
        self,
        session_id: uuid.UUID,
        deps: ConversationDeps,
        *,
        report: Callable[[str, str], None],
        notice: Callable[[str, str], None] | None = None,
        tell: Callable[[NoticeMsg], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._store = deps.object_store
        self._queue = deps.queue
        self._clock = deps.clock
        self._metrics = deps.metrics
        self._report = report
        self._notice = notice
        self._tell = tell
        self._durable = deps.durable or DurableWriter(StorageApplier(deps.uow, deps.object_store))
        self.writer = BackgroundWriter(
            on_failure=self._write_failed,
            name=f"writer-{session_id}",
        )

    async def _write_failed(self, what: str, exc: BaseException) -> None:
        self._metrics.write_failed(what.split(" ")[-1] if what else "write")
        # The store's own error text (constraint names, paths) goes to the log, not to the client.
        log.warning("session %s: could not save %s", self.session_id, what, exc_info=exc)
        if isinstance(exc, SpoolFullError):
            self._report(
                "SPOOL_FULL",
                f"could not save {what}: storage is unreachable and the server's spool is full",
            )
            return
        self._report(
            "PERSISTENCE_FAILED", f"could not save {what} ({type(exc).__name__}); see the server log"
        )

    def record_input(
        self, turn: ConversationTurn, transcription: Transcription, pcm: bytes, partials: list[str]
    ) -> None:
        """The turn row, the utterance's audio and transcription, and the prosody request."""
        # Recognized or typed text may hold characters PostgreSQL cannot store (NUL): drop them so
        # the turn is stored (docs/protocol.md, Limits).
        turn = replace(
            turn,
            user_input=sanitize_text(turn.user_input),
            stage_latency_ms=dict(turn.stage_latency_ms),  # a snapshot: the record may wait
        )
        transcription = replace(transcription, text=sanitize_text(transcription.text))
        partials = [sanitize_text(p) for p in partials]
        self._submit(f"turn {turn.turn_number} row", TurnInsert(turn=turn))
        audio: dict[str, str] = {}
        pending: list[StoredObject] = []
        if pcm:
            key = raw_input_key(self.session_id, turn.turn_id, self._clock.now())
            wav = StoredObject(key=key, data=pcm16_wav(pcm, ASR_SAMPLE_RATE), content_type="audio/wav")

            async def upload() -> None:
                url = await self._durable.put_now(wav)
                if url is None:  # storage unreachable: the audio travels with its row's record
                    pending.append(wav)
                    return
                audio["url"] = url
                audio["key"] = key

            self.writer.submit(f"turn {turn.turn_number} input audio", upload)

        async def add_transcription() -> None:
            record = TranscriptionInsert(
                turn_id=turn.turn_id,
                transcription=transcription,
                partials=partials,
                audio_url=audio.get("url"),
                audio=pending[0] if pending else None,
            )
            if await self._write(record) is Outcome.SPOOLED:
                # The row waits in the spool: a prosody score would reach the database before it.
                audio.pop("key", None)

        self.writer.submit(f"turn {turn.turn_number} transcription row", add_transcription)
        if pcm:

            async def request_prosody() -> None:
                if "key" not in audio:
                    return  # the upload failed loudly, or waits in the spool: nothing to analyze
                task = ProsodyTask(
                    session_id=self.session_id,
                    transcription_id=transcription.transcription_id,
                    audio_key=audio["key"],
                    sample_rate=ASR_SAMPLE_RATE,
                    turn_id=turn.turn_id,
                    audio_url=audio["url"],
                )
                try:
                    await enqueue(self._queue, task)
                except CapacityError as exc:
                    self._prosody_skipped(turn, exc)

            self.writer.submit(f"turn {turn.turn_number} prosody request", request_prosody)

    def _prosody_skipped(self, turn: ConversationTurn, exc: CapacityError) -> None:
        """The analysis queue is full: this turn gets no prosody score; nothing stored is lost."""
        self._metrics.task_skipped(ProsodyTask.TOPIC)
        log.warning(
            "session %s: prosody analysis of turn %d skipped: %s", self.session_id, turn.turn_number, exc
        )
        message = (
            f"the prosody analysis of turn {turn.turn_number} was skipped because the analysis queue "
            "is full; the turn itself is saved"
        )
        if self._tell is not None:
            self._tell(NoticeMsg(code=BUSY, message=message, turn_id=turn.turn_id))
        elif self._notice is not None:
            self._notice(BUSY, message)

    async def _write(self, record: SpoolRecord) -> Outcome:
        outcome = await self._durable.write(record)
        if outcome is Outcome.SPOOLED and self._notice is not None:
            self._notice(
                STORAGE_DEFERRED,
                "storage is unreachable: this conversation is kept on the server and saved when it returns",
            )
        return outcome

    def _submit(self, what: str, record: SpoolRecord) -> None:
        async def write() -> None:
            await self._write(record)

        self.writer.submit(what, write)

    def record_reply(self, turn: ConversationTurn, audio: ReplyAudio) -> None:
        """The turn's reply (text, emotion, stages) and, once, the fast voice's audio."""
        turn = replace(
            turn,
            user_input=sanitize_text(turn.user_input),
            ai_response=sanitize_text(turn.ai_response),
            stage_latency_ms=dict(turn.stage_latency_ms),
        )
        self._submit(f"turn {turn.turn_number} reply", TurnUpdate(turn=turn))
        if audio.stored or not audio.pcm or audio.sample_rate is None:
            return
        audio.stored = True
        key = synthesized_key(turn.turn_id, TTSMode.FAST, self._clock.now())
        row = SynthesizedAudio(
            audio_id=new_id(),
            turn_id=turn.turn_id,
            mode=TTSMode.FAST,
            audio_url="",
            duration_sec=len(audio.pcm) / 2 / audio.sample_rate,
            synthesis_time_ms=audio.tts_time_s * 1000.0,
            voice_profile_id=audio.voice_profile_id,
            engine=audio.engine,
            voice=audio.voice,
        )
        wav = StoredObject(key=key, data=pcm16_wav(bytes(audio.pcm), audio.sample_rate))
        self._submit(f"turn {turn.turn_number} fast audio", SynthesizedInsert(row=row, audio=wav))

    def request_hq(
        self,
        turn_id: uuid.UUID,
        text: str,
        voice: str | None,
        language: str | None,
        voice_profile_id: uuid.UUID | None,
        emotion: Emotion = Emotion.NEUTRAL,
    ) -> None:
        """Queue the HQ pass of a finished turn (its ``hq_ready`` reaches the client later)."""
        task = HQTask(self.session_id, turn_id, text, voice, language, voice_profile_id, emotion)

        async def publish() -> None:
            await enqueue(self._queue, task)

        self.writer.submit("queue the HQ synthesis", publish)
