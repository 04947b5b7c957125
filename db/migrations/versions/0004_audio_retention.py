"""Retention of stored audio (docs/security.md, "Retention"): when the sweep removed a turn's input
audio or a reply's audio, the row stays and records it, so the history says "expired" instead of
handing out a URL of a missing object.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("transcriptions", sa.Column("audio_expired_at", sa.DateTime(timezone=True)))
    op.add_column("synthesized_audios", sa.Column("expired_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("synthesized_audios", "expired_at")
    op.drop_column("transcriptions", "audio_expired_at")
