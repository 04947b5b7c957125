"""Twitch chat over its IRC interface, read-only and anonymous (docs/live.md, "Twitch").

The client logs in as ``justinfan<digits>`` (no app, no token), asks for the ``tags`` and
``commands`` capabilities, joins ``#channel`` and turns each ``PRIVMSG`` into a
:class:`ChatMessage` (``display-name``, ``user-id``, ``badges``, ``mod``, ``bits``, ``emotes``,
``tmi-sent-ts`` tags). It answers ``PING`` with ``PONG``, follows ``RECONNECT``, and reconnects
with exponential backoff after any drop. URLs: ``wss://``/``ws://`` (IRC over WebSocket, one or
more lines per frame) or ``irc://host:port`` (plain TCP).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import websockets

from avatar.application.ports.chat import ChatSink
from avatar.domain.live import ChatMessage, Emote, Platform
from avatar.infrastructure.live.backoff import Backoff, Reconnecting

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://irc-ws.chat.twitch.tv:443"
_TAG_ESCAPES = {"s": " ", ":": ";", "\\": "\\", "r": "\r", "n": "\n"}


class TwitchProtocolError(ValueError):
    """A line that is not valid IRC."""


def check_url(url: str) -> str:
    """Return ``url`` if the client can open it.

    Raises:
        ValueError: Not ``ws://``, ``wss://`` or ``irc://host:port``.
    """
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss") and parts.hostname:
        return url
    if parts.scheme == "irc" and parts.hostname and parts.port:
        return url
    raise ValueError(f"Twitch chat URL {url!r} must be ws://, wss:// or irc://host:port")


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(_TAG_ESCAPES.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        if ch != "\\":
            out.append(ch)
        i += 1
    return "".join(out)


class IrcLine:
    """One parsed IRC line: tags, prefix, command and params (the last may contain spaces)."""

    __slots__ = ("command", "params", "prefix", "tags")

    def __init__(self, tags: dict[str, str], prefix: str, command: str, params: list[str]) -> None:
        self.tags = tags
        self.prefix = prefix
        self.command = command
        self.params = params

    @classmethod
    def parse(cls, line: str) -> IrcLine:
        rest = line.rstrip("\r\n")
        tags: dict[str, str] = {}
        if rest.startswith("@"):
            raw, _, rest = rest[1:].partition(" ")
            for item in raw.split(";"):
                key, _, value = item.partition("=")
                tags[key] = _unescape(value)
        prefix = ""
        if rest.startswith(":"):
            prefix, _, rest = rest[1:].partition(" ")
        head, sep, trailing = rest.partition(" :")
        words = head.split()
        if not words:
            raise TwitchProtocolError(f"no command in IRC line {line!r}")
        params = words[1:] + ([trailing] if sep else [])
        return cls(tags, prefix, words[0].upper(), params)


def _emotes(tag: str, text: str) -> tuple[Emote, ...]:
    """``25:0-4,6-10/1902:12-16`` -> emotes with the text they cover (code-point positions)."""
    found: list[Emote] = []
    for group in filter(None, tag.split("/")):
        emote_id, _, spans = group.partition(":")
        first = spans.split(",")[0]
        start, _, end = first.partition("-")
        if start.isdigit() and end.isdigit():
            found.append(Emote(id=emote_id, code=text[int(start) : int(end) + 1]))
    return tuple(found)


def _int(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def parse_privmsg(line: IrcLine, channel: str) -> ChatMessage | None:
    """A ``PRIVMSG`` to ``#channel`` as a chat message, or ``None`` for anything else."""
    if line.command != "PRIVMSG" or len(line.params) < 2:
        return None
    text = line.params[1]
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):
        text = text[8:-1]
    tags = line.tags
    login = line.prefix.split("!", 1)[0]
    badges = {b.split("/", 1)[0] for b in tags.get("badges", "").split(",") if b}
    sent_ms = _int(tags.get("tmi-sent-ts"))
    at = datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else datetime.now(UTC)
    return ChatMessage(
        platform=Platform.TWITCH,
        channel=channel,
        user_id=tags.get("user-id") or login,
        display_name=tags.get("display-name") or login,
        text=text,
        emotes=_emotes(tags.get("emotes", ""), text),
        is_streamer="broadcaster" in badges or login == channel,
        is_moderator=tags.get("mod") == "1" or "moderator" in badges,
        amount=_int(tags.get("bits")),
        at=at,
    )


class _Lines(Protocol):
    def lines(self) -> AsyncIterator[str]: ...

    async def send(self, line: str) -> None: ...

    async def close(self) -> None: ...


class _WebSocketLines:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self._ws = ws

    async def lines(self) -> AsyncIterator[str]:
        async for frame in self._ws:
            text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
            for line in text.split("\r\n"):
                if line:
                    yield line

    async def send(self, line: str) -> None:
        await self._ws.send(line)

    async def close(self) -> None:
        await self._ws.close()


class _TcpLines:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def lines(self) -> AsyncIterator[str]:
        while raw := await self._reader.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                yield line

    async def send(self, line: str) -> None:
        self._writer.write(line.encode() + b"\r\n")
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass


class TwitchChat(Reconnecting):
    """Satisfies :class:`avatar.application.ports.chat.ChatSource` for one Twitch channel."""

    def __init__(
        self,
        channel: str,
        url: str = DEFAULT_URL,
        *,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        channel = channel.strip().lstrip("#").lower()
        if not channel:
            raise ValueError("a Twitch channel name is required")
        super().__init__(backoff)
        self.channel = channel
        self.url = check_url(url)
        self._timeout = connect_timeout_s

    @property
    def platform(self) -> Platform:
        return Platform.TWITCH

    async def _open(self) -> _Lines:
        parts = urlsplit(self.url)
        if parts.scheme == "irc":
            assert parts.hostname is not None and parts.port is not None  # checked in __init__
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            return _TcpLines(reader, writer)
        return _WebSocketLines(await websockets.connect(self.url, open_timeout=self._timeout))

    async def run(self, sink: ChatSink) -> None:
        await self._reconnect_forever(
            lambda: self._session(sink),
            (OSError, TimeoutError, websockets.WebSocketException, TwitchProtocolError),
            label=f"Twitch chat #{self.channel}",
            ended="server closed the connection",
        )

    async def _session(self, sink: ChatSink) -> None:
        conn = await asyncio.wait_for(self._open(), self._timeout)
        try:
            await conn.send("CAP REQ :twitch.tv/tags twitch.tv/commands")
            await conn.send(f"NICK justinfan{random.randint(10000, 99999)}")
            await conn.send(f"JOIN #{self.channel}")
            async for raw in conn.lines():
                line = IrcLine.parse(raw)
                if line.command == "PING":
                    await conn.send(f"PONG :{line.params[-1] if line.params else 'tmi.twitch.tv'}")
                elif line.command == "JOIN" and line.params and line.params[0] == f"#{self.channel}":
                    if self._state != "connected":
                        self._connected()
                        log.info("Twitch chat #%s joined", self.channel)
                elif line.command == "RECONNECT":
                    return
                elif line.command == "NOTICE" and "authentication failed" in " ".join(line.params).lower():
                    raise TwitchProtocolError("login refused: " + line.params[-1])
                else:
                    message = parse_privmsg(line, self.channel)
                    if message is not None:
                        await sink(message)
        finally:
            await conn.close()
