"""``/api/v1/voice-profiles``: upload, list, get, delete, preview and similar-voice search.

The flow and the API are in docs/design-notes.md §4 and §6.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from avatar.application.voice_profiles import (
    ClippedSampleError,
    SampleTooLargeError,
    SampleTooLongError,
    SampleTooShortError,
    SilentSampleError,
    UnsupportedFormatError,
    VoiceProfileService,
    VoiceSampleError,
)
from avatar.bootstrap import Services
from avatar.domain.models import TTSMode, VoiceProfile
from avatar.presentation.auth import CallerDep
from avatar.presentation.deps import ServicesDep
from avatar.presentation.errors import error_body
from avatar.presentation.ownership import audit_if_foreign, owner_filter

router = APIRouter(prefix="/api/v1/voice-profiles", tags=["voice profiles"])

#: HTTP status per sample problem; anything else about a sample is a 422.
_SAMPLE_STATUS: dict[type[VoiceSampleError], int] = {
    SampleTooLargeError: 413,
    UnsupportedFormatError: 415,
    SampleTooShortError: 422,
    SampleTooLongError: 422,
    SilentSampleError: 422,
    ClippedSampleError: 422,
}
_EXPOSED_HEADERS = "X-Voice-Engine, X-Voice-Name, X-Voice-Mode, X-Voice-Notice, X-Voice-Substituted"


class VoiceProfilePublic(BaseModel):
    profile_id: uuid.UUID
    name: str
    duration_sec: float
    sample_rate: int
    transcript: str
    created_at: datetime | None
    audio_path: str = Field(description="Where to fetch the stored sample (16-bit WAV)")
    metadata: dict[str, object]

    @classmethod
    def of(cls, profile: VoiceProfile) -> VoiceProfilePublic:
        return cls(
            profile_id=profile.profile_id,
            name=profile.name,
            duration_sec=profile.duration_sec,
            sample_rate=profile.sample_rate,
            transcript=profile.transcript,
            created_at=profile.created_at,
            audio_path=f"{router.prefix}/{profile.profile_id}/audio",
            metadata=dict(profile.metadata),
        )


class VoiceProfileList(BaseModel):
    profiles: list[VoiceProfilePublic]


class SimilarVoicePublic(BaseModel):
    profile: VoiceProfilePublic
    similarity: float = Field(description="Cosine similarity of the speaker embeddings, -1..1")


class SimilarVoices(BaseModel):
    results: list[SimilarVoicePublic]


class PreviewRequest(BaseModel):
    text: str = Field(min_length=1, max_length=500)
    mode: Literal["fast", "hq"] = "hq"


class VoiceProfileDeleted(BaseModel):
    profile_id: uuid.UUID
    deleted_objects: int


def get_service(request: Request) -> VoiceProfileService:
    services: Services = request.app.state.services
    return services.voice_profiles


ServiceDep = Annotated[VoiceProfileService, Depends(get_service)]


def _sample_error(exc: VoiceSampleError) -> JSONResponse:
    status = next((s for kind, s in _SAMPLE_STATUS.items() if isinstance(exc, kind)), 422)
    return JSONResponse(error_body(exc.code, exc.message), status_code=status)


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    # Read one byte past the limit: enough to know it is too large without holding all of it.
    return await upload.read(limit + 1)


@router.post("", status_code=201, response_model=VoiceProfilePublic)
async def create_voice_profile(
    service: ServiceDep,
    user: CallerDep,
    audio: Annotated[UploadFile, File(description="5-30 s of one speaker: wav, flac, mp3, ogg, webm")],
    name: Annotated[str, Form(min_length=1, max_length=100)],
    transcript: Annotated[str | None, Form(max_length=2000)] = None,
) -> VoiceProfilePublic | JSONResponse:
    data = await _read_limited(audio, service.limits.max_bytes)
    try:
        profile = await service.create(audio=data, name=name, transcript=transcript, user_id=user.user_id)
    except VoiceSampleError as exc:
        return _sample_error(exc)
    return VoiceProfilePublic.of(profile)


@router.get("", response_model=VoiceProfileList)
async def list_voice_profiles(
    service: ServiceDep,
    user: CallerDep,
    all_users: Annotated[bool, Query(description="Everyone's profiles (admins only)")] = False,
) -> VoiceProfileList:
    """The caller's voice profiles (newest first)."""
    profiles = await service.list_profiles(owner_filter(user, all_users))
    return VoiceProfileList(profiles=[VoiceProfilePublic.of(p) for p in profiles])


@router.post("/search", response_model=SimilarVoices)
async def search_similar_voices(
    service: ServiceDep,
    user: CallerDep,
    audio: Annotated[UploadFile, File(description="A clip of the voice to look for")],
    limit: Annotated[int, Form(ge=1, le=50)] = 5,
) -> SimilarVoices | JSONResponse:
    data = await _read_limited(audio, service.limits.max_bytes)
    try:
        hits = await service.search(data, limit, owner_id=user.user_id)
    except VoiceSampleError as exc:
        return _sample_error(exc)
    results = [
        SimilarVoicePublic(profile=VoiceProfilePublic.of(h.profile), similarity=h.similarity) for h in hits
    ]
    return SimilarVoices(results=results)


@router.get("/{profile_id}", response_model=VoiceProfilePublic)
async def get_voice_profile(
    profile_id: uuid.UUID, service: ServiceDep, services: ServicesDep, user: CallerDep
) -> VoiceProfilePublic:
    profile = await service.get(profile_id, user)
    await audit_if_foreign(services, user, profile.user_id, "voice_profile.read", str(profile_id))
    return VoiceProfilePublic.of(profile)


@router.get("/{profile_id}/audio", response_class=Response)
async def get_voice_profile_audio(
    profile_id: uuid.UUID, service: ServiceDep, services: ServicesDep, user: CallerDep
) -> Response:
    profile = await service.get(profile_id, user)
    await audit_if_foreign(services, user, profile.user_id, "voice_profile.audio.read", str(profile_id))
    return Response(await service.original_audio(profile_id, user), media_type="audio/wav")


@router.delete("/{profile_id}", response_model=VoiceProfileDeleted)
async def delete_voice_profile(
    profile_id: uuid.UUID, service: ServiceDep, services: ServicesDep, user: CallerDep
) -> VoiceProfileDeleted:
    profile = await service.get(profile_id, user)
    await audit_if_foreign(services, user, profile.user_id, "voice_profile.delete", str(profile_id))
    removed = await service.delete(profile_id, user)
    return VoiceProfileDeleted(profile_id=profile_id, deleted_objects=removed)


@router.post("/{profile_id}/preview", response_class=Response)
async def preview_voice_profile(
    profile_id: uuid.UUID, body: PreviewRequest, service: ServiceDep, user: CallerDep
) -> Response:
    """Speak ``text`` in the profile's voice; returns ``audio/wav``.

    Headers say what was used: ``X-Voice-Engine``, ``X-Voice-Name``, ``X-Voice-Mode``, and, when the
    engine could not clone the voice (a stock voice was substituted) or degraded, ``X-Voice-Notice``
    (percent-encoded UTF-8) with ``X-Voice-Substituted: true``.
    """
    preview = await service.preview(profile_id, body.text, TTSMode(body.mode), viewer=user)
    headers = {
        "X-Voice-Engine": quote(preview.engine, safe=" -_.:/()"),
        "X-Voice-Name": quote(preview.voice, safe=" -_.:/()"),
        "X-Voice-Mode": preview.mode.value,
        "X-Voice-Substituted": "true" if preview.notice else "false",
        "Access-Control-Expose-Headers": _EXPOSED_HEADERS,
    }
    if preview.notice:
        headers["X-Voice-Notice"] = quote(preview.notice, safe=" -_.,:;/()'")
    return Response(preview.wav, media_type="audio/wav", headers=headers)
