"""The orchestrator's ASGI application: ``create_app(settings, container)``.

The routes are plain imports; what they call is built by the composition root
(:func:`avatar.bootstrap.running`) when the app starts and released when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match

from avatar import __version__
from avatar.bootstrap import Container, Services, running
from avatar.domain.errors import NotFoundError
from avatar.presentation import (
    accounts,
    avatar,
    feedback,
    health,
    live,
    memory,
    objects,
    openai_api,
    openai_realtime,
    prosody,
    realtime,
    sessions,
    voice_profiles,
)
from avatar.presentation.drain import Drain, DrainMiddleware
from avatar.presentation.errors import install_error_handlers
from avatar.presentation.json_guard import JsonBodyGuard
from avatar.settings import Settings

ROUTERS = (
    health.router,
    accounts.router,
    sessions.router,
    realtime.router,
    openai_realtime.router,
    avatar.router,
    voice_profiles.router,
    prosody.router,
    memory.router,
    objects.router,
    live.router,
    feedback.router,
    feedback.export_router,
    openai_api.router,
)


def create_app(
    settings: Settings,
    container: Container | None = None,
    *,
    on_ready: Callable[[Services], Awaitable[None]] | None = None,
) -> FastAPI:
    """Build the orchestrator app.

    Args:
        settings: The configuration.
        container: Adapters to use; when omitted they are built from ``settings`` at start-up
            (and closed at shutdown). Tests pass a container of fakes or real adapters.
        on_ready: Called once the services run, before requests are served (``avatar up`` makes
            the local owner and prints a one-time sign-in link there).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings, container) as (built, services):
            app.state.container = built
            app.state.services = services
            drain.sessions = services.sessions
            if on_ready is not None:
                await on_ready(services)
            restore_sigterm = drain.install_signal_handler(asyncio.get_running_loop())
            try:
                yield
            finally:
                restore_sigterm()
                await drain.aclose()

    # Graceful drain on SIGTERM (docs/deploy.md): readiness 503, new sessions refused, replies finish.
    drain = Drain(settings.server.drain_timeout_s, settings.server.drain_retry_after_s)
    app = FastAPI(title="AVATAR orchestrator", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.drain = drain
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(JsonBodyGuard)
    openai_api.install_openai_cors(app, settings)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)

    # Unknown API paths answer 404 for every method (not the web app's 405 for a non-GET); a known
    # path with the wrong method still answers 405.
    @app.api_route(
        "/api/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    async def unknown_api_path(request: Request, path: str) -> None:
        this = request.scope.get("route")
        for route in request.app.router.routes:
            if route is not this and route.matches(request.scope)[0] is Match.PARTIAL:
                raise HTTPException(status_code=405)
        raise NotFoundError(f"no such API path: /api/{path[:200]}; the API is described at /docs")

    dist = settings.server.frontend_dist
    if (dist / "index.html").exists():
        app.mount("/", StaticFiles(directory=dist, html=True), name="frontend")
    return app
