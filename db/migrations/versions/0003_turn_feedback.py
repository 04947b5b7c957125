"""Ratings of replies (thumbs up/down and a comment), one per turn, for the fine-tuning export
(docs/live.md, "Feedback").

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "turn_feedback",
        sa.Column(
            "turn_id",
            UUID(as_uuid=True),
            sa.ForeignKey("conversation_turns.turn_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("rating", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("rating IN ('up', 'down')", name="ck_turn_feedback_rating"),
    )
    op.create_index("ix_turn_feedback_created_at", "turn_feedback", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_turn_feedback_created_at", table_name="turn_feedback")
    op.drop_table("turn_feedback")
