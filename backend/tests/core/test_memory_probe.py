"""The opt-in allocation probe of soaks (issue 15, item 7; avatar.infrastructure.memory_probe): real
``tracemalloc`` snapshots, diffed from a mark, name the line that kept memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

import pytest

from avatar.bench import soak
from avatar.bootstrap import (
    INSTANT_TRACEMALLOC_ENV,
    INSTANT_TRACEMALLOC_MARK_ENV,
    build_instant_serving_container,
)
from avatar.infrastructure.memory_probe import AllocationProbe, ProbeRun
from avatar.settings import Settings

_kept: list[bytes] = []


def _keep_some(n: int) -> None:
    _kept.extend(bytes(10_000) + bytes([i % 256]) for i in range(n))  # the site the probe must name


def test_the_probe_names_the_line_that_kept_memory_after_the_mark() -> None:
    probe = AllocationProbe()
    probe.start()
    try:
        probe.mark()
        _keep_some(200)
        grown = probe.growth(top=5)
        assert grown and grown[0].size_diff >= 200 * 10_000
        assert grown[0].where[-1].startswith(__file__) and grown[0].count_diff >= 200
        assert __file__ in probe.report(top=1)
    finally:
        probe.stop()
        _kept.clear()
    assert AllocationProbe().growth() == []  # nothing before a mark


async def test_the_served_run_marks_later_and_writes_its_report_when_closed(tmp_path: Path) -> None:
    out = tmp_path / "tracemalloc.txt"
    run = ProbeRun(out, mark_s=0.05)
    run.start()
    try:
        await asyncio.sleep(0.3)  # the mark is taken meanwhile
        _keep_some(100)
    finally:
        await run.aclose()
        _kept.clear()
    text = out.read_text(encoding="utf-8")
    assert "_keep_some" not in text  # frames are file:line, not names
    assert f"{__file__}:" in text and text.startswith("+")
    assert __file__ in soak._top_sites(text, 1) and soak._top_sites(text, 1).count(" MB (") == 1


async def test_the_served_instant_engines_trace_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, environment="test")
    settings.engines = "instant"
    settings.data_dir = tmp_path / "data"
    settings.object_store.root = tmp_path / "objects"
    out = tmp_path / "tracemalloc.txt"
    monkeypatch.delenv(INSTANT_TRACEMALLOC_ENV, raising=False)
    await (await build_instant_serving_container(settings)).aclose()
    assert not out.exists() and not tracemalloc.is_tracing()
    monkeypatch.setenv(INSTANT_TRACEMALLOC_ENV, str(out))
    monkeypatch.setenv(INSTANT_TRACEMALLOC_MARK_ENV, "0")
    container = await build_instant_serving_container(settings)
    assert tracemalloc.is_tracing()
    await asyncio.sleep(0.1)
    await container.aclose()
    assert out.exists() and not tracemalloc.is_tracing()
