"""The Twitch and Chzzk chat clients against local stand-ins speaking each protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from avatar.domain.live import ChatMessage, Platform
from avatar.infrastructure.live.backoff import Backoff
from avatar.infrastructure.live.chzzk import ChzzkChat, parse_chat, parse_donation
from avatar.infrastructure.live.twitch import IrcLine, TwitchChat, check_url, parse_privmsg
from tests.support.live_standins import ChzzkStandIn, TwitchStandIn, running_chzzk


class Inbox:
    def __init__(self) -> None:
        self.messages: list[ChatMessage] = []
        self._cond = asyncio.Condition()

    async def __call__(self, message: ChatMessage) -> None:
        async with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    async def wait(self, count: int, within_s: float = 10.0) -> list[ChatMessage]:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: len(self.messages) >= count), within_s)
        return self.messages


@contextlib.asynccontextmanager
async def running(source: TwitchChat | ChzzkChat, inbox: Inbox) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(inbox))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


FAST = Backoff(initial_s=0.05, max_s=0.2)


# --- Twitch ----------------------------------------------------------------------------------


def test_twitch_urls_are_checked() -> None:
    assert check_url("wss://irc-ws.chat.twitch.tv:443")
    assert check_url("irc://127.0.0.1:6667")
    for bad in ("http://x", "irc://host", "ftp://a:1", "wss://"):
        with pytest.raises(ValueError, match="ws://, wss:// or irc://host:port"):
            check_url(bad)
    with pytest.raises(ValueError, match="channel"):
        TwitchChat("  ", "irc://127.0.0.1:1")


def test_privmsg_tags_are_parsed() -> None:
    line = IrcLine.parse(
        "@badges=broadcaster/1,subscriber/12;bits=100;display-name=Big\\sStreamer;emotes=25:0-4;"
        "mod=0;user-id=42;tmi-sent-ts=1767225600000 :bigstreamer!bigstreamer@x PRIVMSG #bigstreamer :Kappa hi"
    )
    message = parse_privmsg(line, "bigstreamer")
    assert message is not None
    assert message.display_name == "Big Streamer"
    assert message.user_id == "42"
    assert message.is_streamer and not message.is_moderator
    assert message.amount == 100
    assert message.emotes[0].id == "25" and message.emotes[0].code == "Kappa"
    assert message.at.year == 2026
    assert parse_privmsg(IrcLine.parse(":tmi.twitch.tv 001 justinfan1 :Welcome"), "c") is None
    with pytest.raises(ValueError, match="no command"):
        IrcLine.parse("@a=b ")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_twitch_reads_chat_answers_ping_and_reconnects(transport: str) -> None:
    async with TwitchStandIn() as twitch:
        url = twitch.tcp_url if transport == "tcp" else twitch.ws_url
        chat = TwitchChat("Streamer", url, backoff=FAST)
        inbox = Inbox()
        async with running(chat, inbox):
            await twitch.wait_joins(1)
            assert twitch.clients[0].nick.startswith("justinfan")
            assert "twitch.tv/tags" in twitch.clients[0].caps
            await twitch.say("streamer", "viewer", "안녕하세요 hello", user_id="7", display_name="뷰어")
            await twitch.say(
                "streamer", "cheery", "cheer100 great", user_id="8", bits=100, badges="moderator/1", mod=True
            )
            first = await inbox.wait(2)
            assert first[0].platform is Platform.TWITCH and first[0].text == "안녕하세요 hello"
            assert first[0].display_name == "뷰어" and not first[0].is_streamer
            assert first[1].amount == 100 and first[1].is_moderator
            await twitch.ping()
            for _ in range(100):
                if twitch.pongs:
                    break
                await asyncio.sleep(0.02)
            assert twitch.pongs == [":tmi.twitch.tv"]
            assert chat.connects == 1 and chat.state == "connected"
            await twitch.drop_all()
            await twitch.wait_joins(2)
            await twitch.say("streamer", "viewer", "back again", user_id="7")
            assert (await inbox.wait(3))[2].text == "back again"
            assert chat.connects == 2
        state: str = chat.state  # the property changed while the client ran
        assert state == "stopped"


async def test_twitch_backs_off_while_the_server_is_down() -> None:
    chat = TwitchChat("c", "irc://127.0.0.1:9", backoff=Backoff(initial_s=0.05, max_s=0.1))
    async with running(chat, Inbox()):
        await asyncio.sleep(0.3)
        assert chat.state in ("backoff", "connecting") and chat.connects == 0
        assert chat.last_error is not None


# --- Chzzk -----------------------------------------------------------------------------------


def test_chzzk_events_are_parsed() -> None:
    chat = parse_chat(
        {
            "channelId": "chan1",
            "senderChannelId": "chan1",
            "profile": {"nickname": "방장"},
            "userRoleCode": "streamer",
            "content": "hi {:d_1:}",
            "emojis": {"d_1": "https://e/1.png"},
            "messageTime": 1767225600000,
        },
        "chan1",
    )
    assert chat.is_streamer and chat.display_name == "방장" and chat.emotes[0].code == "d_1"
    viewer = parse_chat(
        '{"senderChannelId": "v1", "profile": {"nickname": "시청자"}, '
        '"userRoleCode": "streaming_chat_manager", "content": "x"}',
        "chan1",
    )
    assert not viewer.is_streamer and viewer.is_moderator and viewer.channel == "chan1"
    gift = parse_donation(
        {
            "donatorChannelId": "v2",
            "donatorNickname": "후원자",
            "payAmount": "1000",
            "donationText": "응원해요",
        },
        "chan1",
    )
    assert gift.amount == 1000 and gift.text == "응원해요"
    with pytest.raises(ValueError):
        parse_chat({"profile": {}}, "chan1")
    with pytest.raises(ValueError):
        parse_chat("[1, 2]", "chan1")


def test_chzzk_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="client id"):
        ChzzkChat("chan1", "", "s")
    with pytest.raises(ValueError, match="http"):
        ChzzkChat("chan1", "c", "s", "ftp://x")


async def test_chzzk_session_subscription_messages_and_reconnect() -> None:
    standin = ChzzkStandIn()
    async with running_chzzk(standin) as base:
        chat = ChzzkChat("chan1", "cid", "csecret", base, backoff=FAST)
        inbox = Inbox()
        async with running(chat, inbox):
            await standin.wait_subscriptions(2)
            assert {e for e, _ in standin.subscriptions} == {"chat", "donation"}
            await standin.chat("v1", "시청자", "안녕 아바타")
            await standin.chat("chan1", "방장", "streamer here", role="streamer")
            await standin.donation("v2", "후원자", "노래 불러줘", 5000)
            got = await inbox.wait(3)
            assert [m.text for m in got] == ["안녕 아바타", "streamer here", "노래 불러줘"]
            assert [m.is_streamer for m in got] == [False, True, False]
            assert got[2].amount == 5000 and got[0].platform is Platform.CHZZK
            assert chat.connects == 1
            await standin.drop_all()
            await standin.wait_subscriptions(4)
            await standin.chat("v1", "시청자", "다시 왔어")
            assert (await inbox.wait(4))[3].text == "다시 왔어"
            assert chat.connects == 2 and standin.auth_calls == 2


async def test_chzzk_refreshes_a_refused_user_token() -> None:
    standin = ChzzkStandIn()
    async with running_chzzk(standin) as base:
        chat = ChzzkChat(
            "chan1", "cid", "csecret", base, access_token="access-1", refresh_token="refresh-1", backoff=FAST
        )
        async with running(chat, Inbox()):
            await standin.wait_subscriptions(2)
        assert standin.refreshes == 1


async def test_chzzk_wrong_credentials_back_off() -> None:
    standin = ChzzkStandIn()
    async with running_chzzk(standin) as base:
        chat = ChzzkChat("chan1", "cid", "wrong", base, backoff=FAST)
        async with running(chat, Inbox()):
            await asyncio.sleep(0.3)
            assert chat.connects == 0 and chat.last_error is not None and "401" in chat.last_error
