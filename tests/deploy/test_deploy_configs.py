"""The compose placement's files are valid: compose schema, only nginx on public ports, the
``.env.example``, the VRAM plan's arithmetic (docs/deploy.md), Prometheus config and rules, and the
PromQL of every Grafana panel (no Docker engine or Grafana server exists here to run them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: Per TTS process, beyond its model budget: CUDA context and the caching allocator's slack (MB).
CUDA_OVERHEAD_MB = 800
#: Kept free on the card for the driver and anything else (MB).
RESERVE_MB = 500
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
        "AVATAR_SERVICE_KEY": "x",
        "POSTGRES_PASSWORD": "x",
        "MINIO_ROOT_USER": "x",
        "MINIO_ROOT_PASSWORD": "xxxxxxxx",
        "GRAFANA_ADMIN_PASSWORD": "x",
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


def _config(env_file: Path) -> dict[str, Any]:
    """``docker-compose config`` with only ``env_file`` providing the variables."""
    required = set(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()))
    env = {k: v for k, v in os.environ.items() if k not in required}
    out = subprocess.run(
        [
            _tool("docker-compose"),
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def _published(port: str | dict[str, Any]) -> tuple[str, str]:
    """(host address, host port) of one ``ports`` entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", ""))
    parts = port.split("/")[0].split(":")
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0])


def test_env_example_sets_every_required_variable() -> None:
    config = _config(ROOT / ".env.example")
    assert config["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]


def test_only_nginx_publishes_ports_and_grafana_only_on_loopback() -> None:
    services = _config(ROOT / ".env.example")["services"]
    public = {
        (name, _published(p))
        for name, svc in services.items()
        for p in svc.get("ports", [])
        if name != "grafana"
    }
    assert public == {("nginx", ("", "80")), ("nginx", ("", "443"))}
    assert [_published(p)[0] for p in services["grafana"]["ports"]] == ["127.0.0.1"]
    # the internal services still declare what they serve on the compose network
    for name in ("orchestrator", "vllm", "tts_fast", "tts_hq", "asr", "prosody", "minio", "prometheus"):
        assert services[name].get("expose"), name


def test_vram_plan_fits_a_24_gb_card() -> None:
    """docs/deploy.md, "VRAM plan": vLLM's fraction of the card plus each TTS process's model budget
    and CUDA overhead, plus a reserve, fit in 24 GB; each budget holds the models that process loads."""
    from avatar_tts.engines.cosyvoice import CosyVoiceEngine
    from avatar_tts.engines.f5 import F5Engine
    from avatar_tts.engines.piper import PiperEngine

    services = _config(ROOT / ".env.example")["services"]
    command = services["vllm"]["command"]
    fraction = float(command[command.index("--gpu-memory-utilization") + 1])
    assert "--kv-cache-dtype" in command and "--max-model-len" in command

    def budget(name: str) -> float:
        return float(services[name]["environment"]["AVATAR_TTS__MEMORY_BUDGET_MB"])

    assert budget("tts_fast") >= F5Engine.estimate_mb
    assert budget("tts_hq") >= CosyVoiceEngine.estimate_mb + PiperEngine.estimate_mb
    assert services["asr"]["environment"].get("AVATAR_ASR__DEVICE", "cpu") == "cpu"  # ASR takes no VRAM
    card_mb = 24 * 1024**3 / 1e6  # what a "24 GB" card reports: 24 GiB
    total = fraction * card_mb + budget("tts_fast") + budget("tts_hq") + 2 * CUDA_OVERHEAD_MB + RESERVE_MB
    assert total <= 24_000, f"the plan needs {total:.0f} MB"
    plan = (ROOT / "docs" / "deploy.md").read_text()
    for figure in (
        f"{fraction:g}",
        f"{budget('tts_fast'):,.0f}",
        f"{budget('tts_hq'):,.0f}",
        f"{total:,.0f}",
    ):
        assert figure in plan, f"docs/deploy.md does not show {figure}"


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


def test_orchestrator_image_carries_the_web_app_where_settings_look() -> None:
    """On Kubernetes the orchestrator serves the web app itself (no nginx): the image must hold the
    built frontend at Settings.server.frontend_dist, relative to the image's working directory."""
    from avatar.settings import REPO_ROOT, Settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\S+)\n(.*?)(?=^FROM |\Z)", dockerfile, re.S | re.M))
    assert "npm run build" in stages["frontend"]
    (workdir,) = re.findall(r"^WORKDIR (\S+)", stages["base"], re.M)
    (copied,) = re.findall(r"^COPY --from=frontend \S+ (\S+)", stages["orchestrator"], re.M)
    expected = Settings().server.frontend_dist.relative_to(REPO_ROOT)
    assert Path(workdir, copied) == Path(workdir) / expected
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "**/node_modules" in ignored and "models/cache" in ignored
