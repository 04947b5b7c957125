"""A person's rating of one AI reply, kept with the turn (docs/live.md, "Feedback")."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from avatar.domain.errors import DomainError

MAX_COMMENT_CHARS = 2000


class Rating(enum.StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class TurnFeedback:
    """Thumbs up/down (and an optional comment) on a turn's reply; one per turn, the last one wins."""

    turn_id: uuid.UUID
    rating: Rating
    comment: str = ""
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if len(self.comment) > MAX_COMMENT_CHARS:
            raise DomainError(f"a feedback comment has at most {MAX_COMMENT_CHARS} characters")
