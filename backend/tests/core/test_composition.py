"""Composition root and app factory: fakes go into the same create_app(settings, container)."""

from __future__ import annotations

import subprocess
import sys

import httpx
from prometheus_client import CollectorRegistry, Counter

from avatar.application.ports.common import ComponentHealth
from avatar.presentation.app import create_app
from avatar.settings import Settings
from tests.fakes import FakeRecognizer, FakeSynthesizer, fake_container


class _BrokenTTS(FakeSynthesizer):
    async def health(self) -> ComponentHealth:
        raise ConnectionError("tts host unreachable")


async def _get(app: object, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


async def test_health_reports_every_dependency_from_the_container() -> None:
    settings = Settings(_env_file=None)
    container = fake_container(settings)
    app = create_app(settings, container)
    async with app.router.lifespan_context(app):
        response = await _get(app, "/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["services"]) >= {
        "asr",
        "llm",
        "tts_fast",
        "tts_hq",
        "prosody",
        "database",
        "object_store",
    }


async def test_a_failing_health_check_degrades_instead_of_crashing() -> None:
    settings = Settings(_env_file=None)
    app = create_app(settings, fake_container(settings, fast_tts=_BrokenTTS()))
    async with app.router.lifespan_context(app):
        response = await _get(app, "/api/v1/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["tts_fast"]["ok"] is False
    assert "unreachable" in body["services"]["tts_fast"]["detail"]


async def test_the_queue_is_started_and_stopped_with_the_app() -> None:
    settings = Settings(_env_file=None)
    container = fake_container(settings)
    app = create_app(settings, container)
    async with app.router.lifespan_context(app):
        assert container.queue.started  # type: ignore[attr-defined]
    assert not container.queue.started  # type: ignore[attr-defined]


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    settings = Settings(_env_file=None)
    app = create_app(settings, fake_container(settings))
    async with app.router.lifespan_context(app):
        response = await _get(app, "/api/v1/metrics")
    assert response.status_code == 200
    assert "text/plain" in response.headers["content-type"]
    assert "# HELP" in response.text


def test_importing_the_app_builds_nothing_heavy() -> None:
    code = (
        "import sys, avatar.presentation.app, avatar.bootstrap, avatar.cli\n"
        "heavy = [m for m in ('torch', 'faster_whisper', 'ctranslate2', 'piper', 'opensmile', 'resemblyzer')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


class _MeteredRecognizer(FakeRecognizer):
    """An in-process engine that keeps its metrics in its own registry (as the ASR and TTS do)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics_registry = CollectorRegistry()
        Counter("engine_decodes", "Decodes run", registry=self.metrics_registry).inc(3)


async def test_metrics_include_the_in_process_engines_registries() -> None:
    settings = Settings(_env_file=None)
    app = create_app(settings, fake_container(settings, recognizer=_MeteredRecognizer()))
    async with app.router.lifespan_context(app):
        response = await _get(app, "/api/v1/metrics")
    assert "engine_decodes_total 3.0" in response.text
    assert response.text.count("# HELP engine_decodes_total") == 1
