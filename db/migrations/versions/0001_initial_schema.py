"""Initial schema: DESIGN §5 tables, semantic memory and summaries, with real indexes.

The design's DDL declared ``INDEX ...`` inside ``CREATE TABLE``, which PostgreSQL rejects; every
index is created here with its own ``CREATE INDEX``. Vector columns get HNSW indexes with the
cosine operator class because every similarity query orders by cosine distance (``<=>``).

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EMPTY_JSON = sa.text("'{}'::jsonb")
_EMPTY_LIST = sa.text("'[]'::jsonb")


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "sessions",
        sa.Column("session_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True)),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
        _created_at(),
        sa.CheckConstraint("status IN ('active', 'ended', 'error')", name="ck_sessions_status"),
    )
    op.create_index("ix_sessions_start_time", "sessions", ["start_time"])
    op.create_index("ix_sessions_status", "sessions", ["status"])
    op.create_index("ix_sessions_created_at", "sessions", ["created_at"])

    op.create_table(
        "conversation_turns",
        sa.Column("turn_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "session_id",
            UUID(as_uuid=True),
            sa.ForeignKey("sessions.session_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("turn_number", sa.Integer, nullable=False),
        sa.Column("user_input", sa.Text, nullable=False, server_default=""),
        sa.Column("ai_response", sa.Text, nullable=False, server_default=""),
        sa.Column("emotion", sa.Text, nullable=False, server_default="neutral"),
        sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("stage_latency_ms", JSONB, nullable=False, server_default=_EMPTY_JSON),
        _created_at(),
        sa.UniqueConstraint("session_id", "turn_number", name="uq_conversation_turns_session_turn"),
        sa.CheckConstraint("turn_number >= 1", name="ck_conversation_turns_turn_number"),
    )
    # The unique constraint's index leads with session_id, so it also serves lookups by session.
    op.create_index("ix_conversation_turns_created_at", "conversation_turns", ["created_at"])

    op.create_table(
        "transcriptions",
        sa.Column("transcription_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "turn_id",
            UUID(as_uuid=True),
            sa.ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("final_text", sa.Text, nullable=False),
        sa.Column("partial_results", JSONB, nullable=False, server_default=_EMPTY_LIST),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
        sa.Column("audio_url", sa.Text),
        sa.Column("language", sa.Text),
        sa.Column("low_confidence", sa.Boolean, nullable=False, server_default=sa.false()),
        _created_at(),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_transcriptions_confidence"),
    )
    op.create_index("ix_transcriptions_turn_id", "transcriptions", ["turn_id"])
    op.create_index("ix_transcriptions_created_at", "transcriptions", ["created_at"])

    op.create_table(
        "prosody_scores",
        sa.Column("score_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "transcription_id",
            UUID(as_uuid=True),
            sa.ForeignKey("transcriptions.transcription_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("stability", sa.Float, nullable=False),
        sa.Column("affability", sa.Float, nullable=False),
        sa.Column("features", JSONB, nullable=False, server_default=_EMPTY_JSON),
        sa.Column("reliable", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("reason", sa.Text),
        sa.Column("analyzed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("confidence BETWEEN 0 AND 100", name="ck_prosody_scores_confidence"),
        sa.CheckConstraint("stability BETWEEN 0 AND 100", name="ck_prosody_scores_stability"),
        sa.CheckConstraint("affability BETWEEN 0 AND 100", name="ck_prosody_scores_affability"),
    )
    op.create_index("ix_prosody_scores_transcription_id", "prosody_scores", ["transcription_id"])
    op.create_index("ix_prosody_scores_analyzed_at", "prosody_scores", ["analyzed_at"])

    op.create_table(
        "voice_profiles",
        sa.Column("profile_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=True)),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("audio_url", sa.Text, nullable=False),
        sa.Column("embedding", Vector(256), nullable=False),
        sa.Column("duration_sec", sa.Float, nullable=False),
        sa.Column("sample_rate", sa.Integer, nullable=False),
        sa.Column("transcript", sa.Text, nullable=False, server_default=""),
        sa.Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
        _created_at(),
    )
    op.create_index("ix_voice_profiles_user_id", "voice_profiles", ["user_id"])
    op.create_index("ix_voice_profiles_created_at", "voice_profiles", ["created_at"])
    op.create_index(
        "ix_voice_profiles_embedding_hnsw",
        "voice_profiles",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )

    op.create_table(
        "synthesized_audios",
        sa.Column("audio_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "turn_id",
            UUID(as_uuid=True),
            sa.ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "voice_profile_id",
            UUID(as_uuid=True),
            sa.ForeignKey("voice_profiles.profile_id", ondelete="SET NULL"),
        ),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("audio_url", sa.Text, nullable=False),
        sa.Column("duration_sec", sa.Float, nullable=False),
        sa.Column("synthesis_time_ms", sa.Float, nullable=False),
        sa.Column("engine", sa.Text, nullable=False, server_default=""),
        sa.Column("voice", sa.Text, nullable=False, server_default=""),
        _created_at(),
        sa.CheckConstraint("mode IN ('fast', 'hq')", name="ck_synthesized_audios_mode"),
    )
    op.create_index("ix_synthesized_audios_turn_id", "synthesized_audios", ["turn_id"])
    op.create_index("ix_synthesized_audios_voice_profile_id", "synthesized_audios", ["voice_profile_id"])
    op.create_index("ix_synthesized_audios_mode", "synthesized_audios", ["mode"])
    op.create_index("ix_synthesized_audios_created_at", "synthesized_audios", ["created_at"])

    op.create_table(
        "system_logs",
        sa.Column("log_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("trace_id", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
        _created_at(),
    )
    op.create_index("ix_system_logs_level", "system_logs", ["level"])
    op.create_index("ix_system_logs_trace_id", "system_logs", ["trace_id"])
    op.create_index("ix_system_logs_created_at", "system_logs", ["created_at"])

    op.create_table(
        "memories",
        sa.Column("memory_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "session_id",
            UUID(as_uuid=True),
            sa.ForeignKey("sessions.session_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "turn_id", UUID(as_uuid=True), sa.ForeignKey("conversation_turns.turn_id", ondelete="CASCADE")
        ),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("embedding", Vector(512), nullable=False),
        _created_at(),
    )
    op.create_index("ix_memories_session_id", "memories", ["session_id"])
    op.create_index("ix_memories_turn_id", "memories", ["turn_id"])
    op.create_index("ix_memories_created_at", "memories", ["created_at"])
    op.create_index(
        "ix_memories_embedding_hnsw",
        "memories",
        ["embedding"],
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    )

    op.create_table(
        "conversation_summaries",
        sa.Column(
            "session_id",
            UUID(as_uuid=True),
            sa.ForeignKey("sessions.session_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("covered_turns", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; the vector extension is left in place because other
    # schemas in the same database may use it.
    for table in (
        "conversation_summaries",
        "memories",
        "system_logs",
        "synthesized_audios",
        "voice_profiles",
        "prosody_scores",
        "transcriptions",
        "conversation_turns",
        "sessions",
    ):
        op.drop_table(table)
