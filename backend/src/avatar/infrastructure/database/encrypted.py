"""Encrypted text columns: transcripts, replies, memories, summaries (docs/security.md).

:class:`EncryptedText` is a ``Text`` column whose values are sealed with the engine's
:class:`~avatar.infrastructure.crypto.Envelope` (AES-256-GCM, a data key per value, wrapped by the
master key) and stored as ``enc1:<base64>``. The envelope is attached to one engine's dialect by
:func:`attach_envelope` (the composition root does it in ``build_unit_of_work_factory``), so two
engines never share keys by accident. Reading a value written before encryption existed returns it
as it is; ``avatar keys rotate`` seals such rows.

Sealed values are randomized, so a column can no longer be filtered by equality or ``LIKE`` in SQL:
no query does today (recall searches memories by their embedding vector, not their text).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Text
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from avatar.infrastructure.crypto import DecryptionError, Envelope

_ATTR = "avatar_envelope"


def attach_envelope(engine: AsyncEngine, envelope: Envelope) -> None:
    """Encrypt this engine's :class:`EncryptedText` columns with ``envelope``."""
    setattr(engine.sync_engine.dialect, _ATTR, envelope)


def envelope_of(dialect: Dialect) -> Envelope | None:
    envelope: Envelope | None = getattr(dialect, _ATTR, None)
    return envelope


class EncryptedText(TypeDecorator[str]):
    """A text column sealed at rest; ``context`` (``table.column``) is bound into every seal."""

    impl = Text
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        envelope = envelope_of(dialect)
        if value is None or envelope is None:
            return value
        return envelope.seal_text(value, self.context)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or not Envelope.is_sealed_text(value):
            return value
        envelope = envelope_of(dialect)
        if envelope is None:
            raise DecryptionError(
                f"{self.context} holds encrypted text but this database engine has no keys attached"
            )
        return envelope.open_text(value, self.context)


class EncryptedJSON(TypeDecorator[Any]):
    """A JSONB column whose whole value is sealed and stored as one JSON string ``"enc1:..."``."""

    impl = JSONB
    cache_ok = True

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        envelope = envelope_of(dialect)
        if value is None or envelope is None:
            return value
        return envelope.seal_text(json.dumps(value), self.context)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, str) or not Envelope.is_sealed_text(value):
            return value
        envelope = envelope_of(dialect)
        if envelope is None:
            raise DecryptionError(
                f"{self.context} holds encrypted data but this database engine has no keys attached"
            )
        return json.loads(envelope.open_text(value, self.context))


#: The sealed text columns, for ``avatar keys rotate``: (table, primary key column, column).
SEALED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("conversation_turns", "turn_id", "user_input"),
    ("conversation_turns", "turn_id", "ai_response"),
    ("transcriptions", "transcription_id", "final_text"),
    ("memories", "memory_id", "text"),
    ("conversation_summaries", "session_id", "summary"),
    ("voice_profiles", "profile_id", "transcript"),
    ("turn_feedback", "turn_id", "comment"),
)
#: The sealed JSONB columns (the whole value is one sealed JSON string).
SEALED_JSON_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("transcriptions", "transcription_id", "partial_results"),
)


async def rewrap_columns(engine: AsyncEngine, envelope: Envelope) -> dict[str, int]:
    """Re-wrap every sealed value under the active master key and seal plaintext ones.

    Works on the raw column text (no type processing) in one transaction per column; values already
    under the active key are left alone, so a run that stopped half-way is simply run again.
    Returns how many values changed, per ``table.column``.
    """
    changed: dict[str, int] = {}
    for table, pk, column in (*SEALED_COLUMNS, *SEALED_JSON_COLUMNS):
        is_json = (table, pk, column) in SEALED_JSON_COLUMNS
        context = f"{table}.{column}"
        # The identifiers come from the constant tables above, never from input.
        read = f"SELECT {pk} AS pk, {column}{'::text' if is_json else ''} AS value FROM {table}"
        write = (
            f"UPDATE {table} SET {column} = to_jsonb(CAST(:value AS text)) WHERE {pk} = :pk"
            if is_json
            else f"UPDATE {table} SET {column} = :value WHERE {pk} = :pk"
        )
        count = 0
        async with engine.begin() as conn:
            rows = (await conn.execute(sql_text(read))).all()
            for row in rows:
                value = row.value
                if value is None:
                    continue
                if is_json:
                    decoded = json.loads(value)
                    current = decoded if isinstance(decoded, str) else None
                    new = (
                        envelope.rewrap_text(current, context)
                        if current is not None and Envelope.is_sealed_text(current)
                        else envelope.seal_text(value, context)
                    )
                else:
                    new = envelope.rewrap_text(str(value), context)
                if new is None:
                    continue
                await conn.execute(sql_text(write), {"value": new, "pk": row.pk})
                count += 1
        changed[context] = count
    return changed
