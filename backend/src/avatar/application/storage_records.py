"""The writes a conversation leaves behind, as typed records, and the one place that applies them
to the database and the object store.

A record carries everything its write needs (an audio object travels with the row that points at
it), so it can wait in the storage spool and be applied later, in another process. Applying a
record twice is harmless: rows are inserted keyed by their ids (an existing row is kept), an update
sets the same values again, an object is written again under the same key (docs/resilience.md).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.domain.models import ConversationTurn, ProsodyScore, SynthesizedAudio, Transcription


class _Record(BaseModel):
    # Binary audio is base64 in the journal's JSON.
    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")


class StoredObject(_Record):
    """An object to write to the object store."""

    key: str
    data: bytes
    content_type: str = "audio/wav"


class TurnInsert(_Record):
    """A new turn row (the person's words; the reply comes with :class:`TurnUpdate`)."""

    kind: Literal["turn_insert"] = "turn_insert"
    turn: ConversationTurn


class TurnUpdate(_Record):
    """A turn's reply: text, emotion, interruption and stage latencies."""

    kind: Literal["turn_update"] = "turn_update"
    turn: ConversationTurn


class TranscriptionInsert(_Record):
    """A transcription row; ``audio``, when given, is stored first and the row points at it."""

    kind: Literal["transcription_insert"] = "transcription_insert"
    turn_id: uuid.UUID
    transcription: Transcription
    partials: list[str] = Field(default_factory=list)
    audio_url: str | None = None
    audio: StoredObject | None = None


class SynthesizedInsert(_Record):
    """A reply's audio object and the row that points at it."""

    kind: Literal["synthesized_insert"] = "synthesized_insert"
    row: SynthesizedAudio
    audio: StoredObject


class SynthesizedRow(_Record):
    """A synthesized-audio row whose object is already stored (the HQ pass)."""

    kind: Literal["synthesized_row"] = "synthesized_row"
    row: SynthesizedAudio


class MemoryItem(_Record):
    """One utterance of long-term memory with its text embedding."""

    turn_id: uuid.UUID | None
    role: str
    text: str
    embedding: list[float]


class MemoryInsert(_Record):
    """A session's settled utterances for long-term memory (one row per turn and role: a memory
    row already stored for the same turn and role is kept, so a replay adds nothing twice)."""

    kind: Literal["memory_insert"] = "memory_insert"
    session_id: uuid.UUID
    items: list[MemoryItem]


class SummarySave(_Record):
    """A session's rolling summary (replaces the stored one)."""

    kind: Literal["summary_save"] = "summary_save"
    session_id: uuid.UUID
    summary: str
    covered_turns: int


class ProsodyInsert(_Record):
    """A prosody score row (keyed by its ``score_id``)."""

    kind: Literal["prosody_insert"] = "prosody_insert"
    score: ProsodyScore


class SessionEnd(_Record):
    """A session ended at ``ended_at`` (ending twice keeps the first end time)."""

    kind: Literal["session_end"] = "session_end"
    session_id: uuid.UUID
    ended_at: datetime


SpoolRecord = Annotated[
    TurnInsert
    | TurnUpdate
    | TranscriptionInsert
    | SynthesizedInsert
    | SynthesizedRow
    | MemoryInsert
    | SummarySave
    | ProsodyInsert
    | SessionEnd,
    Field(discriminator="kind"),
]
#: Reads and writes any record as JSON (the spool's payload).
RECORDS: TypeAdapter[SpoolRecord] = TypeAdapter(SpoolRecord)


class StorageApplier:
    """Applies one record to the unit of work and the object store (each retries its own transient
    errors; a ``DependencyError`` means the store stayed unreachable)."""

    def __init__(self, uow: UnitOfWorkFactory, store: ObjectStore | None) -> None:
        """``store`` ``None``: for writers of rows only (the brain's memories and summaries)."""
        self._uow = uow
        self._store = store

    async def put(self, obj: StoredObject) -> str:
        if self._store is None:
            raise RuntimeError("this storage applier writes rows only; it has no object store")
        return await self._store.put(obj.key, obj.data, obj.content_type)

    async def apply(self, record: SpoolRecord) -> None:
        match record:
            case TurnInsert(turn=turn):
                async with self._uow() as tx:
                    await tx.turns.add(turn)
                    await tx.commit()
            case TurnUpdate(turn=turn):
                async with self._uow() as tx:
                    await tx.turns.update(turn)
                    await tx.commit()
            case TranscriptionInsert():
                url = await self.put(record.audio) if record.audio is not None else record.audio_url
                async with self._uow() as tx:
                    await tx.transcriptions.add(record.turn_id, record.transcription, url, record.partials)
                    await tx.commit()
            case SynthesizedInsert(row=row, audio=audio):
                url = await self.put(audio)
                async with self._uow() as tx:
                    await tx.synthesized.add(replace(row, audio_url=url))
                    await tx.commit()
            case SynthesizedRow(row=row):
                async with self._uow() as tx:
                    await tx.synthesized.add(row)
                    await tx.commit()
            case MemoryInsert(session_id=session_id, items=items):
                async with self._uow() as tx:
                    for item in items:
                        await tx.memories.add(session_id, item.turn_id, item.role, item.text, item.embedding)
                    await tx.commit()
            case SummarySave(session_id=session_id, summary=summary, covered_turns=covered):
                async with self._uow() as tx:
                    await tx.summaries.save(session_id, summary, covered)
                    await tx.commit()
            case ProsodyInsert(score=score):
                async with self._uow() as tx:
                    await tx.prosody.add(score)
                    await tx.commit()
            case SessionEnd(session_id=session_id, ended_at=ended_at):
                async with self._uow() as tx:
                    session = await tx.sessions.get(session_id)
                    if session is not None:  # erased meanwhile: nothing to end
                        session.end(ended_at)
                        await tx.sessions.update(session)
                        await tx.commit()
