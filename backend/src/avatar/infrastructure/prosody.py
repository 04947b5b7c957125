"""Prosody adapters: the engine in worker processes (embedded) or the prosody service over HTTP.

Both satisfy :class:`avatar.application.ports.prosody.ProsodyAnalyzer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from avatar.application.ports.common import ComponentHealth
from avatar.application.ports.prosody import ProsodyResult
from avatar.domain.errors import CapacityError, DependencyError, InvalidInputError
from avatar.infrastructure.supervisor import Supervisor
from avatar.settings import Placement, Settings
from avatar_common.audio import pcm16_to_float, pcm16_to_wav
from avatar_prosody.analyzer import Analysis, BusyError, ExecutorKind, ProsodyEngine, WorkerLostError
from avatar_prosody.app import ServiceConfig, create_app
from avatar_prosody.metrics import ProsodyMetrics

MIN_SAMPLE_RATE = 8000


def _check_pcm(pcm: bytes, sample_rate: int) -> None:
    if len(pcm) % 2:
        raise InvalidInputError("PCM16 audio must have an even number of bytes", code="INVALID_AUDIO")
    if sample_rate < MIN_SAMPLE_RATE:
        raise InvalidInputError(
            f"sample rate {sample_rate} Hz is too low for prosody analysis", code="UNSUPPORTED_SAMPLE_RATE"
        )


def _to_result(analysis: Analysis) -> ProsodyResult:
    return ProsodyResult(
        confidence=analysis.confidence,
        stability=analysis.stability,
        affability=analysis.affability,
        features=analysis.features,
        reliable=analysis.reliable,
        reason=analysis.reason,
        explanation=analysis.explanation,
    )


class ProsodyPoolChild:
    """The engine's worker processes as a :class:`avatar.infrastructure.supervisor.Child`.

    Workers start with the first analysis; once started, a worker that dies breaks the whole pool,
    which the supervisor then replaces (warmed up again) with backoff.
    """

    name = "prosody"

    def __init__(self, engine: ProsodyEngine, *, poll_s: float = 0.5) -> None:
        self.engine = engine
        self._poll_s = poll_s

    async def start(self) -> None:
        await self.engine.replace_pool()

    async def wait(self) -> str:
        while True:
            reason = self.engine.dead_worker()
            if reason is not None:
                return reason
            await asyncio.sleep(self._poll_s)

    async def stop(self) -> None:
        """Nothing: :meth:`start` replaces a dead pool, and ``engine.aclose()`` ends a live one."""


class EmbeddedProsodyAnalyzer:
    """Runs the analysis in this host's worker pool (processes by default, see ``ProsodyEngine``)."""

    def __init__(self, engine: ProsodyEngine, supervisor: Supervisor | None = None) -> None:
        self.engine = engine
        self.metrics = ProsodyMetrics()
        self.supervisor = supervisor

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The engine's Prometheus registry, exported by the orchestrator's ``/api/v1/metrics``."""
        self.metrics.pending.set(self.engine.pending)
        return self.metrics.registry

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        _check_pcm(pcm, sample_rate)
        started = time.perf_counter()
        try:
            analysis = await self.engine.analyze(pcm16_to_float(pcm), sample_rate, baseline)
        except BusyError as exc:
            raise CapacityError(str(exc)) from exc
        except WorkerLostError as exc:
            raise DependencyError(str(exc)) from exc
        except ValueError as exc:
            raise InvalidInputError(str(exc), code="INVALID_AUDIO") from exc
        self.metrics.observe(analysis, time.perf_counter() - started)
        return _to_result(analysis)

    async def health(self) -> ComponentHealth:
        e = self.engine
        extra: dict[str, object] = {"pending": e.pending, "loaded": e.ready}
        detail = f"embedded, {e.workers} {e.executor_kind} worker(s)"
        ok = True
        if self.supervisor is not None:
            process = self.supervisor.health()
            extra["process"] = {"ok": process.ok, "detail": process.detail, **process.extra}
            if not process.ok:
                ok = False
                detail += f"; process {process.detail}"
        return ComponentHealth("prosody", ok, detail, extra)


class HttpProsodyAnalyzer:
    """Client of the prosody service (``POST /analyze`` with a WAV and the baseline as JSON)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, headers=headers)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def analyze(
        self, pcm: bytes, sample_rate: int, *, baseline: Mapping[str, float] | None = None
    ) -> ProsodyResult:
        _check_pcm(pcm, sample_rate)
        data = {"baseline": json.dumps(dict(baseline))} if baseline else {}
        try:
            response = await self._client.post(
                "/analyze",
                files={"file": ("utterance.wav", pcm16_to_wav(pcm, sample_rate), "audio/wav")},
                data=data,
            )
        except httpx.HTTPError as exc:
            raise DependencyError(f"prosody service unreachable at {self.base_url}: {exc}") from exc
        body = self._json(response)
        if response.status_code in (401, 403):  # a deployment mistake, never the caller's input
            from avatar.infrastructure.secrets import SERVICE_KEY_REFUSED, key_refused_message

            raise DependencyError(key_refused_message("prosody"), code=SERVICE_KEY_REFUSED)
        if response.status_code == 503:
            raise CapacityError(self._message(body, "the prosody service is busy"))
        if 400 <= response.status_code < 500:
            raise InvalidInputError(
                self._message(body, "the prosody service refused the audio"), code="INVALID_AUDIO"
            )
        if response.status_code != 200:
            raise DependencyError(f"prosody service answered {response.status_code}")
        scores = body["scores"]
        return ProsodyResult(
            confidence=float(scores["confidence"]),
            stability=float(scores["stability"]),
            affability=float(scores["affability"]),
            features=body.get("features", {}),
            reliable=bool(body["reliable"]),
            reason=body.get("reason"),
            explanation=body.get("explanation", {}),
        )

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    @staticmethod
    def _message(body: Mapping[str, Any], default: str) -> str:
        error = body.get("error")
        return str(error.get("message", default)) if isinstance(error, dict) else default

    async def health(self) -> ComponentHealth:
        try:
            response = await self._client.get("/health", timeout=5.0)
            body = self._json(response)
        except httpx.HTTPError as exc:
            return ComponentHealth("prosody", False, f"unreachable at {self.base_url}: {exc}")
        ok = response.status_code == 200 and body.get("status") == "ok"
        status = body.get("status", response.status_code)
        return ComponentHealth(
            "prosody",
            ok,
            f"remote {self.base_url}: {status}",
            {k: v for k, v in body.items() if k != "status"},
        )


def service_config(settings: Settings) -> ServiceConfig:
    """Map the ``prosody`` settings group onto the service's config (admission grows with the pool,
    and admits at least what the queue's consumers may ask for at once, docs/prosody.md)."""
    workers = settings.prosody.workers
    pending = max(ServiceConfig().max_pending, 4 * workers, settings.prosody.consumers)
    return ServiceConfig(workers=workers, max_pending=pending)


async def build_prosody_analyzer(
    settings: Settings, stack: contextlib.AsyncExitStack, *, executor: ExecutorKind = "process"
) -> EmbeddedProsodyAnalyzer | HttpProsodyAnalyzer:
    """The analyzer the settings ask for; worker processes start on the first analysis."""
    if settings.prosody.placement is Placement.REMOTE:
        from avatar.infrastructure.secrets import service_headers

        remote = HttpProsodyAnalyzer(settings.prosody.url, headers=service_headers(settings))
        stack.push_async_callback(remote.aclose)
        return remote
    config = service_config(settings)
    engine = ProsodyEngine(config.workers, executor=executor, max_pending=config.max_pending)
    stack.push_async_callback(engine.aclose)
    supervisor = Supervisor(ProsodyPoolChild(engine))
    await supervisor.start()
    stack.push_async_callback(supervisor.stop)
    return EmbeddedProsodyAnalyzer(engine, supervisor)


def create_service_app(settings: Settings) -> FastAPI:
    """The prosody service (``avatar serve prosody`` on ``settings.prosody.port``), from ``settings``."""
    from avatar.infrastructure.secrets import guard_service

    return guard_service(create_app(service_config(settings)), settings)
