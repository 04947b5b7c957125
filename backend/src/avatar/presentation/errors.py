"""Map AVATAR errors to HTTP responses: ``{"error": {"code", "message", "trace_id"}}``."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from avatar.domain.errors import (
    AvatarError,
    CapacityError,
    DependencyError,
    InvalidInputError,
    NotFoundError,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AvatarError], int]] = [
    (NotFoundError, 404),
    (InvalidInputError, 422),
    (CapacityError, 503),
    (DependencyError, 503),
]


def status_for(exc: AvatarError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400 if exc.code != "INTERNAL_ERROR" else 500


def error_body(code: str, message: str, trace_id: str | None = None) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message, "trace_id": trace_id or str(uuid.uuid4())}}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AvatarError)
    async def _avatar_error(_request: Request, exc: AvatarError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        headers = None
        if isinstance(exc, CapacityError) and exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse(
            error_body("INVALID_INPUT", "; ".join(parts) or "invalid request"), status_code=422
        )
