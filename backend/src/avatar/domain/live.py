"""Live-stream chat: the one normalized chat message every platform adapter produces (docs/live.md)."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Platform(enum.StrEnum):
    TWITCH = "twitch"
    CHZZK = "chzzk"


class Emote(BaseModel):
    """An emote/emoji inside a message: its platform id and the text it replaces."""

    model_config = ConfigDict(frozen=True)

    id: str
    code: str


class ChatMessage(BaseModel):
    """One viewer chat line (or donation/cheer), whatever platform it came from.

    Attributes:
        platform: Where it came from.
        channel: The stream's channel (Twitch login, Chzzk channel id).
        user_id: The sender's stable id on the platform (Twitch user-id, Chzzk sender channel id).
        display_name: The name to show and to address the viewer by.
        text: The message text (emote codes left in place).
        emotes: Emotes used in ``text``.
        is_streamer: Sent by the stream's own channel.
        is_moderator: Sent by a moderator of the channel.
        amount: Donation (Chzzk, in KRW) or cheer (Twitch, in bits) amount; 0 for plain chat.
        at: When the platform says it was sent (UTC).
    """

    model_config = ConfigDict(frozen=True)

    platform: Platform
    channel: str
    user_id: str
    display_name: str
    text: str
    emotes: tuple[Emote, ...] = ()
    is_streamer: bool = False
    is_moderator: bool = False
    amount: int = Field(default=0, ge=0)
    at: datetime

    @property
    def key(self) -> str:
        """The viewer's identity across messages: ``platform:user_id``."""
        return f"{self.platform.value}:{self.user_id}"


class DropReason(enum.StrEnum):
    """Why a chat message was not answered (the ``reason`` label of ``live_chat_dropped_total``)."""

    EMPTY = "empty"
    TOO_SHORT = "too_short"
    COMMAND = "command"
    BOT = "bot"
    LINK = "link"
    PROFANITY = "profanity"
    REPEAT = "repeat"
    FLOOD = "flood"
    STREAMER = "streamer"
    BANNED = "banned"
    QUEUE_FULL = "queue_full"
    STALE = "stale"
    PAUSED = "paused"
    #: The director skipped it in the console.
    SKIPPED = "skipped"
