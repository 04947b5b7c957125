"""``avatar bench load``'s generator against a real ``--instant-engines`` server (a small level, so
the test stays short): clients in a separate process, every turn measured, the server's resources
read from its PID."""

from __future__ import annotations

from pathlib import Path

from avatar.bench import load


def test_a_small_level_measures_every_turn_from_a_separate_process(tmp_path: Path) -> None:
    level = load.run_level(sessions=2, turns=2, processes=1, workdir=tmp_path, binary=False)
    assert level.failures == []
    assert len(level.latencies_ms) == 4 and len(level.server_e2e_ms) == 4
    # The instant engines endpoint after ~300 ms of silence (three 100 ms chunks), then answer.
    assert all(250.0 <= v <= 5000.0 for v in level.latencies_ms)
    assert level.server_rss_mb > 50 and level.server_cpu_percent > 0
    assert 0 < level.cpu_ms_per_turn == 1000 * level.server_cpu_s / 4
    text = load.section([level], turns=2)
    assert "| 2 | 4 |" in text and "server CPU ms / turn" in text


def test_binary_microphone_frames_work_as_json_ones(tmp_path: Path) -> None:
    level = load.run_level(sessions=1, turns=1, processes=1, workdir=tmp_path, binary=True)
    assert level.failures == [] and len(level.latencies_ms) == 1
