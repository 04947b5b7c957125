"""The live stream's HTTP surface (docs/live.md): the OBS pages and the overlay/stage API.

* ``GET /overlay?key=READ`` and ``GET /stage?key=READ``: pages for OBS browser sources.
* ``GET /api/v1/overlay/state``, ``GET /api/v1/overlay/events`` (server-sent events): read key.
* ``GET /api/v1/live/stage/events`` (SSE) and ``GET /api/v1/live/speech/{id}.wav``: read key.
* ``POST /api/v1/overlay/clear``, ``POST /api/v1/overlay/streamer-chat``, ``GET /api/v1/live/status``,
  ``POST /api/v1/live/pause``, ``POST /api/v1/live/ban``: the operator.
* The director console's (docs/live.md, "Director console"), the operator too:
  ``GET /api/v1/live/queue``, ``POST /api/v1/live/queue/{id}/answer`` and ``.../skip``,
  ``POST /api/v1/live/say``, ``GET /api/v1/live/replies``,
  ``POST /api/v1/live/platforms/{platform}/connect`` and ``.../disconnect``, ``GET /api/v1/live/avatar``.

Who may read and who may operate is decided in exactly two dependencies, :func:`require_reader` and
:func:`require_operator`, so account-based access can replace the keys in one place.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from avatar.application.live.inbox import Incoming
from avatar.application.live.overlay import OverlaySnapshot
from avatar.application.live.service import LiveService, SayLine
from avatar.bootstrap import Container, Services
from avatar.domain.errors import ForbiddenError, NotFoundError, UnauthenticatedError
from avatar.domain.live import Platform
from avatar.domain.models import Emotion
from avatar.presentation.auth import current_user

router = APIRouter(tags=["live"])
_STATIC = Path(__file__).parent / "static"
#: An SSE response ends after this long and ``EventSource`` reconnects by itself: uvicorn waits for
#: open responses before it stops, so this bounds how long a stop waits for an open overlay page.
SSE_LIFETIME_S = 25.0
_SSE_TICK_S = 1.0
_SSE_HEARTBEAT_S = 15.0


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _live(request: Request) -> LiveService:
    live = _services(request).live
    if live is None:
        raise NotFoundError(
            "live mode is off: set AVATAR_LIVE__TWITCH__CHANNEL or AVATAR_LIVE__CHZZK__CHANNEL_ID"
            " (docs/live.md)",
        )
    return live


def _keys(request: Request) -> tuple[str, str]:
    keys = _services(request).live_keys
    if keys is None:
        raise NotFoundError("live mode is off (docs/live.md)")
    return keys


def _offered(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("key")


def _matches(offered: str | None, key: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), key.encode())


def require_reader(request: Request) -> LiveService:
    """The read key (``?key=`` in the OBS URLs, or a bearer token) or the operator key."""
    live = _live(request)
    read, operator = _keys(request)
    offered = _offered(request)
    if offered is None:
        raise UnauthenticatedError("the live key is missing (?key=... or Authorization: Bearer ...)")
    if not (_matches(offered, read) or _matches(offered, operator)):
        raise ForbiddenError("the live key is wrong")
    return live


async def require_operator(request: Request) -> LiveService:
    """The operator key as a bearer token, or an admin account (API key or web sign-in,
    docs/security.md); the read key of the OBS URLs is refused."""
    live = _live(request)
    read, operator = _keys(request)
    auth = request.headers.get("authorization", "")
    offered = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    if offered is not None and _matches(offered, operator):
        return live
    if offered is not None and _matches(offered, read):
        raise ForbiddenError("this key may only read the overlay and the stage")
    user = await current_user(request)
    if not user.is_admin:
        raise ForbiddenError("the live stage is run by an admin or with the operator key")
    return live


Reader = Annotated[LiveService, Depends(require_reader)]
Operator = Annotated[LiveService, Depends(require_operator)]


class StreamerChatToggle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    show: bool


class PauseToggle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paused: bool


class BanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Platform
    user_id: str = Field(min_length=1, max_length=200)


class PlatformPublic(BaseModel):
    platform: str
    state: str
    connects: int
    running: bool


class LiveStatusPublic(BaseModel):
    platforms: list[PlatformPublic]
    queued: int
    paused: bool
    replies: int


class SpeechPublic(BaseModel):
    id: int
    turn_id: str | None
    to_user: str
    text: str
    emotion: str
    duration_s: float
    audio_url: str
    at: datetime


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((_STATIC / name).read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


@router.get("/overlay", response_class=HTMLResponse, include_in_schema=False)
async def overlay_page(_live: Reader) -> HTMLResponse:
    return _page("overlay.html")


@router.get("/stage", response_class=HTMLResponse, include_in_schema=False)
async def stage_page(_live: Reader) -> HTMLResponse:
    return _page("stage.html")


@router.get("/api/v1/overlay/state", response_model=OverlaySnapshot)
async def overlay_state(live: Reader) -> OverlaySnapshot:
    return live.overlay.snapshot(datetime.now(UTC))


@router.post("/api/v1/overlay/clear", response_model=OverlaySnapshot)
async def overlay_clear(live: Operator) -> OverlaySnapshot:
    live.overlay.clear()
    return live.overlay.snapshot(datetime.now(UTC))


@router.post("/api/v1/overlay/streamer-chat", response_model=OverlaySnapshot)
async def overlay_streamer_chat(body: StreamerChatToggle, live: Operator) -> OverlaySnapshot:
    live.overlay.set_show_streamer_chat(body.show)
    return live.overlay.snapshot(datetime.now(UTC))


@router.get("/api/v1/live/status", response_model=LiveStatusPublic)
async def live_status(live: Operator) -> LiveStatusPublic:
    return LiveStatusPublic(
        platforms=[
            PlatformPublic(platform=s.platform, state=s.state, connects=s.connects, running=s.running)
            for s in live.status()
        ],
        queued=len(live.queue),
        paused=live.paused,
        replies=len(live.speeches),
    )


@router.post("/api/v1/live/pause", response_model=LiveStatusPublic)
async def live_pause(body: PauseToggle, live: Operator) -> LiveStatusPublic:
    live.set_paused(body.paused)
    return await live_status(live)


@router.post("/api/v1/live/ban", status_code=204)
async def live_ban(body: BanRequest, live: Operator) -> Response:
    live.ban(f"{body.platform.value}:{body.user_id}")
    return Response(status_code=204)


class SayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=500, pattern=r"\S")
    emotion: Emotion = Emotion.NEUTRAL


class IncomingPublic(BaseModel):
    """A chat message in the director console: the filters' verdict and what became of it."""

    id: int
    platform: str
    user_id: str
    user: str
    text: str
    amount: int
    is_streamer: bool
    is_moderator: bool
    verdict: str | None
    status: str
    reason: str | None
    turn_id: str | None
    at: datetime


class QueuePublic(BaseModel):
    messages: list[IncomingPublic]
    queued: int
    paused: bool


class ReplyPublic(BaseModel):
    id: int
    turn_id: str | None
    to_user: str
    text: str
    emotion: str
    at: datetime


class RepliesPublic(BaseModel):
    replies: list[ReplyPublic]


class AvatarControlPublic(BaseModel):
    """The VTube Studio bridge as the console shows it (docs/avatar-control.md)."""

    enabled: bool
    state: str
    connected: bool
    authenticated: bool
    model_loaded: bool
    model_name: str
    last_error: str
    #: The avatar follows the live stage now (not a conversation).
    follows_live: bool


def _incoming(entry: Incoming) -> IncomingPublic:
    m = entry.message
    return IncomingPublic(
        id=entry.id,
        platform=m.platform.value,
        user_id=m.user_id,
        user=m.display_name,
        text=m.text,
        amount=m.amount,
        is_streamer=m.is_streamer,
        is_moderator=m.is_moderator,
        verdict=entry.verdict.value if entry.verdict else None,
        status=entry.status,
        reason=entry.reason.value if entry.reason else None,
        turn_id=str(entry.turn_id) if entry.turn_id else None,
        at=entry.received,
    )


@router.get("/api/v1/live/queue", response_model=QueuePublic)
async def live_queue(live: Operator) -> QueuePublic:
    """The latest chat messages, newest last, with the filters' verdicts."""
    return QueuePublic(
        messages=[_incoming(e) for e in live.inbox.entries()], queued=len(live.queue), paused=live.paused
    )


@router.post("/api/v1/live/queue/{entry_id}/answer", response_model=IncomingPublic, status_code=202)
async def live_answer(entry_id: int, live: Operator) -> IncomingPublic:
    """Answer this message next (even one the filters or the pause held back)."""
    return _incoming(live.pick(entry_id))


@router.post("/api/v1/live/queue/{entry_id}/skip", response_model=IncomingPublic)
async def live_skip(entry_id: int, live: Operator) -> IncomingPublic:
    return _incoming(live.skip(entry_id))


@router.post("/api/v1/live/say", status_code=202)
async def live_say(body: SayRequest, live: Operator) -> Response:
    """The avatar says this line as it is, after the reply being spoken."""
    live.say(SayLine(body.text.strip(), body.emotion))
    return Response(status_code=202)


@router.get("/api/v1/live/replies", response_model=RepliesPublic)
async def live_replies(live: Operator) -> RepliesPublic:
    """The last spoken replies (their turn ids are what ``POST /api/v1/turns/{id}/feedback`` rates)."""
    return RepliesPublic(
        replies=[
            ReplyPublic(
                id=s.id,
                turn_id=str(s.turn_id) if s.turn_id else None,
                to_user=s.to_user,
                text=s.text,
                emotion=s.emotion.value,
                at=s.at,
            )
            for s in live.speeches
        ]
    )


@router.post("/api/v1/live/platforms/{platform}/connect", response_model=LiveStatusPublic)
async def live_connect(platform: Platform, live: Operator) -> LiveStatusPublic:
    live.connect(platform)
    return await live_status(live)


@router.post("/api/v1/live/platforms/{platform}/disconnect", response_model=LiveStatusPublic)
async def live_disconnect(platform: Platform, live: Operator) -> LiveStatusPublic:
    await live.disconnect(platform)
    return await live_status(live)


@router.get("/api/v1/live/avatar", response_model=AvatarControlPublic)
async def live_avatar(request: Request, live: Operator) -> AvatarControlPublic:
    container: Container = request.app.state.container
    hub = _services(request).avatar_hub
    follows = live.session_id is not None and hub.stage_id == live.session_id
    bridge = container.vtube_studio
    if bridge is None:
        return AvatarControlPublic(
            enabled=False,
            state="off",
            connected=False,
            authenticated=False,
            model_loaded=False,
            model_name="",
            last_error="",
            follows_live=follows,
        )
    s = bridge.status
    return AvatarControlPublic(
        enabled=True,
        state=s.state,
        connected=s.connected,
        authenticated=s.authenticated,
        model_loaded=s.model_loaded,
        model_name=s.model_name,
        last_error=s.last_error,
        follows_live=follows,
    )


def _speech_public(request: Request, live: LiveService, index: int) -> SpeechPublic:
    s = live.speeches[index]
    key = request.query_params.get("key", "")
    return SpeechPublic(
        id=s.id,
        turn_id=str(s.turn_id) if s.turn_id else None,
        to_user=s.to_user,
        text=s.text,
        emotion=s.emotion.value,
        duration_s=s.duration_s,
        audio_url=f"/api/v1/live/speech/{s.id}.wav?key={key}",
        at=s.at,
    )


@router.get("/api/v1/live/speech/{speech_id}.wav")
async def speech_audio(speech_id: int, live: Reader) -> Response:
    for speech in live.speeches:
        if speech.id == speech_id:
            return Response(speech.wav, media_type="audio/wav", headers={"Cache-Control": "no-store"})
    raise NotFoundError(f"speech {speech_id} is not kept any more (the last 20 are)")


def _draining(request: Request) -> bool:
    drain = getattr(request.app.state, "drain", None)
    return bool(getattr(drain, "draining", False))


def _sse(data: str, event: str | None = None, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    if event_id is not None:
        head += f"id: {event_id}\n"
    return f"{head}data: {data}\n\n".encode()


@router.get("/api/v1/overlay/events")
async def overlay_events(request: Request, live: Reader) -> StreamingResponse:
    """Server-sent events: the whole overlay state at once and after every change."""

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + SSE_LIFETIME_S
        seen = -1
        quiet_since = loop.time()
        yield b"retry: 1000\n\n"
        while loop.time() < ends and not _draining(request) and not await request.is_disconnected():
            if live.overlay.version != seen:
                seen = live.overlay.version
                yield _sse(live.overlay.snapshot(datetime.now(UTC)).model_dump_json(), "state")
                quiet_since = loop.time()
            elif loop.time() - quiet_since > _SSE_HEARTBEAT_S:
                yield b": keep-alive\n\n"
                quiet_since = loop.time()
            await live.overlay.wait_change(seen, _SSE_TICK_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/api/v1/live/stage/events")
async def stage_events(request: Request, live: Reader) -> StreamingResponse:
    """Server-sent events: each new spoken reply (its text, emotion and WAV URL) as it is ready."""

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + SSE_LIFETIME_S
        seen = live.speeches[-1].id if live.speeches else 0
        # A reconnecting EventSource says what it saw last; a page may ask to replay from an id.
        resume = request.headers.get("last-event-id") or request.query_params.get("since", "")
        if resume.isdigit():
            seen = int(resume)
        yield b"retry: 1000\n\n"
        while loop.time() < ends and not _draining(request) and not await request.is_disconnected():
            for i, speech in enumerate(live.speeches):
                if speech.id > seen:
                    seen = speech.id
                    yield _sse(_speech_public(request, live, i).model_dump_json(), "speech", speech.id)
            await live.wait_speech(seen, _SSE_TICK_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


__all__ = ["require_operator", "require_reader", "router"]
