"""The orchestrator's ASGI application: ``create_app(settings, container)``.

Each feature module in :data:`FEATURES` exposes ``router`` and may expose
``async def startup(app, container)`` (build its use cases into ``app.state``, subscribe queue
handlers) and ``async def shutdown(app)``. Handlers are subscribed before the task queue starts.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from avatar import __version__
from avatar.bootstrap import Container, build_container
from avatar.presentation.errors import install_error_handlers
from avatar.settings import Settings

log = logging.getLogger(__name__)

FEATURES = (
    "avatar.presentation.health",
    "avatar.presentation.sessions",
    "avatar.presentation.realtime",
    "avatar.presentation.avatar",
    "avatar.presentation.voice_profiles",
    "avatar.presentation.prosody",
    "avatar.presentation.memory",
    "avatar.presentation.objects",
)


def _features() -> list[ModuleType]:
    modules = []
    for name in FEATURES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("feature %s is not present", name)
    return modules


def create_app(settings: Settings, container: Container | None = None) -> FastAPI:
    """Build the orchestrator app.

    Args:
        settings: The configuration.
        container: Adapters to use; when omitted they are built from ``settings`` at start-up
            (and closed at shutdown). Tests pass a container of fakes or real adapters.
    """
    features = _features()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        c = container if container is not None else await build_container(settings)
        app.state.container = c
        started: list[ModuleType] = []
        try:
            for feature in features:
                startup = getattr(feature, "startup", None)
                if startup is not None:
                    await startup(app, c)
                started.append(feature)
            await c.queue.start()
            yield
        finally:
            await c.queue.stop()
            for feature in reversed(started):
                shutdown = getattr(feature, "shutdown", None)
                if shutdown is not None:
                    try:
                        await shutdown(app)
                    except Exception:
                        log.exception("error shutting down %s", feature.__name__)
            if owned:
                await c.aclose()

    app = FastAPI(title="AVATAR orchestrator", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    for feature in features:
        app.include_router(feature.router)
    dist = settings.server.frontend_dist
    if (dist / "index.html").exists():
        app.mount("/", StaticFiles(directory=dist, html=True), name="frontend")
    return app
