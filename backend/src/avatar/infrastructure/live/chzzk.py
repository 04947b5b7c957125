"""Chzzk chat through its official Open API sessions (docs/live.md, "Chzzk").

1. A session URL: ``GET /open/v1/sessions/auth/client`` with the app's ``Client-Id`` and
   ``Client-Secret`` headers, or, when a user access token is configured, ``GET
   /open/v1/sessions/auth`` with it (refreshed through ``POST /auth/v1/token`` when refused).
2. A Socket.IO connection to that URL (websocket transport; the session server speaks Socket.IO 2,
   so the 4.x client of python-socketio is used); the server's ``SYSTEM`` event ``connected``
   carries the session key.
3. ``POST /open/v1/sessions/events/subscribe/chat?sessionKey=...`` (and ``.../donation``).
4. ``CHAT`` and ``DONATION`` events become :class:`ChatMessage`; the streamer is the sender whose
   channel is the stream's. Any drop: a new session URL (a fresh auth) after an exponential backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import engineio.asyncio_client
import httpx
import socketio
from pydantic import BaseModel, Field, ValidationError

from avatar.application.ports.chat import ChatSink
from avatar.domain.live import ChatMessage, Emote, Platform
from avatar.infrastructure.live.backoff import Backoff, Reconnecting

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://openapi.chzzk.naver.com"
_MANAGER_ROLES = {"streaming_channel_manager", "streaming_chat_manager", "streaming_channel_owner"}

# engineio 3 installs its own SIGINT handler that stops the event loop; the server's own
# shutdown handling must stay in charge, so mark it as already installed.
engineio.asyncio_client.async_signal_handler_set = True


class ChzzkError(RuntimeError):
    """The Open API refused a request or answered something unexpected."""


class _Profile(BaseModel):
    nickname: str = ""
    badges: list[Any] = Field(default_factory=list)


class ChzzkChatEvent(BaseModel):
    """The ``CHAT`` event's fields this client reads."""

    channelId: str = ""
    senderChannelId: str
    profile: _Profile = Field(default_factory=_Profile)
    userRoleCode: str = ""
    content: str = ""
    emojis: dict[str, str] = Field(default_factory=dict)
    messageTime: int = 0


class ChzzkDonationEvent(BaseModel):
    """The ``DONATION`` event's fields this client reads."""

    channelId: str = ""
    donatorChannelId: str = ""
    donatorNickname: str = ""
    payAmount: int | str = 0
    donationText: str = ""
    emojis: dict[str, str] = Field(default_factory=dict)


def _payload(data: Any) -> dict[str, Any]:
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError(f"expected an object, got {type(data).__name__}")
    return data


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms > 0 else datetime.now(UTC)


def parse_chat(data: Any, channel_id: str) -> ChatMessage:
    """A ``CHAT`` event as a chat message.

    Raises:
        ValueError: The payload is not a chat event (the message says what is wrong).
    """
    event = ChzzkChatEvent.model_validate(_payload(data))
    return ChatMessage(
        platform=Platform.CHZZK,
        channel=event.channelId or channel_id,
        user_id=event.senderChannelId,
        display_name=event.profile.nickname or event.senderChannelId,
        text=event.content,
        emotes=tuple(Emote(id=url, code=name) for name, url in event.emojis.items()),
        is_streamer=event.senderChannelId == channel_id or event.userRoleCode == "streamer",
        is_moderator=event.userRoleCode in _MANAGER_ROLES,
        at=_when(event.messageTime),
    )


def parse_donation(data: Any, channel_id: str) -> ChatMessage:
    """A ``DONATION`` event as a chat message with its amount (KRW)."""
    event = ChzzkDonationEvent.model_validate(_payload(data))
    amount = int(event.payAmount) if str(event.payAmount).isdigit() else 0
    user = event.donatorChannelId or "anonymous"
    return ChatMessage(
        platform=Platform.CHZZK,
        channel=event.channelId or channel_id,
        user_id=user,
        display_name=event.donatorNickname or "익명",
        text=event.donationText,
        emotes=tuple(Emote(id=url, code=name) for name, url in event.emojis.items()),
        is_streamer=user == channel_id,
        amount=amount,
        at=datetime.now(UTC),
    )


class ChzzkChat(Reconnecting):
    """Satisfies :class:`avatar.application.ports.chat.ChatSource` for one Chzzk channel."""

    def __init__(
        self,
        channel_id: str,
        client_id: str,
        client_secret: str,
        api_url: str = DEFAULT_API_URL,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        backoff: Backoff | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not channel_id or not client_id or not client_secret:
            raise ValueError("Chzzk needs a channel id, a client id and a client secret")
        if not api_url.startswith(("http://", "https://")):
            raise ValueError(f"Chzzk API URL {api_url!r} must be http:// or https://")
        super().__init__(backoff)
        self.channel_id = channel_id
        self._client_id = client_id
        self._client_secret = client_secret
        self.api_url = api_url.rstrip("/")
        self._access_token = access_token
        self._refresh_token = refresh_token
        self._timeout = timeout_s

    @property
    def platform(self) -> Platform:
        return Platform.CHZZK

    def _headers(self) -> dict[str, str]:
        headers = {"Client-Id": self._client_id, "Client-Secret": self._client_secret}
        if self._access_token:
            headers["Authorization"] = f"Bearer {self._access_token}"
        return headers

    async def _call(self, http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = await http.request(method, self.api_url + path, headers=self._headers(), **kw)
        if response.status_code == 401 and self._refresh_token:
            await self._refresh(http)
            response = await http.request(method, self.api_url + path, headers=self._headers(), **kw)
        if response.status_code != 200:
            raise ChzzkError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        content = body.get("content") if isinstance(body, dict) else None
        return content if isinstance(content, dict) else {}

    async def _refresh(self, http: httpx.AsyncClient) -> None:
        """Trade the refresh token for a new access token (both are replaced)."""
        response = await http.post(
            self.api_url + "/auth/v1/token",
            json={
                "grantType": "refresh_token",
                "refreshToken": self._refresh_token,
                "clientId": self._client_id,
                "clientSecret": self._client_secret,
            },
        )
        content = response.json().get("content") if response.status_code == 200 else None
        if not isinstance(content, dict) or not content.get("accessToken"):
            raise ChzzkError(f"token refresh refused: HTTP {response.status_code}")
        self._access_token = str(content["accessToken"])
        self._refresh_token = str(content.get("refreshToken") or self._refresh_token)
        log.info("Chzzk access token refreshed")

    async def session_url(self, http: httpx.AsyncClient) -> str:
        path = "/open/v1/sessions/auth" if self._access_token else "/open/v1/sessions/auth/client"
        url = (await self._call(http, "GET", path)).get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChzzkError(f"GET {path}: no session URL in the answer")
        return url

    async def run(self, sink: ChatSink) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            await self._reconnect_forever(
                lambda: self._session(http, sink),
                (OSError, TimeoutError, httpx.HTTPError, ChzzkError, socketio.exceptions.SocketIOError),
                label=f"Chzzk chat {self.channel_id}",
                ended="session closed",
            )

    async def _session(self, http: httpx.AsyncClient, sink: ChatSink) -> None:
        url = await self.session_url(http)
        client = socketio.AsyncClient(reconnection=False)
        session_key: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_system(data: Any) -> None:
            try:
                payload = _payload(data)
            except ValueError:
                log.warning("Chzzk: unreadable SYSTEM event")
                return
            inner = payload.get("data") if isinstance(payload.get("data"), dict) else {}
            if payload.get("type") == "connected" and not session_key.done():
                key = inner.get("sessionKey") if isinstance(inner, dict) else None
                if isinstance(key, str) and key:
                    session_key.set_result(key)
            elif payload.get("type") == "revoked":
                log.warning("Chzzk: subscription revoked: %s", inner)
                await client.disconnect()

        async def on_chat(data: Any) -> None:
            await self._deliver(parse_chat, data, sink)

        async def on_donation(data: Any) -> None:
            await self._deliver(parse_donation, data, sink)

        client.on("SYSTEM", on_system)
        client.on("CHAT", on_chat)
        client.on("DONATION", on_donation)
        try:
            await asyncio.wait_for(client.connect(url, transports=["websocket"]), self._timeout)
            key = await asyncio.wait_for(session_key, self._timeout)
            for event in ("chat", "donation"):
                await self._call(
                    http, "POST", f"/open/v1/sessions/events/subscribe/{event}", params={"sessionKey": key}
                )
            self._connected()
            log.info("Chzzk chat %s subscribed", self.channel_id)
            await client.wait()
        finally:
            if client.connected:
                await client.disconnect()
            if client.eio.http is not None and not client.eio.http.closed:
                await client.eio.http.close()

    async def _deliver(self, parse: Any, data: Any, sink: ChatSink) -> None:
        try:
            message: ChatMessage = parse(data, self.channel_id)
        except (ValueError, ValidationError) as exc:
            log.warning("Chzzk: event skipped: %s", exc)
            return
        await sink(message)
