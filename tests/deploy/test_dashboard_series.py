"""Every series a Grafana panel or a Prometheus rule uses exists after one spoken turn on the real
embedded stack (Whisper, SmolLM2 on the llama.cpp server, Piper, Kokoro, prosody, PostgreSQL), and
is used as its type allows (tests/deploy/series_check.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from avatar.bootstrap import Container, build_container
from avatar.presentation.app import create_app
from avatar.settings import Placement, Settings
from tests.deploy.series_check import (
    EXTERNAL,
    Query,
    check,
    dashboard_queries,
    parse_exposition,
    rule_queries,
)
from tests.e2e.harness import Client, create_session, running_server, stream_realtime
from tests.support.audio import SpeechClip
from tests.support.auth import bearer, make_user


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Histogram("demo_seconds", "a histogram", ["stage"], registry=registry).labels("asr").observe(0.2)
    Gauge("demo_sessions", "a gauge", registry=registry).set(3)
    Counter("demo_errors", "a counter", ["kind"], registry=registry).labels("timeout").inc()
    return registry


SCRAPE = parse_exposition(generate_latest(_registry()).decode())


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("avg(demo_seconds)", "demo_seconds is a histogram: use demo_seconds_bucket"),
        ("asr_final_latency_seconds_bucket", "series asr_final_latency_seconds_bucket is not exported"),
        ("rate(demo_sessions[5m])", "rate() is applied to demo_sessions, a gauge"),
        ("sum(demo_errors_total)", "demo_errors_total is cumulative (counter)"),
        ("histogram_quantile(0.9, sum by (le) (demo_seconds_bucket))", "needs rate()/increase()"),
        ("histogram_quantile(0.9, rate(demo_errors_total[5m]))", "needs a histogram's _bucket series"),
        ('sum(rate(demo_errors_total{kind="oom"}[5m]))', "no sample of demo_errors_total matches"),
        ("sum by (mode) (rate(demo_errors_total[5m]))", "has no label 'mode' to group by"),
        ("deriv(demo_errors_total[5m])", "deriv() is meant for gauges"),
        ("rate(vllm:kv_cache_usage_perc[5m])", "rate() is applied to vllm:kv_cache_usage_perc, a gauge"),
        ("sum(rate(x[5m]", "does not parse"),
    ],
)
def test_the_checker_finds_each_kind_of_mistake(expr: str, problem: str) -> None:
    problems = check(Query("case", expr), SCRAPE)
    assert problems and problem in problems[0], problems


@pytest.mark.parametrize(
    "expr",
    [
        'histogram_quantile(0.95, sum by (le, stage) (rate(demo_seconds_bucket{stage="asr"}[5m])))',
        "sum(rate(demo_seconds_sum[5m])) / sum(rate(demo_seconds_count[5m]))",
        "sum by (job, kind) (increase(demo_errors_total[1h]))",
        "max(demo_sessions) >= 5",
        "avg(vllm:kv_cache_usage_perc) * 100",
        "up == 0",
    ],
)
def test_the_checker_accepts_correct_queries(expr: str) -> None:
    assert check(Query("case", expr), SCRAPE) == []


def test_external_series_are_only_prometheus_and_vllm() -> None:
    assert all(name == "up" or name.startswith("vllm:") for name in EXTERNAL)


def _settings(tmp: Path, database_url: str, llm_url: str) -> Settings:
    settings = Settings(environment="test")
    settings.data_dir = tmp
    settings.database.placement = Placement.REMOTE
    settings.database.url = settings.database.url.__class__(database_url)
    settings.object_store.kind = "filesystem"
    settings.object_store.root = tmp / "objects"
    settings.llm.placement = Placement.REMOTE
    settings.llm.base_url = llm_url
    settings.llm.max_tokens = 40
    settings.asr.language = "en"
    return settings


@pytest_asyncio.fixture(scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str, llama_server: str
) -> AsyncIterator[tuple[str, Container]]:
    settings = _settings(tmp_path_factory.mktemp("series"), module_database_url, llama_server)
    container = await build_container(settings)
    try:
        async with running_server(create_app(settings, container)) as base:
            yield base, container
    finally:
        await container.aclose()


@pytest_asyncio.fixture(scope="module")
async def key(stack: tuple[str, Container]) -> str:
    """An API key of the user the tests talk as (docs/security.md)."""
    _user, api_key = await make_user(stack[1], f"e2e-{uuid.uuid4().hex[:8]}")
    return api_key


@pytest.mark.slow
async def test_every_panel_and_rule_has_its_series_after_one_spoken_turn(
    stack: tuple[str, Container], key: str, librivox: list[SpeechClip]
) -> None:
    base, _ = stack
    queries = dashboard_queries() + rule_queries()
    assert len(queries) >= 30
    created = await create_session(base, key)
    async with (
        Client.connect(created["ws_url"]) as client,
        httpx.AsyncClient(base_url=base, headers=bearer(key)) as http,
    ):
        await client.until_type("session_state")
        await stream_realtime(client, librivox[0].pcm)
        await client.until(lambda m: m["type"] == "turn_completed" and not m["interrupted"])
        # the HQ pass and prosody run in the background after the turn: scrape until they are in
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 300
        while True:
            response = await http.get("/api/v1/metrics")
            assert response.status_code == 200
            scraped = parse_exposition(response.text)
            problems = [p for q in queries for p in check(q, scraped)]
            if not problems or loop.time() > deadline:
                break
            await asyncio.sleep(2.0)
    assert problems == [], "\n".join(problems)
