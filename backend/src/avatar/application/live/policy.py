"""Which chat messages the avatar answers: filters, then a bounded queue with a selection policy.

Pure logic over explicit times (seconds on any monotonic clock), so every rule is unit-tested
(docs/live.md, "What the avatar answers").
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from avatar.domain.live import ChatMessage, DropReason

_LINK = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(com|net|org|io|gg|tv|kr|xyz|ly|me|co)\b)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
DEFAULT_BOTS = frozenset({"nightbot", "streamelements", "moobot", "fossabot", "streamlabs", "wizebot"})


def load_word_list(path: Path) -> frozenset[str]:
    """One word a line; blank lines and ``#`` comments ignored; matched case-insensitively.

    Raises:
        ValueError: The file cannot be read (the message names it).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"the profanity list {path} cannot be read: {exc}") from exc
    words = (line.split("#", 1)[0].strip().casefold() for line in lines)
    return frozenset(w for w in words if w)


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """The filters' limits (mapped from ``settings.live`` by the composition root)."""

    min_chars: int = 2
    repeat_window_s: float = 30.0
    flood_messages: int = 3
    flood_window_s: float = 10.0
    answer_streamer: bool = False
    bots: frozenset[str] = DEFAULT_BOTS
    profanity: frozenset[str] = frozenset()
    command_prefixes: tuple[str, ...] = ("!", "/")


def _normalized(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


class ChatFilter:
    """Decides whether a message may be answered; keeps the little history the rules need."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self._recent_texts: dict[str, float] = {}
        self._per_user: dict[str, deque[float]] = {}
        self.banned: set[str] = set()

    def verdict(self, message: ChatMessage, now: float) -> DropReason | None:
        """``None`` when the message may be answered, else why not (first matching rule)."""
        c = self.config
        text = _normalized(message.text)
        flooding = self._count_user(message.key, now)
        if message.key in self.banned:
            return DropReason.BANNED
        if message.is_streamer and not c.answer_streamer:
            return DropReason.STREAMER
        if not text:
            return DropReason.EMPTY
        if message.display_name.casefold() in c.bots or message.user_id.casefold() in c.bots:
            return DropReason.BOT
        if text.startswith(c.command_prefixes):
            return DropReason.COMMAND
        if len(text) < c.min_chars and message.amount == 0:
            return DropReason.TOO_SHORT
        if _LINK.search(text):
            return DropReason.LINK
        if any(word in text for word in c.profanity):
            return DropReason.PROFANITY
        if self._seen_recently(text, now):
            return DropReason.REPEAT
        if flooding and message.amount == 0:
            return DropReason.FLOOD
        return None

    def _seen_recently(self, text: str, now: float) -> bool:
        window = self.config.repeat_window_s
        if len(self._recent_texts) > 1000:
            self._recent_texts = {t: at for t, at in self._recent_texts.items() if now - at < window}
        last = self._recent_texts.get(text)
        self._recent_texts[text] = now
        return last is not None and now - last < window

    def _count_user(self, key: str, now: float) -> bool:
        if len(self._per_user) > 5000:  # forget viewers quiet for longer than the window
            window = self.config.flood_window_s
            self._per_user = {k: t for k, t in self._per_user.items() if t and now - t[-1] <= window}
        times = self._per_user.setdefault(key, deque())
        times.append(now)
        while times and now - times[0] > self.config.flood_window_s:
            times.popleft()
        return len(times) > self.config.flood_messages


@dataclass(slots=True)
class _Queued:
    message: ChatMessage
    arrived: float


@dataclass
class ReplyQueue:
    """Messages waiting for a spoken reply, at most ``capacity``.

    Selection: the largest donation/cheer first; then viewers not answered yet before those who
    were; then the most recent. Messages older than ``max_age_s`` expire. Every message that
    leaves without being chosen is reported to ``on_drop`` with its reason.
    """

    capacity: int = 20
    max_age_s: float = 60.0
    on_drop: Callable[[ChatMessage, DropReason], None] = lambda _m, _r: None
    _items: list[_Queued] = field(default_factory=list)
    _answered: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._items)

    def messages(self) -> list[ChatMessage]:
        return [q.message for q in self._items]

    def _rank(self, q: _Queued) -> tuple[int, int, float]:
        return (q.message.amount, 0 if q.message.key in self._answered else 1, q.arrived)

    def push(self, message: ChatMessage, now: float) -> None:
        self.expire(now)
        self._items.append(_Queued(message, now))
        if len(self._items) > self.capacity:
            worst = min(self._items, key=self._rank)
            self._items.remove(worst)
            self.on_drop(worst.message, DropReason.QUEUE_FULL)

    def expire(self, now: float) -> None:
        stale = [q for q in self._items if now - q.arrived > self.max_age_s]
        for q in stale:
            self._items.remove(q)
            self.on_drop(q.message, DropReason.STALE)

    def pop(self, now: float) -> ChatMessage | None:
        """The message to answer next (marks its viewer as answered), or ``None``."""
        self.expire(now)
        if not self._items:
            return None
        best = max(self._items, key=self._rank)
        self._items.remove(best)
        self._answered.add(best.message.key)
        return best.message

    def remove(self, message: ChatMessage) -> bool:
        """Take this very message out of the queue without a drop report; False if not queued."""
        for q in self._items:
            if q.message is message:
                self._items.remove(q)
                return True
        return False

    def drop_all(self, reason: DropReason, keys: Iterable[str] | None = None) -> None:
        """Drop every queued message (or only those of ``keys``) with ``reason``."""
        wanted = None if keys is None else set(keys)
        for q in list(self._items):
            if wanted is None or q.message.key in wanted:
                self._items.remove(q)
                self.on_drop(q.message, reason)
