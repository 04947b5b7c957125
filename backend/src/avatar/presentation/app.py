"""The orchestrator's ASGI application: ``create_app(settings, container)``.

The routes are plain imports; what they call is built by the composition root
(:func:`avatar.bootstrap.running`) when the app starts and released when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from avatar import __version__
from avatar.bootstrap import Container, running
from avatar.presentation import (
    feedback,
    health,
    live,
    memory,
    objects,
    prosody,
    realtime,
    sessions,
    voice_profiles,
)
from avatar.presentation.drain import Drain, DrainMiddleware
from avatar.presentation.errors import install_error_handlers
from avatar.settings import Settings

ROUTERS = (
    health.router,
    sessions.router,
    realtime.router,
    voice_profiles.router,
    prosody.router,
    memory.router,
    objects.router,
    live.router,
    feedback.router,
)


def create_app(settings: Settings, container: Container | None = None) -> FastAPI:
    """Build the orchestrator app.

    Args:
        settings: The configuration.
        container: Adapters to use; when omitted they are built from ``settings`` at start-up
            (and closed at shutdown). Tests pass a container of fakes or real adapters.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings, container) as (built, services):
            app.state.container = built
            app.state.services = services
            drain.sessions = services.sessions
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
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    dist = settings.server.frontend_dist
    if (dist / "index.html").exists():
        app.mount("/", StaticFiles(directory=dist, html=True), name="frontend")
    return app
