"""The compose placement's files are valid: compose schema, Prometheus config and rules, and the
PromQL of every Grafana panel (no Docker engine or Grafana server exists here to run them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "monitoring" / "grafana" / "dashboards").glob("*.json"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make setup-test` (scripts/setup.sh --with-test-tools)")
    return path


def test_compose_file_is_valid() -> None:
    env = {
        **os.environ,
        "AVATAR_SECRET_KEY": "x",
        "AVATAR_MASTER_KEY": "x",
        "POSTGRES_PASSWORD": "x",
        "MINIO_ROOT_USER": "x",
        "MINIO_ROOT_PASSWORD": "xxxxxxxx",
    }
    out = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr


def test_compose_refuses_to_start_without_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"AVATAR_SECRET_KEY", "POSTGRES_PASSWORD"}}
    out = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode != 0
    assert "set AVATAR_SECRET_KEY" in out.stderr or "set POSTGRES_PASSWORD" in out.stderr


def test_compose_has_every_design_service() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for service in (
        "nginx",
        "orchestrator",
        "vllm",
        "tts_fast",
        "tts_hq",
        "asr",
        "prosody",
        "postgres",
        "redis",
        "minio",
        "prometheus",
        "grafana",
    ):
        assert f"\n  {service}:" in text, service


def test_prometheus_config_and_alert_rules(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    rules = ROOT / "monitoring" / "prometheus" / "alerts.yml"
    out = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    config = (ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(config.replace("/etc/prometheus/alerts.yml", str(rules)))
    out = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    assert {p.stem for p in DASHBOARDS} >= {"overview", "llm", "speech", "infrastructure"}
    lines = ["groups:", "  - name: dashboards", "    rules:"]
    n = 0
    for board in DASHBOARDS:
        data = json.loads(board.read_text())
        assert data["uid"] and data["panels"], board.name
        for panel in data["panels"]:
            for target in panel["targets"]:
                n += 1
                expr = target["expr"].replace('"', '\\"')
                lines += [f"      - record: dashboard:check_{n}", f'        expr: "{expr}"']
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    out = subprocess.run([_tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert n >= 15


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    rules = tmp_path / "bad.yml"
    rules.write_text(
        'groups:\n  - name: x\n    rules:\n      - record: a:b\n        expr: "sum(rate(x[5m]"\n'
    )
    out = subprocess.run([_tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    assert out.returncode != 0
