"""``GET /api/v1/objects/{key}?expires=..&sig=..``: presigned downloads, decrypted on the way out.

Objects are encrypted at rest in either store (docs/security.md), so every presigned URL points
here: the signature (an HMAC of the key and expiry with the server's signing key) authorizes the
download and the store opens the sealed object. A store that cannot check signatures answers 404.
"""

from __future__ import annotations

from typing import Annotated, Protocol, runtime_checkable

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse

from avatar.bootstrap import retention_policy
from avatar.domain.errors import InvalidInputError, NotFoundError
from avatar.presentation.deps import ContainerDep
from avatar.presentation.errors import error_body

router = APIRouter(tags=["objects"])

_MEDIA_TYPES = {
    ".wav": "audio/wav",
    ".json": "application/json",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
}


@runtime_checkable
class _SelfServedObjects(Protocol):
    def verify_signature(self, key: str, expires: int, signature: str) -> None: ...

    async def get(self, key: str) -> bytes: ...


@router.get(
    "/api/v1/objects/{key:path}",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}, 403: {}, 404: {}, 410: {}},
)
async def get_object(
    key: str,
    container: ContainerDep,
    expires: Annotated[int, Query(description="Unix time after which the URL is refused")],
    sig: Annotated[str, Query(description="HMAC-SHA256 signature of the key and expiry")],
) -> Response:
    store = container.object_store
    if not isinstance(store, _SelfServedObjects):
        raise NotFoundError("objects are served by the object store itself; use its presigned URL")
    try:
        store.verify_signature(key, expires, sig)
    except InvalidInputError as exc:
        return JSONResponse(error_body(exc.code, exc.message), status_code=403)
    try:
        data = await store.get(key)
    except NotFoundError:
        policy = retention_policy(container.settings.retention)
        if policy.past_retention(key, container.clock.now()):
            # The audio was deleted after its retention (docs/security.md, "Retention").
            return JSONResponse(
                error_body("AUDIO_EXPIRED", "this audio was deleted after its retention period"),
                status_code=410,
            )
        raise
    suffix = key[key.rfind(".") :].lower() if "." in key else ""
    return Response(
        data,
        media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )
