"""Accounts and ownership (docs/security.md, "Accounts and ownership").

Adds ``users`` (roles ``admin`` and ``user``) and ``credentials`` (hashed API keys, web sign-in
sessions and one-time sign-in links), gives every session and voice profile an owner, and assigns
the rows that existed before this revision to a local owner created here (an admin named
``owner``). Turns, transcriptions, prosody, synthesized audio, memories and summaries belong to
their session's owner through the session's foreign key, and go with it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False, server_default="user"),
        sa.Column("password_hash", sa.Text),
        _created_at(),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sa.CheckConstraint("role IN ('admin', 'user')", name="ck_users_role"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 64", name="ck_users_name_length"),
    )
    op.create_table(
        "credentials",
        sa.Column("credential_id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "user_id",
            UUID(as_uuid=True),
            sa.ForeignKey("users.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        sa.Column("csrf_hash", sa.Text),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.UniqueConstraint("secret_hash", name="uq_credentials_secret_hash"),
        sa.CheckConstraint("kind IN ('api_key', 'web', 'link')", name="ck_credentials_kind"),
    )
    op.create_index("ix_credentials_user_id", "credentials", ["user_id"])

    bind = op.get_bind()
    orphans = bind.execute(
        sa.text("SELECT (SELECT count(*) FROM sessions) + (SELECT count(*) FROM voice_profiles)")
    ).scalar_one()
    owner_id = uuid.uuid4()
    if orphans:
        bind.execute(
            sa.text("INSERT INTO users (user_id, name, role) VALUES (:id, 'owner', 'admin')"),
            {"id": owner_id},
        )

    op.add_column("sessions", sa.Column("owner_id", UUID(as_uuid=True)))
    if orphans:
        bind.execute(sa.text("UPDATE sessions SET owner_id = :id"), {"id": owner_id})
        bind.execute(
            sa.text(
                "UPDATE voice_profiles SET user_id = :id"
                " WHERE user_id IS NULL OR user_id NOT IN (SELECT user_id FROM users)"
            ),
            {"id": owner_id},
        )
    op.alter_column("sessions", "owner_id", nullable=False)
    op.create_foreign_key(
        "fk_sessions_owner_id", "sessions", "users", ["owner_id"], ["user_id"], ondelete="CASCADE"
    )
    op.create_index("ix_sessions_owner_start", "sessions", ["owner_id", "start_time"])

    op.alter_column("voice_profiles", "user_id", nullable=False)
    op.create_foreign_key(
        "fk_voice_profiles_user_id", "voice_profiles", "users", ["user_id"], ["user_id"], ondelete="CASCADE"
    )


def downgrade() -> None:
    op.drop_constraint("fk_voice_profiles_user_id", "voice_profiles", type_="foreignkey")
    op.alter_column("voice_profiles", "user_id", nullable=True)
    op.drop_index("ix_sessions_owner_start", table_name="sessions")
    op.drop_constraint("fk_sessions_owner_id", "sessions", type_="foreignkey")
    op.drop_column("sessions", "owner_id")
    op.drop_index("ix_credentials_user_id", table_name="credentials")
    op.drop_table("credentials")
    op.drop_table("users")
