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
    # The clients' own CPU and the whole machine's busy share are measured beside the server's.
    assert level.load_cpu_percent > 0 and 0 < level.machine_busy_percent <= 100
    text = load.section([level], turns=2)
    assert "| 2 | 4 |" in text and "server CPU ms / turn" in text and "machine busy %" in text


def test_binary_microphone_frames_work_as_json_ones(tmp_path: Path) -> None:
    level = load.run_level(sessions=1, turns=1, processes=1, workdir=tmp_path, binary=True)
    assert level.failures == [] and len(level.latencies_ms) == 1


def test_the_transport_floor_measures_a_bare_receiving_server() -> None:
    from avatar.bench import transport_floor

    floor = transport_floor.measure(sessions=4)
    # 4 clients at 10 frames a second over the measured window (a few frames of slack at its edges)
    expected = 4 * 10 * transport_floor.MEASURE_S
    assert 0.8 * expected <= floor.frames_received <= 1.2 * expected
    assert floor.cpu_percent > 0 and floor.us_per_frame > 0
    level = load.Level(4, [300.0], [2.0], [], 0.1, 0.1, 0.4, 150.0, 1)
    text = load.section([level], 1, floor=floor)
    assert f"took {floor.cpu_percent:.1f} % of one core for 4 sessions" in text
