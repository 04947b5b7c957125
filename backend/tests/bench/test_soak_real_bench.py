"""``avatar bench soak --real`` (issue 15, item 7, the real engines): a short run against ``avatar up``
with its real models, in a directory of its own, and the report's arithmetic. No timing is asserted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from avatar.bench import soak, soak_real
from avatar.bench.conversation import Tally, TurnResult
from avatar.cli import main as cli


def _turn(total: float, text: str = "Hello there.", notices: tuple[str, ...] = ()) -> TurnResult:
    return TurnResult(total, {"endpoint": 300.0}, "hi", "hi", 1000.0, text, notices)


def _sample(t: float, phase: str, rss: float) -> soak.Sample:
    return soak.Sample(t, phase, rss, 30, 20, 15, 1, 1, {}, stored_mb=t, load1=1.0)


def test_growth_real_replies_and_thirds_are_counted_from_the_samples_and_turns() -> None:
    samples = [
        _sample(0, "idle", 800.0),
        _sample(60, "warm-up", 900.0),
        _sample(120, "talking", 1000.0),
        _sample(300, "talking", 1020.0),
        _sample(310, "after", 850.0),
    ]
    parts = [
        {"orchestrator": 700.0, "llama.cpp server": 500.0, "postgres": 30.0, "worker processes": 0.0},
        {"orchestrator": 800.0, "llama.cpp server": 600.0, "postgres": 40.0, "worker processes": 160.0},
        {"orchestrator": 800.0, "llama.cpp server": 600.0, "postgres": 40.0, "worker processes": 160.0},
        {"orchestrator": 820.0, "llama.cpp server": 620.0, "postgres": 40.0, "worker processes": 200.0},
        {"orchestrator": 760.0, "llama.cpp server": 620.0, "postgres": 40.0, "worker processes": 200.0},
    ]
    turns = [
        soak_real.TimedTurn(30.0, _turn(2000.0)),  # warm-up
        soak_real.TimedTurn(110.0, _turn(1000.0)),  # first third after warm-up (60-140 s)
        soak_real.TimedTurn(130.0, _turn(1200.0, "Sorry, my thoughts got tangled.")),  # canned
        soak_real.TimedTurn(250.0, _turn(1500.0, notices=("BUSY",))),  # last third (220-300 s)
        soak_real.TimedTurn(290.0, _turn(1700.0)),
    ]
    run = soak_real.RealSoak(
        sessions=3,
        minutes=5,
        warmup_s=60,
        samples=samples,
        parts=parts,
        turns=turns,
        tally=Tally(failed=["TimeoutError: "]),
        fallbacks=frozenset({"Sorry, my thoughts got tangled."}),
        restarts=1.0,
    )
    assert math.isclose(run.base.rss_growth_percent, 2.0)
    assert math.isclose(run.stack_growth_percent, 100.0 * (1680 - 1600) / 1600)
    assert run.real_replies() == 3 and run.busy() == 1
    assert run.v2v(60, 140) == [1000.0, 1200.0]
    text = soak_real.section(run)
    # the sample at 300 s: 5 turns so far, the P50 of those since the 120 s sample (1200, 1500, 1700)
    assert (
        "| 300 | talking | 1020.0 | 1680 | 820 | 620 | 40 | 200 | 30 | 20 | 15 | 1 | 0 | 5 | 1500 |" in text
    )
    assert "| real model replies | 3 (60 %) |" in text
    assert "| V2V P50 / P95, first third after warm-up (ms) | 1100 / 1190 (n=2) |" in text
    assert "| V2V P50 / P95, last third (ms) | 1600 / 1690 (n=2) |" in text
    assert "| supervised child restarts | 1 |" in text and "Failures: TimeoutError" in text


def test_real_is_a_soak_option() -> None:
    result = CliRunner().invoke(cli, ["bench", "load", "--real"])
    assert result.exit_code == 2 and "--real is a soak option" in result.output


@pytest.mark.slow
def test_a_short_real_soak_talks_to_avatar_up_and_samples_its_process_tree(tmp_path: Path) -> None:
    run = soak_real.run(1, 0.75, tmp_path / "run", interval=10)
    assert run.turns, run.tally.failed
    assert not run.tally.failed
    assert run.real_replies() >= 1  # a reply the model wrote, not the canned line
    assert run.samples[0].phase == "idle" and run.samples[-1].phase == "after"
    talking = [p for s, p in zip(run.samples, run.parts, strict=True) if s.phase == "talking"]
    assert talking
    # the tree is the real one: the model server, the database and the prosody workers beside it
    assert all(p["llama.cpp server"] > 50 and p["postgres"] > 5 for p in talking)
    assert talking[-1]["worker processes"] > 0
    assert run.samples[-1].sessions == 0  # every session ended after the clients closed
    # everything the stack kept is in the run's directory (its own database and audio)
    assert (tmp_path / "run" / "data" / "pgdata").is_dir()
    assert any((tmp_path / "run" / "data" / "objects").rglob("*"))
    text = soak_real.section(run)
    assert text.startswith("1 person talking for 0.75 min") and "| turns answered |" in text
