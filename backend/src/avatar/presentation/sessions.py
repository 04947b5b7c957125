"""REST for sessions: create (with a WebSocket URL and token), list, read, and a session's turns."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request

from avatar.application.conversation import SessionManager, issue_token, transcription_id_for
from avatar.application.ports.storage import ObjectStore
from avatar.bootstrap import Services
from avatar.domain.errors import InvalidInputError
from avatar.domain.models import Session
from avatar.domain.storage_keys import RAW_INPUTS, SYNTHESIZED, VOICE_PROFILES
from avatar.presentation.accounts import ErasurePublic
from avatar.presentation.auth import CallerDep
from avatar.presentation.deps import ContainerDep, ServicesDep, SettingsDep
from avatar.presentation.ownership import owner_filter, visible_session
from avatar.presentation.schemas import (
    AudioPublic,
    SessionCreate,
    SessionCreated,
    SessionList,
    SessionPublic,
    TranscriptionPublic,
    TurnList,
    TurnPublic,
)

router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])

#: Key prefixes of the object layout (docs/design-notes.md §5); a stored URL is mapped back to its key
#: by them.
_KEY_PREFIXES = (RAW_INPUTS, SYNTHESIZED, VOICE_PROFILES)


def _manager(request: Request) -> SessionManager:
    services: Services = request.app.state.services
    return services.sessions


def parse_session_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{raw!r} is not a session id (a UUID)") from exc


def object_key(url: str) -> str | None:
    """The object-store key inside a stored URL (``s3://bucket/key``, ``file:///root/key``)."""
    positions = [url.find(p) for p in _KEY_PREFIXES if p in url]
    return url[min(positions) :] if positions else None


async def presign(store: ObjectStore, url: str | None) -> str | None:
    if not url:
        return None
    key = object_key(url)
    return await store.presigned_url(key) if key else None


def _public(session: Session, manager: SessionManager) -> SessionPublic:
    return SessionPublic(
        session_id=session.session_id,
        status=session.status.value,
        start_time=session.start_time,
        end_time=session.end_time,
        metadata=dict(session.metadata),
        live=manager.is_live(session.session_id),
    )


def ws_url_for(request: Request, public_url: str | None, session_id: uuid.UUID, token: str) -> str:
    base = (public_url or str(request.base_url)).rstrip("/")
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    return f"{ws_scheme}://{rest}/ws/{session_id}?token={token}&v=1"


@router.post("", status_code=201, response_model=SessionCreated)
async def create_session(
    request: Request,
    container: ContainerDep,
    settings: SettingsDep,
    services: ServicesDep,
    user: CallerDep,
    body: Annotated[SessionCreate | None, Body()] = None,
) -> SessionCreated:
    """Create a conversation of the caller; refused with 503 ``BUSY`` at the session limit (or
    ``USER_BUSY`` at the caller's), 429 ``RATE_LIMITED`` past the creation rate of the caller or
    its address (docs/security.md, "Admission")."""
    manager = _manager(request)
    manager.check_capacity()
    manager.check_user_capacity(user.user_id)
    services.admission.admit_creation(user.user_id, request.client.host if request.client else None)
    session = Session.start(container.clock.now(), (body.metadata if body else None), owner_id=user.user_id)
    async with container.uow() as tx:
        await tx.sessions.add(session)
        await tx.commit()
    ttl = settings.security.session_token_ttl_s
    now = time.time()
    token = issue_token(settings.security.signing_keys(), session.session_id, now, ttl)
    return SessionCreated(
        session_id=session.session_id,
        token=token,
        ws_url=ws_url_for(request, settings.server.public_url, session.session_id, token),
        expires_at=datetime.fromtimestamp(int(now) + ttl, UTC),
    )


@router.get("", response_model=SessionList)
async def list_sessions(
    request: Request,
    container: ContainerDep,
    user: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    all_users: Annotated[bool, Query(description="Everyone's sessions (admins only)")] = False,
) -> SessionList:
    """The caller's most recent sessions (newest first), for the history view."""
    async with container.uow() as tx:
        sessions = await tx.sessions.list_recent(limit, owner_filter(user, all_users))
    manager = _manager(request)
    return SessionList(sessions=[_public(s, manager) for s in sessions])


@router.get("/{session_id}", response_model=SessionPublic)
async def get_session(
    session_id: str, request: Request, container: ContainerDep, services: ServicesDep, user: CallerDep
) -> SessionPublic:
    sid = parse_session_id(session_id)
    session = await visible_session(container, services, sid, user, "session.read")
    return _public(session, _manager(request))


@router.delete("/{session_id}", response_model=ErasurePublic)
async def delete_session(
    session_id: str, container: ContainerDep, services: ServicesDep, user: CallerDep
) -> ErasurePublic:
    """Delete a conversation with its turns, audio, memories, prosody and summary."""
    sid = parse_session_id(session_id)
    await visible_session(container, services, sid, user, "session.delete")
    return ErasurePublic.of(await services.eraser.erase_session(sid))


@router.get("/{session_id}/turns", response_model=TurnList)
async def list_turns(
    session_id: str, container: ContainerDep, services: ServicesDep, user: CallerDep
) -> TurnList:
    """Every turn with its transcription and audio (presigned URLs valid 1 h, issued only to the
    session's owner or an admin)."""
    sid = parse_session_id(session_id)
    await visible_session(container, services, sid, user, "session.turns.read")
    store = container.object_store
    async with container.uow() as tx:
        turns = await tx.turns.list_for_session(sid)
        rows = []
        for turn in turns:
            tr_id = transcription_id_for(turn.turn_id)
            rows.append(
                (
                    turn,
                    await tx.transcriptions.get(tr_id),
                    await tx.transcriptions.audio_url(tr_id),
                    await tx.transcriptions.audio_expired_at(tr_id),
                    await tx.synthesized.list_for_turn(turn.turn_id),
                )
            )
    out = []
    for turn, transcription, input_url, input_expired, audios in rows:
        tr = None
        if transcription is not None:
            # Audio past its retention is gone; the turn stays and says so (docs/security.md).
            tr = TranscriptionPublic(
                transcription_id=transcription.transcription_id,
                text=transcription.text,
                confidence=transcription.confidence,
                language=transcription.language,
                low_confidence=transcription.low_confidence,
                latency_ms=transcription.latency_ms,
                audio_url=None if input_expired else await presign(store, input_url),
                audio_expired=input_expired is not None,
            )
        audio = [
            AudioPublic(
                audio_id=a.audio_id,
                mode=a.mode.value,
                url="" if a.expired_at else await presign(store, a.audio_url) or "",
                expired=a.expired_at is not None,
                duration_sec=a.duration_sec,
                synthesis_time_ms=a.synthesis_time_ms,
                engine=a.engine,
                voice=a.voice,
            )
            for a in audios
        ]
        out.append(
            TurnPublic(
                turn_id=turn.turn_id,
                turn_number=turn.turn_number,
                user_input=turn.user_input,
                ai_response=turn.ai_response,
                emotion=turn.emotion.value,
                interrupted=turn.interrupted,
                stage_latency_ms=dict(turn.stage_latency_ms),
                created_at=turn.created_at,
                transcription=tr,
                audio=audio,
            )
        )
    return TurnList(session_id=sid, turns=out)
