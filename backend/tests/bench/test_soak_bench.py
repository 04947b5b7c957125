"""``avatar bench soak`` (issue 15, item 7): a tiny real run against an ``--instant-engines`` server
writes its section (its turns stored in a PostgreSQL server and as files on disk), and the growth
arithmetic over the samples. No timing is asserted."""

from __future__ import annotations

import math
from pathlib import Path

from click.testing import CliRunner

from avatar.bench import soak
from avatar.cli import main as cli


def _sample(t: float, phase: str, rss: float, fds: int, tasks: int | None) -> soak.Sample:
    return soak.Sample(
        t, phase, rss, fds, 8, tasks, 0, 0, {"llm_request_queue_length": 1.0}, stored_mb=rss / 2, load1=1.5
    )


def test_growth_is_measured_from_the_first_sample_after_warm_up_to_the_last() -> None:
    samples = [
        _sample(0, "idle", 100.0, 10, 5),
        _sample(5, "warm-up", 150.0, 30, 40),
        _sample(10, "talking", 200.0, 30, 40),
        _sample(20, "talking", 210.0, 32, 41),
        _sample(30, "after", 120.0, 11, 5),
    ]
    run = soak.Soak(sessions=2, minutes=0.5, warmup_s=6, samples=samples, turns=9, failures=[], processes=1)
    assert math.isclose(run.rss_growth_percent, 5.0)
    assert math.isclose(run.stored_growth_mb, 5.0)  # what the sessions stored on disk meanwhile
    assert run.growth("fds") == 2 and run.growth("tasks") == 1
    assert run.leftover("fds") == 1 and run.leftover("tasks") == 0
    text = soak.section(run)
    assert "| 20 | talking | 210.0 | 32 | 8 | 41 | 0 | 0 | 1 | 105.0 | 1.50 |" in text
    assert "5 % (within)" in text
    too_short = soak.Soak(2, 0.1, 6, samples[:2], 0, [], 1)
    assert math.isnan(too_short.rss_growth_percent) and "n/a" in soak.section(too_short)


def test_prometheus_gauges_are_summed_over_their_labels() -> None:
    text = (
        "# TYPE asyncio_tasks gauge\nasyncio_tasks 12.0\n"
        '# TYPE asr_pending gauge\nasr_pending{engine="a"} 1.0\nasr_pending{engine="b"} 2.0\n'
        "# TYPE turns_total counter\nturns_total 3.0\n"
    )
    assert soak._gauges(text) == {"asyncio_tasks": 12.0, "asr_pending": 3.0}


def test_a_tiny_soak_runs_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    result = CliRunner().invoke(
        cli,
        ["bench", "soak", "--sessions", "2", "--minutes", "0.3", "--interval", "2", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "## soak" in text
    assert "2 sessions talking for 0.3 min" in text
    assert "| failed sessions | 0 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | idle | " in line]
    assert len(rows) == 1
    assert " | talking | " in text and " | after | " in text
    # the orchestrator exposes its event loop's task count on /api/v1/metrics
    assert rows[0].split(" | ")[5] != "-"
    # what the sessions stored on disk (the database's files and the audio), which every turn grows
    after = [line for line in text.splitlines() if line.startswith("| ") and " | after | " in line]
    idle_mb, after_mb = (float(line.strip(" |").split(" | ")[9]) for line in (rows[0], after[0]))
    assert after_mb > idle_mb
