"""``GET /api/v1/health``: each dependency's status; ``GET /api/v1/metrics``: Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from avatar import __version__
from avatar.presentation.deps import ContainerDep

router = APIRouter(tags=["operations"])


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


@router.get("/api/v1/metrics")
async def metrics(container: ContainerDep) -> Response:
    """The orchestrator's metrics plus those of the engines running in this process (embedded)."""
    registries: list[CollectorRegistry] = [REGISTRY]
    for adapter in (container.recognizer, container.fast_tts, container.hq_tts, container.prosody):
        registry = getattr(adapter, "metrics_registry", None)
        if isinstance(registry, CollectorRegistry) and all(registry is not r for r in registries):
            registries.append(registry)
    body = b"".join(generate_latest(r) for r in registries)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
