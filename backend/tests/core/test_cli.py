"""The ``avatar`` command line, run as a user would (a real subprocess of the installed entry point)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _avatar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "avatar")
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_lists_every_command() -> None:
    out = _avatar("--help")
    assert out.returncode == 0
    for command in ("up", "serve", "doctor", "models", "bench"):
        assert command in out.stdout


def test_models_verify_passes_on_the_prepared_models() -> None:
    out = _avatar("models", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok] whisper-base/model.bin" in out.stdout


def test_doctor_reports_a_healthy_embedded_setup() -> None:
    env = {"AVATAR_SERVER__PORT": str(_free_port()), "AVATAR_LLM__PORT": str(_free_port())}
    out = _avatar("doctor", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "healthy" in out.stdout


def test_doctor_says_how_to_fix_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _avatar("doctor", env={"AVATAR_SERVER__PORT": str(port), "AVATAR_LLM__PORT": str(_free_port())})
    assert out.returncode != 0
    assert f"port {port} (orchestrator): in use" in out.stdout
    assert "fix:" in out.stdout


def test_invalid_configuration_is_a_clear_error() -> None:
    out = _avatar("doctor", env={"AVATAR_ENVIRONMENT": "production"})
    assert out.returncode != 0
    assert "AVATAR_SECURITY__SECRET_KEY" in out.stderr


@pytest.mark.parametrize("args", [["serve", "nothing"], ["bench", "nothing"]])
def test_unknown_choices_are_refused(args: list[str]) -> None:
    out = _avatar(*args)
    assert out.returncode == 2 and "Invalid value" in out.stderr


def test_doctor_checks_remote_components_and_says_how_to_start_them() -> None:
    closed = _free_port()
    env = {
        "AVATAR_SERVER__PORT": str(_free_port()),
        "AVATAR_LLM__PORT": str(_free_port()),
        "AVATAR_ASR__PLACEMENT": "remote",
        "AVATAR_ASR__URL": f"http://127.0.0.1:{closed}",
    }
    out = _avatar("doctor", env=env)
    assert out.returncode != 0
    assert f"[FAIL] asr service: http://127.0.0.1:{closed}/health: ConnectError" in out.stdout
    assert "fix: avatar serve asr, or correct the URL in the settings" in out.stdout


def test_doctor_checks_the_pose_mapping_and_vtube_studio(tmp_path: Path) -> None:
    closed = _free_port()
    poses = tmp_path / "poses.toml"
    poses.write_text("[emotions.happy]\nparameters = { Nose = 1.0 }\n", encoding="utf-8")
    env = {
        "AVATAR_SERVER__PORT": str(_free_port()),
        "AVATAR_LLM__PORT": str(_free_port()),
        "AVATAR_VTS__ENABLED": "true",
        "AVATAR_VTS__URL": f"ws://127.0.0.1:{closed}",
        "AVATAR_VTS__POSES_FILE": str(poses),
    }
    out = _avatar("doctor", env=env)
    assert out.returncode != 0
    assert f"[FAIL] vtube studio: ws://127.0.0.1:{closed}: " in out.stdout
    assert "fix: start VTube Studio and switch on its API" in out.stdout
    assert "[FAIL] avatar pose mapping:" in out.stdout and "unknown parameter 'Nose'" in out.stdout
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        env["AVATAR_VTS__URL"] = f"ws://127.0.0.1:{listening.getsockname()[1]}"
        del env["AVATAR_VTS__POSES_FILE"]
        out = _avatar("doctor", env=env)
    assert "[ok  ] vtube studio:" in out.stdout and "[ok  ] avatar pose mapping:" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "asr", "--instant-engines"], "--instant-engines is an orchestrator option"),
        (["bench", "load", "--sessions", "1,zero"], "not a comma-separated list of session counts"),
        (["bench", "load", "--sessions", "0,5"], "session counts must be positive"),
        (["bench", "load", "--turns", "0"], "--turns"),
    ],
)
def test_load_testing_options_are_checked(args: list[str], message: str) -> None:
    out = _avatar(*args)
    assert out.returncode == 2 and message in out.stderr


def test_a_worker_needs_the_redis_queue() -> None:
    out = _avatar("worker", env={"AVATAR_QUEUE__KIND": "inprocess"})
    assert out.returncode == 1 and "a worker needs the Redis queue" in out.stderr
