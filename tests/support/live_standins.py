"""Local stand-ins of the live platforms, speaking each real protocol (docs/live.md, "Tests").

* :class:`TwitchStandIn`: an IRC server in the Twitch manner, over plain TCP (``irc://``) and over
  WebSocket (``ws://``, one IRC line per frame): ``CAP``/``NICK``/``JOIN`` (echoed), ``PRIVMSG`` with
  IRCv3 tags, ``PING``/``PONG``, and a way to drop every connection.
* :class:`ChzzkStandIn`: the Open API's session endpoints over HTTP and a Socket.IO 2 (EIO 3) session
  server (python-socketio 4.x, the protocol generation Chzzk's session servers speak).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import socketio
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from avatar.bench.live import free_port, running_server


@dataclass
class _IrcClient:
    send_line: Any
    close: Any
    nick: str = ""
    channels: set[str] = field(default_factory=set)
    caps: str = ""


class TwitchStandIn:
    """Start with ``async with TwitchStandIn() as twitch``; ``tcp_url`` and ``ws_url`` then work."""

    def __init__(self) -> None:
        self.clients: list[_IrcClient] = []
        self.pongs: list[str] = []
        self.joins = 0
        self._joined = asyncio.Condition()
        self._tcp: asyncio.Server | None = None
        self._ws: Any = None
        self.tcp_url = ""
        self.ws_url = ""

    async def __aenter__(self) -> TwitchStandIn:
        tcp_port, ws_port = free_port(), free_port()
        self._tcp = await asyncio.start_server(self._on_tcp, "127.0.0.1", tcp_port)
        self._ws = await websockets.serve(self._on_ws, "127.0.0.1", ws_port)
        self.tcp_url = f"irc://127.0.0.1:{tcp_port}"
        self.ws_url = f"ws://127.0.0.1:{ws_port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drop_all()
        assert self._tcp is not None
        self._tcp.close()
        await self._tcp.wait_closed()
        self._ws.close()
        await self._ws.wait_closed()

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        async def close() -> None:
            writer.close()

        client = _IrcClient(send, close)
        self.clients.append(client)
        try:
            while raw := await reader.readline():
                await self._handle(client, raw.decode().rstrip("\r\n"))
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients.remove(client)
            writer.close()

    async def _on_ws(self, ws: Any) -> None:
        async def send(line: str) -> None:
            await ws.send(line + "\r\n")

        async def close() -> None:
            await ws.close()

        client = _IrcClient(send, close)
        self.clients.append(client)
        try:
            async for frame in ws:
                for line in str(frame).split("\r\n"):
                    if line:
                        await self._handle(client, line)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.clients.remove(client)

    async def _handle(self, client: _IrcClient, line: str) -> None:
        command, _, rest = line.partition(" ")
        if command == "CAP":
            client.caps = rest.split(":", 1)[-1]
            await client.send_line(f":tmi.twitch.tv CAP * ACK :{client.caps}")
        elif command == "NICK":
            client.nick = rest.strip()
            await client.send_line(f":tmi.twitch.tv 001 {client.nick} :Welcome, GLHF!")
        elif command == "JOIN":
            channel = rest.strip()
            client.channels.add(channel)
            await client.send_line(f":{client.nick}!{client.nick}@{client.nick}.tmi.twitch.tv JOIN {channel}")
            async with self._joined:
                self.joins += 1
                self._joined.notify_all()
        elif command == "PONG":
            self.pongs.append(rest)

    async def wait_joins(self, count: int, within_s: float = 10.0) -> None:
        async with self._joined:
            await asyncio.wait_for(self._joined.wait_for(lambda: self.joins >= count), within_s)

    async def say(
        self,
        channel: str,
        login: str,
        text: str,
        *,
        user_id: str,
        display_name: str | None = None,
        badges: str = "",
        bits: int = 0,
        mod: bool = False,
        emotes: str = "",
    ) -> None:
        """Send ``PRIVMSG #channel`` from ``login`` with Twitch's tags to every joined client."""

        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(";", "\\:").replace(" ", "\\s")

        tags = {
            "badge-info": "",
            "badges": badges,
            "display-name": esc(display_name or login),
            "emotes": emotes,
            "mod": "1" if mod else "0",
            "user-id": user_id,
            "tmi-sent-ts": str(int(time.time() * 1000)),
        }
        if bits:
            tags["bits"] = str(bits)
        tag_text = ";".join(f"{k}={v}" for k, v in tags.items())
        line = f"@{tag_text} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}"
        for client in list(self.clients):
            if f"#{channel}" in client.channels:
                await client.send_line(line)

    async def ping(self) -> None:
        for client in list(self.clients):
            await client.send_line("PING :tmi.twitch.tv")

    async def drop_all(self) -> None:
        """Close every client connection (the clients must reconnect)."""
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                await client.close()


class _Py311Manager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio 4.x's manager passes coroutines to ``asyncio.wait``, which Python 3.11
    refuses; send to each participant in turn instead (stand-in server only)."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        **kwargs: Any,
    ) -> None:
        if namespace not in self.rooms or room not in self.rooms[namespace]:
            return
        for sid in list(self.get_participants(namespace, room)):
            if sid != skip_sid:
                await self.server._emit_internal(sid, event, data, namespace, None)


class ChzzkStandIn:
    """The Open API (``/open/v1/sessions/...``, ``/auth/v1/token``) and its Socket.IO session server."""

    def __init__(
        self, client_id: str = "cid", client_secret: str = "csecret", channel_id: str = "chan1"
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.channel_id = channel_id
        self.sio = socketio.AsyncServer(async_mode="asgi", client_manager=_Py311Manager())
        self.sessions: dict[str, str] = {}  # sid -> session key
        self.subscriptions: list[tuple[str, str]] = []  # (event, session key)
        self.auth_calls = 0
        self.refreshes = 0
        self.valid_access_token = "access-2"
        self.base = ""
        self._subscribed = asyncio.Condition()
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)

    async def _on_connect(self, sid: str, environ: dict[str, Any]) -> bool:
        query = environ.get("QUERY_STRING", "")
        if "auth=ok-" not in query:
            return False
        key = f"key-{sid}"
        self.sessions[sid] = key

        async def announce() -> None:
            await asyncio.sleep(0.05)
            await self.sio.emit(
                "SYSTEM", json.dumps({"type": "connected", "data": {"sessionKey": key}}), to=sid
            )

        asyncio.get_running_loop().create_task(announce())
        return True

    async def _on_disconnect(self, sid: str) -> None:
        self.sessions.pop(sid, None)

    def _client_ok(self, request: Request) -> bool:
        return (
            request.headers.get("Client-Id") == self.client_id
            and request.headers.get("Client-Secret") == self.client_secret
        )

    async def _auth_client(self, request: Request) -> JSONResponse:
        if not self._client_ok(request):
            return JSONResponse({"code": 401, "message": "INVALID_CLIENT"}, status_code=401)
        self.auth_calls += 1
        return JSONResponse(
            {"code": 200, "message": None, "content": {"url": f"{self.base}?auth=ok-{self.auth_calls}"}}
        )

    async def _auth_user(self, request: Request) -> JSONResponse:
        if request.headers.get("Authorization") != f"Bearer {self.valid_access_token}":
            return JSONResponse({"code": 401, "message": "INVALID_TOKEN"}, status_code=401)
        self.auth_calls += 1
        return JSONResponse(
            {"code": 200, "message": None, "content": {"url": f"{self.base}?auth=ok-{self.auth_calls}"}}
        )

    async def _token(self, request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("grantType") != "refresh_token" or body.get("refreshToken") != "refresh-1":
            return JSONResponse({"code": 401, "message": "INVALID_REFRESH"}, status_code=401)
        self.refreshes += 1
        return JSONResponse(
            {
                "code": 200,
                "content": {
                    "accessToken": self.valid_access_token,
                    "refreshToken": "refresh-2",
                    "tokenType": "Bearer",
                    "expiresIn": 86400,
                },
            }
        )

    async def _subscribe(self, request: Request) -> JSONResponse:
        if not self._client_ok(request):
            return JSONResponse({"code": 401}, status_code=401)
        key = request.query_params.get("sessionKey", "")
        if key not in self.sessions.values():
            return JSONResponse({"code": 400, "message": "INVALID_SESSION_KEY"}, status_code=400)
        event = request.path_params["event"]
        async with self._subscribed:
            self.subscriptions.append((event, key))
            self._subscribed.notify_all()
        sid = next(s for s, k in self.sessions.items() if k == key)
        await self.sio.emit(
            "SYSTEM",
            {"type": "subscribed", "data": {"eventType": event.upper(), "channelId": self.channel_id}},
            to=sid,
        )
        return JSONResponse({"code": 200, "message": None})

    async def wait_subscriptions(self, count: int, within_s: float = 10.0) -> None:
        async with self._subscribed:
            await asyncio.wait_for(
                self._subscribed.wait_for(lambda: len(self.subscriptions) >= count), within_s
            )

    def app(self) -> Any:
        api = Starlette(
            routes=[
                Route("/open/v1/sessions/auth/client", self._auth_client),
                Route("/open/v1/sessions/auth", self._auth_user),
                Route("/auth/v1/token", self._token, methods=["POST"]),
                Route("/open/v1/sessions/events/subscribe/{event}", self._subscribe, methods=["POST"]),
            ]
        )
        return socketio.ASGIApp(self.sio, other_asgi_app=api)

    async def chat(
        self,
        sender: str,
        nickname: str,
        text: str,
        *,
        role: str = "common_user",
        emojis: dict[str, str] | None = None,
    ) -> None:
        await self.sio.emit(
            "CHAT",
            {
                "channelId": self.channel_id,
                "senderChannelId": sender,
                "profile": {"nickname": nickname, "badges": [], "verifiedMark": False},
                "userRoleCode": role,
                "content": text,
                "emojis": emojis or {},
                "messageTime": 1767225600000,
            },
        )

    async def donation(self, sender: str, nickname: str, text: str, amount: int) -> None:
        await self.sio.emit(
            "DONATION",
            {
                "donationType": "CHAT",
                "channelId": self.channel_id,
                "donatorChannelId": sender,
                "donatorNickname": nickname,
                "payAmount": str(amount),
                "donationText": text,
                "emojis": {},
            },
        )

    async def drop_all(self) -> None:
        for sid in list(self.sessions):
            await self.sio.disconnect(sid)


@contextlib.asynccontextmanager
async def running_chzzk(standin: ChzzkStandIn) -> AsyncIterator[str]:
    """Serve the stand-in on a free port in this loop; yields its base URL (the ``API_URL``)."""
    port = free_port()
    standin.base = f"http://127.0.0.1:{port}"
    async with running_server(standin.app(), port) as base:
        yield base
