"""Filters, the reply queue's selection policy and the overlay state (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from avatar.application.live.inbox import Inbox
from avatar.application.live.overlay import OverlayState
from avatar.application.live.policy import ChatFilter, FilterConfig, ReplyQueue, load_word_list
from avatar.domain.live import ChatMessage, DropReason, Platform
from avatar.settings import REPO_ROOT

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def msg(user: str, text: str, *, amount: int = 0, streamer: bool = False, at: datetime = T0) -> ChatMessage:
    return ChatMessage(
        platform=Platform.TWITCH,
        channel="chan",
        user_id=user,
        display_name=user.capitalize(),
        text=text,
        is_streamer=streamer,
        amount=amount,
        at=at,
    )


def test_the_shipped_profanity_list_has_korean_and_english() -> None:
    words = load_word_list(REPO_ROOT / "config" / "live" / "profanity.txt")
    assert "fuck" in words and "씨발" in words
    assert not any(w.startswith("#") for w in words)


def test_an_unreadable_word_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"profanity list .*missing\.txt"):
        load_word_list(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="cannot be read"):
        load_word_list(bad)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (msg("a", "   "), DropReason.EMPTY),
        (msg("a", "!song next"), DropReason.COMMAND),
        (msg("nightbot", "Follow the rules"), DropReason.BOT),
        (msg("a", "k"), DropReason.TOO_SHORT),
        (msg("a", "free followers at www.spam.example"), DropReason.LINK),
        (msg("a", "visit https://x.y now"), DropReason.LINK),
        (msg("a", "buy at cheap.com"), DropReason.LINK),
        (msg("a", "이 씨발 방송"), DropReason.PROFANITY),
        (msg("a", "what the FUCK"), DropReason.PROFANITY),
        (msg("chan", "hello chat", streamer=True), DropReason.STREAMER),
        (msg("a", "안녕하세요 아바타!"), None),
        (msg("a", "k", amount=100), None),
    ],
)
def test_filter_rules(message: ChatMessage, reason: DropReason | None) -> None:
    words = frozenset({"씨발", "fuck"})
    assert ChatFilter(FilterConfig(profanity=words)).verdict(message, 0.0) is reason


def test_repeats_floods_bans_and_streamer_option() -> None:
    f = ChatFilter(FilterConfig(repeat_window_s=30, flood_messages=3, flood_window_s=10))
    assert f.verdict(msg("a", "Hello there"), 0.0) is None
    assert f.verdict(msg("b", "hello   THERE"), 5.0) is DropReason.REPEAT
    assert f.verdict(msg("b", "hello there"), 40.0) is None  # the window passed
    flood = [f.verdict(msg("c", f"message number {i}"), 50.0 + i) for i in range(5)]
    assert flood == [None, None, None, DropReason.FLOOD, DropReason.FLOOD]
    assert f.verdict(msg("c", "a calm message"), 80.0) is None  # the flood window passed
    f.banned.add("twitch:a")
    assert f.verdict(msg("a", "something new"), 90.0) is DropReason.BANNED
    many = ChatFilter(FilterConfig(flood_window_s=10))
    for i in range(5001):
        many.verdict(msg(f"u{i}", f"hello number {i}"), 0.0)
    many.verdict(msg("late", "one more hello"), 20.0)
    assert len(many._per_user) == 1  # quiet viewers are forgotten, not kept for ever
    answering = ChatFilter(FilterConfig(answer_streamer=True))
    assert answering.verdict(msg("chan", "hi chat", streamer=True), 0.0) is None


def test_queue_prefers_donations_then_new_viewers_then_recent() -> None:
    drops: list[tuple[str, DropReason]] = []
    q = ReplyQueue(capacity=3, max_age_s=60, on_drop=lambda m, r: drops.append((m.text, r)))
    q.push(msg("a", "first from a"), 0.0)
    assert q.pop(1.0) is not None  # a has now been answered
    q.push(msg("a", "a again"), 2.0)
    q.push(msg("b", "b new"), 3.0)
    q.push(msg("c", "c cheer", amount=50), 4.0)
    q.push(msg("d", "d newest"), 5.0)  # over capacity: the lowest rank (a, answered) goes
    assert drops == [("a again", DropReason.QUEUE_FULL)]
    order = [q.pop(6.0), q.pop(6.0), q.pop(6.0)]
    assert [m.text for m in order if m] == ["c cheer", "d newest", "b new"]
    assert q.pop(6.0) is None


def test_queue_expires_stale_messages_and_drops_on_request() -> None:
    drops: list[DropReason] = []
    q = ReplyQueue(capacity=5, max_age_s=10, on_drop=lambda _m, r: drops.append(r))
    q.push(msg("a", "old one"), 0.0)
    q.push(msg("b", "fresh"), 8.0)
    picked = q.pop(11.0)
    assert picked is not None and picked.text == "fresh"
    assert drops == [DropReason.STALE]
    q.push(msg("c", "one"), 12.0)
    q.push(msg("d", "two"), 12.0)
    q.drop_all(DropReason.BANNED, ["twitch:c"])
    assert [m.text for m in q.messages()] == ["two"]
    q.drop_all(DropReason.PAUSED)
    assert len(q) == 0 and drops[-2:] == [DropReason.BANNED, DropReason.PAUSED]


async def test_overlay_fades_hides_streamer_clears_and_signals() -> None:
    overlay = OverlayState(max_lines=3)
    overlay.add_chat(msg("a", "old"), T0)
    overlay.add_chat(msg("chan", "streamer says", streamer=True), T0 + timedelta(minutes=9))
    overlay.add_reply("hi A!", "happy", T0 + timedelta(minutes=9), "AVATAR")
    now = T0 + timedelta(minutes=10, seconds=1)
    shot = overlay.snapshot(now)
    assert [(m.kind, m.text) for m in shot.messages] == [("chat", "streamer says"), ("reply", "hi A!")]
    assert shot.messages[1].emotion == "happy" and shot.messages[0].is_streamer
    overlay.set_show_streamer_chat(False)
    assert [m.text for m in overlay.snapshot(now).messages] == ["hi A!"]
    seen = overlay.version
    assert not await overlay.wait_change(seen, 0.01)
    overlay.add_chat(msg("b", "one more"), now)
    assert await overlay.wait_change(seen, 0.01)
    assert len(overlay.snapshot(now).messages) == 2  # max_lines=3 keeps the last three
    overlay.clear()
    assert overlay.snapshot(now).messages == []


def test_the_queue_gives_up_one_message_by_identity_without_a_drop_report() -> None:
    dropped: list[tuple[str, DropReason]] = []
    queue = ReplyQueue(5, 60.0, lambda m, r: dropped.append((m.user_id, r)))
    a, b = msg("amy", "hello"), msg("amy", "hello")  # equal, not the same message
    queue.push(a, 0.0)
    assert not queue.remove(b) and len(queue) == 1
    assert queue.remove(a) and len(queue) == 0 and dropped == []


def test_the_console_inbox_keeps_the_latest_and_finds_each_message() -> None:
    inbox = Inbox(size=3)
    messages = [msg(f"u{i}", f"text {i}") for i in range(5)]
    entries = [inbox.add(m, DropReason.LINK if i == 4 else None, T0) for i, m in enumerate(messages)]
    assert [e.id for e in inbox.entries()] == [3, 4, 5]
    assert inbox.get(1) is None and inbox.get(5) is entries[4]
    assert (entries[4].status, entries[4].reason) == ("dropped", DropReason.LINK)
    assert entries[3].status == "queued"
    assert inbox.of(messages[0]) is None  # evicted
    assert inbox.of(messages[3]) is entries[3]
    assert inbox.of(msg("u3", "text 3")) is None  # an equal message is another message
