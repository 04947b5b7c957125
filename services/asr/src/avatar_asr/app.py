"""The ASR service's ASGI app (port 8004): the HTTP routes (``http_api.py``) and the WebSocket stream
(``ws_api.py``) over one :class:`ASRService`; their messages are the typed models of ``wire.py``.

See ``services/asr/README.md`` for the protocol. Every refusal is OpenAI's error shape with a 4xx/5xx
status, or an ``error`` message on the socket; the service stays up.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from avatar_asr.config import ASRConfig
from avatar_asr.errors import ASRError
from avatar_asr.http_api import build_http_router, error_response
from avatar_asr.metrics import ASRMetrics
from avatar_asr.service import ASRService
from avatar_asr.ws_api import build_ws_router


def create_app(config: ASRConfig, *, service: ASRService | None = None, warm_up: bool = True) -> FastAPI:
    """The service app; pass ``service`` to share an already loaded model (it is then not closed here)."""
    metrics = ASRMetrics()
    owned = service is None
    svc = service or ASRService(config, observer=metrics)
    if not owned:
        svc.observer = metrics

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await svc.start(warm_up=warm_up and not svc.engine.loaded)
        try:
            yield
        finally:
            if owned:
                svc.close()

    app = FastAPI(title="AVATAR ASR", version="1", lifespan=lifespan)
    app.state.service = svc
    app.state.metrics = metrics

    @app.exception_handler(ASRError)
    async def _asr_error(_request: Request, exc: ASRError) -> JSONResponse:
        return error_response(exc)

    app.include_router(build_http_router(svc, metrics))
    app.include_router(build_ws_router(svc, metrics))
    return app
