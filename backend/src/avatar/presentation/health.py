"""``GET /api/v1/health``: each dependency's status; ``/api/v1/health/live`` and ``/ready``: the
cheap probes of a Kubernetes pod (docs/deploy.md); ``GET /api/v1/metrics``: Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest

from avatar import __version__
from avatar.presentation.deps import ContainerDep
from avatar.presentation.drain import Drain

router = APIRouter(tags=["operations"])

#: Set on each scrape of ``/api/v1/metrics``; ``avatar bench soak`` watches it for leaked tasks.
ASYNCIO_TASKS = Gauge("asyncio_tasks", "Tasks alive on the orchestrator's event loop")


@router.get("/api/v1/health")
async def health(container: ContainerDep) -> JSONResponse:
    checks = await container.health()
    ok = all(c.ok for c in checks)
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "services": {c.name: {"ok": c.ok, "detail": c.detail, **c.extra} for c in checks},
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/api/v1/health/live")
async def live() -> JSONResponse:
    """Liveness: the event loop answers. Checks no dependency (a slow one must not get the pod
    restarted); ``/api/v1/health`` is the full check."""
    return JSONResponse({"status": "alive", "version": __version__})


@router.get("/api/v1/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 while this replica admits sessions, 503 with ``Retry-After`` while it drains."""
    drain: Drain = request.app.state.drain
    if drain.draining:
        return JSONResponse(
            {"status": "draining", "replies_in_flight": drain.replies_in_flight()},
            status_code=503,
            headers={"Retry-After": str(drain.retry_after_s)},
        )
    return JSONResponse({"status": "ready"})


@router.get("/api/v1/metrics")
async def metrics(container: ContainerDep) -> Response:
    """The orchestrator's metrics plus those of the engines running in this process (embedded)."""
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))  # this handler runs on the event loop
    registries: list[CollectorRegistry] = [REGISTRY]
    for adapter in (container.recognizer, container.fast_tts, container.hq_tts, container.prosody):
        registry = getattr(adapter, "metrics_registry", None)
        if isinstance(registry, CollectorRegistry) and all(registry is not r for r in registries):
            registries.append(registry)
    body = b"".join(generate_latest(r) for r in registries)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
