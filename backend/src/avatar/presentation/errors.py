"""Map every REST error to the documented body ``{"error": {"code", "message", "trace_id"}}``.

Handled here: AVATAR's own errors, request validation (FastAPI's ``{"detail": ...}`` never reaches
a client), unknown routes (404 ``NOT_FOUND``), wrong methods (405 ``METHOD_NOT_ALLOWED``), any other
HTTP error, and unexpected exceptions (500 ``INTERNAL_ERROR``). Errors of the server's own side
(5xx other than ``BUSY``/``DRAINING``) carry no internals: the details go to the log with the
same ``trace_id`` the client sees (docs/protocol.md, Limits and errors).
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from avatar.domain.errors import (
    AvatarError,
    CapacityError,
    ConflictError,
    DependencyError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    UnauthenticatedError,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AvatarError], int]] = [
    (NotFoundError, 404),
    (RateLimitedError, 429),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (CapacityError, 503),
    (DependencyError, 503),
]
#: Codes of the generic HTTP errors (unknown route, wrong method, unparsable body ...).
HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_INPUT",
    429: "TOO_MANY_REQUESTS",
}
#: What a client reads instead of a dependency's or the server's own error text.
DEPENDENCY_MESSAGE = "a service this request needs is unavailable; try again shortly"
INTERNAL_MESSAGE = "the server failed to handle this request"


def status_for(exc: AvatarError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400 if exc.code != "INTERNAL_ERROR" else 500


def new_trace_id() -> str:
    return str(uuid.uuid4())


def error_body(code: str, message: str, trace_id: str | None = None) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message, "trace_id": trace_id or new_trace_id()}}


def public_message(exc: AvatarError, trace_id: str) -> str:
    """The text a client may read for ``exc``; a server-side failure's details are logged instead."""
    status = status_for(exc)
    if status < 500 or isinstance(exc, CapacityError):
        return exc.message
    log.warning("%s (trace_id %s): %s", exc.code, trace_id, exc.message)
    if isinstance(exc, DependencyError):
        return f"{DEPENDENCY_MESSAGE} (trace id {trace_id})"
    return f"{INTERNAL_MESSAGE} (trace id {trace_id})"


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = str(err.get("msg"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AvatarError)
    async def _avatar_error(_request: Request, exc: AvatarError) -> JSONResponse:
        trace_id = new_trace_id()
        message = public_message(exc, trace_id)
        headers = None
        if isinstance(exc, RateLimitedError):
            headers = {"Retry-After": str(exc.retry_after_s)}
        elif isinstance(exc, CapacityError) and exc.retry_after_s is not None:
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(
            error_body(exc.code, message, trace_id), status_code=status_for(exc), headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("INVALID_INPUT", validation_message(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
        trace_id = new_trace_id()
        if exc.status_code >= 500:
            log.warning("HTTP %s (trace_id %s): %s", exc.status_code, trace_id, exc.detail)
            message = f"{INTERNAL_MESSAGE} (trace id {trace_id})"
        elif exc.status_code == 404:
            message = "no such resource; the API is described at /docs"
        elif exc.status_code == 405:
            message = "this method is not allowed here; the API is described at /docs"
        elif exc.status_code == 400 and "parsing the body" in str(exc.detail):
            code, message = "INVALID_JSON", "the request body could not be parsed"
        else:
            message = str(exc.detail)
        return JSONResponse(
            error_body(code, message, trace_id), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        trace_id = new_trace_id()
        log.error(
            "unhandled error on %s %s (trace_id %s)",
            request.method,
            request.url.path,
            trace_id,
            exc_info=exc,
        )
        return JSONResponse(
            error_body("INTERNAL_ERROR", f"{INTERNAL_MESSAGE} (trace id {trace_id})", trace_id),
            status_code=500,
        )
