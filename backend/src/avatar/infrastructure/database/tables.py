"""Table definitions (SQLAlchemy Core) mirroring the Alembic migrations in ``db/migrations``.

The migrations are the source of truth for the schema; these definitions are what the repositories
query with. ``tests/integration/test_database.py`` checks that the two agree. Columns holding what
people said are :class:`EncryptedText` (sealed at rest, docs/security.md); in SQL they are ``text``.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from avatar.infrastructure.database.encrypted import EncryptedJSON, EncryptedText

SPEAKER_DIM = 256
TEXT_EMBEDDING_DIM = 512

metadata = MetaData()

_EMPTY_JSON = text("'{}'::jsonb")
_EMPTY_LIST = text("'[]'::jsonb")


def _now() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


users = Table(
    "users",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False, server_default="user"),
    Column("password_hash", Text),
    _now(),
    UniqueConstraint("name", name="uq_users_name"),
    CheckConstraint("role IN ('admin', 'user')", name="ck_users_role"),
    CheckConstraint("length(name) BETWEEN 1 AND 64", name="ck_users_name_length"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("credential_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("csrf_hash", Text),
    Column("label", Text, nullable=False, server_default=""),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    _now(),
    UniqueConstraint("secret_hash", name="uq_credentials_secret_hash"),
    CheckConstraint("kind IN ('api_key', 'web', 'link')", name="ck_credentials_kind"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_id", UUID(as_uuid=True), primary_key=True),
    Column("owner_id", UUID(as_uuid=True), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=False),
    Column("end_time", DateTime(timezone=True)),
    Column("status", Text, nullable=False, server_default="active"),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
    _now(),
    CheckConstraint("status IN ('active', 'ended', 'error')", name="ck_sessions_status"),
)

conversation_turns = Table(
    "conversation_turns",
    metadata,
    Column("turn_id", UUID(as_uuid=True), primary_key=True),
    Column(
        "session_id",
        UUID(as_uuid=True),
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("turn_number", Integer, nullable=False),
    Column("user_input", EncryptedText("conversation_turns.user_input"), nullable=False, server_default=""),
    Column("ai_response", EncryptedText("conversation_turns.ai_response"), nullable=False, server_default=""),
    Column("emotion", Text, nullable=False, server_default="neutral"),
    Column("interrupted", Boolean, nullable=False, server_default="false"),
    Column("stage_latency_ms", JSONB, nullable=False, server_default=_EMPTY_JSON),
    _now(),
    UniqueConstraint("session_id", "turn_number", name="uq_conversation_turns_session_turn"),
    CheckConstraint("turn_number >= 1", name="ck_conversation_turns_turn_number"),
)

transcriptions = Table(
    "transcriptions",
    metadata,
    Column("transcription_id", UUID(as_uuid=True), primary_key=True),
    Column(
        "turn_id",
        UUID(as_uuid=True),
        ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("final_text", EncryptedText("transcriptions.final_text"), nullable=False),
    Column(
        "partial_results",
        EncryptedJSON("transcriptions.partial_results"),
        nullable=False,
        server_default=_EMPTY_LIST,
    ),
    Column("confidence", Float, nullable=False),
    Column("latency_ms", Float, nullable=False, server_default="0"),
    Column("audio_url", Text),
    Column("language", Text),
    Column("low_confidence", Boolean, nullable=False, server_default="false"),
    _now(),
    Column("audio_expired_at", DateTime(timezone=True)),
    CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_transcriptions_confidence"),
)

prosody_scores = Table(
    "prosody_scores",
    metadata,
    Column("score_id", UUID(as_uuid=True), primary_key=True),
    Column(
        "transcription_id",
        UUID(as_uuid=True),
        ForeignKey("transcriptions.transcription_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("confidence", Float, nullable=False),
    Column("stability", Float, nullable=False),
    Column("affability", Float, nullable=False),
    Column("features", JSONB, nullable=False, server_default=_EMPTY_JSON),
    Column("reliable", Boolean, nullable=False, server_default="true"),
    Column("reason", Text),
    Column("analyzed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("confidence BETWEEN 0 AND 100", name="ck_prosody_scores_confidence"),
    CheckConstraint("stability BETWEEN 0 AND 100", name="ck_prosody_scores_stability"),
    CheckConstraint("affability BETWEEN 0 AND 100", name="ck_prosody_scores_affability"),
)

voice_profiles = Table(
    "voice_profiles",
    metadata,
    Column("profile_id", UUID(as_uuid=True), primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("audio_url", Text, nullable=False),
    Column("embedding", Vector(SPEAKER_DIM), nullable=False),
    Column("duration_sec", Float, nullable=False),
    Column("sample_rate", Integer, nullable=False),
    Column("transcript", EncryptedText("voice_profiles.transcript"), nullable=False, server_default=""),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
    _now(),
)

synthesized_audios = Table(
    "synthesized_audios",
    metadata,
    Column("audio_id", UUID(as_uuid=True), primary_key=True),
    Column(
        "turn_id",
        UUID(as_uuid=True),
        ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "voice_profile_id", UUID(as_uuid=True), ForeignKey("voice_profiles.profile_id", ondelete="SET NULL")
    ),
    Column("mode", Text, nullable=False),
    Column("audio_url", Text, nullable=False),
    Column("duration_sec", Float, nullable=False),
    Column("synthesis_time_ms", Float, nullable=False),
    Column("engine", Text, nullable=False, server_default=""),
    Column("voice", Text, nullable=False, server_default=""),
    _now(),
    Column("expired_at", DateTime(timezone=True)),
    CheckConstraint("mode IN ('fast', 'hq')", name="ck_synthesized_audios_mode"),
)

system_logs = Table(
    "system_logs",
    metadata,
    Column("log_id", BigInteger, primary_key=True, autoincrement=True),
    Column("level", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("trace_id", Text),
    Column("metadata", JSONB, nullable=False, server_default=_EMPTY_JSON),
    _now(),
)

memories = Table(
    "memories",
    metadata,
    Column("memory_id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "session_id",
        UUID(as_uuid=True),
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("turn_id", UUID(as_uuid=True), ForeignKey("conversation_turns.turn_id", ondelete="CASCADE")),
    Column("role", Text, nullable=False),
    Column("text", EncryptedText("memories.text"), nullable=False),
    Column("embedding", Vector(TEXT_EMBEDDING_DIM), nullable=False),
    _now(),
)

conversation_summaries = Table(
    "conversation_summaries",
    metadata,
    Column(
        "session_id",
        UUID(as_uuid=True),
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("summary", EncryptedText("conversation_summaries.summary"), nullable=False),
    Column("covered_turns", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

turn_feedback = Table(
    "turn_feedback",
    metadata,
    Column(
        "turn_id",
        UUID(as_uuid=True),
        ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rating", Text, nullable=False),
    Column("comment", EncryptedText("turn_feedback.comment"), nullable=False, server_default=""),
    _now(),
    CheckConstraint("rating IN ('up', 'down')", name="ck_turn_feedback_rating"),
)
