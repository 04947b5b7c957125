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
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from avatar.application.ports.storage import ObjectStore, UnitOfWorkFactory
from avatar.domain.models import ConversationTurn, SynthesizedAudio, Transcription


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


SpoolRecord = Annotated[
    TurnInsert | TurnUpdate | TranscriptionInsert | SynthesizedInsert, Field(discriminator="kind")
]
#: Reads and writes any record as JSON (the spool's payload).
RECORDS: TypeAdapter[SpoolRecord] = TypeAdapter(SpoolRecord)


class StorageApplier:
    """Applies one record to the unit of work and the object store (each retries its own transient
    errors; a ``DependencyError`` means the store stayed unreachable)."""

    def __init__(self, uow: UnitOfWorkFactory, store: ObjectStore) -> None:
        self._uow = uow
        self._store = store

    async def put(self, obj: StoredObject) -> str:
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
