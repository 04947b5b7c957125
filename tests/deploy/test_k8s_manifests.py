"""The Kubernetes placement (deploy/k8s) renders without a cluster, validates against the Kubernetes
JSON schemas (kubernetes-validate, strict: unknown fields fail), and says what docs/deploy.md
promises: probes and graceful drain, autoscaling on live sessions, GPU requests, StatefulSets,
TLS + WebSocket Ingress, and monitoring ConfigMaps generated from monitoring/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from avatar.settings import ServerSettings
from tests.deploy.kustomize import KustomizeError, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
#: The oldest Kubernetes the manifests claim (docs/deploy.md) and the newest schemas shipped.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
#: Created by the operator, never rendered (docs/deploy.md, "Secrets" and "Certificates").
EXTERNAL_SECRETS = {"avatar-secrets", "avatar-tls"}

Object = dict[str, Any]


def _key(obj: Object) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@pytest.fixture(scope="module", params=[p.name for p in OVERLAYS])
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    return render(K8S / "overlays" / request.param)


def _one(objects: list[Object], kind: str, name: str) -> Object:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _pod(obj: Object) -> Object:
    pod: Object = obj["spec"]["template"]["spec"]
    return pod


def _container(obj: Object) -> Object:
    container: Object = _pod(obj)["containers"][0]
    return container


def test_there_is_a_production_overlay() -> None:
    assert "production" in [p.name for p in OVERLAYS]


@pytest.mark.parametrize("overlay", [p.name for p in OVERLAYS])
def test_the_python_renderer_matches_kubectl_kustomize(overlay: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the Python renderer alone is used")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {_key(o): o for o in render(K8S / "overlays" / overlay)}
    assert ours == theirs


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        render(tmp_path)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered: list[Object], version: str) -> None:
    assert len(rendered) >= 30
    errors = []
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{_key(obj)}: {exc.message} at {list(exc.path)}")
    assert errors == []
    names = [_key(o) for o in rendered]
    assert len(names) == len(set(names)), "duplicate objects"


def test_a_broken_manifest_fails_validation(rendered: list[Object]) -> None:
    bad = json.loads(json.dumps(_one(rendered, "Deployment", "orchestrator")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
    bad = json.loads(json.dumps(_one(rendered, "Service", "orchestrator")))
    bad["spec"]["prots"] = bad["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_orchestrator_probes_and_graceful_drain(rendered: list[Object]) -> None:
    deployment = _one(rendered, "Deployment", "orchestrator")
    container = _container(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    config = _one(rendered, "ConfigMap", "avatar-config")["data"]
    drain_s = float(config.get("AVATAR_SERVER__DRAIN_TIMEOUT_S", ServerSettings().drain_timeout_s))
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # the pod is killed after the grace period: preStop + drain + closing must fit inside it
    assert _pod(deployment)["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + drain_s + 10
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})


def test_autoscaling_on_live_sessions_and_a_disruption_budget(rendered: list[Object]) -> None:
    from avatar.presentation.realtime import WS_CONNECTIONS

    hpa = _one(rendered, "HorizontalPodAutoscaler", "orchestrator")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "orchestrator",
    }
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods["metric"]["name"] == "avatar_live_sessions"
    assert hpa["spec"]["minReplicas"] >= 2
    # the adapter maps that name to a series the orchestrator really exports
    rules = yaml.safe_load(_one(rendered, "ConfigMap", "prometheus-adapter-rules")["data"]["config.yaml"])
    (rule,) = [r for r in rules["rules"] if r["name"]["as"] == "avatar_live_sessions"]
    assert rule["seriesQuery"].startswith(WS_CONNECTIONS._name + "{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    # Prometheus attaches exactly those labels on Kubernetes
    scrape = yaml.safe_load(_one(rendered, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    targets = {r.get("target_label") for job in scrape["scrape_configs"] for r in job["relabel_configs"]}
    assert {"namespace", "pod", "job"} <= targets
    pdb = _one(rendered, "PodDisruptionBudget", "orchestrator")
    labels = _one(rendered, "Deployment", "orchestrator")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_gpu_services_request_a_gpu(rendered: list[Object]) -> None:
    for name in ("vllm", "tts-fast", "tts-hq", "asr"):
        container = _container(_one(rendered, "Deployment", name))
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, name
    vllm = _container(_one(rendered, "Deployment", "vllm"))
    assert vllm["image"].split(":")[1] != "latest"


def test_data_stores_are_stateful_sets_with_volumes(rendered: list[Object]) -> None:
    for name in ("postgres", "redis", "minio"):
        sts = _one(rendered, "StatefulSet", name)
        assert sts["spec"]["volumeClaimTemplates"], name
        assert _one(rendered, "Service", name)["spec"]["clusterIP"] == "None"
    assert _container(_one(rendered, "StatefulSet", "postgres"))["image"].startswith("pgvector/pgvector:")


def test_ingress_has_tls_and_websocket_timeouts(rendered: list[Object]) -> None:
    ingress = _one(rendered, "Ingress", "avatar")
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] == "avatar-tls" and tls["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "orchestrator"
    public_url = _one(rendered, "ConfigMap", "avatar-config")["data"]["AVATAR_SERVER__PUBLIC_URL"]
    assert public_url == f"https://{tls['hosts'][0]}"


def test_every_reference_resolves(rendered: list[Object]) -> None:
    """Services select pods, volumes and env name ConfigMaps/PVCs/Secrets that exist."""
    configmaps = {o["metadata"]["name"] for o in rendered if o["kind"] == "ConfigMap"}
    claims = {o["metadata"]["name"] for o in rendered if o["kind"] == "PersistentVolumeClaim"}
    workloads = [o for o in rendered if o["kind"] in {"Deployment", "StatefulSet"}]
    templates = [o["spec"]["template"]["metadata"]["labels"] for o in workloads]
    problems = []
    for svc in (o for o in rendered if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        if not any(selector.items() <= labels.items() for labels in templates):
            problems.append(f"service {svc['metadata']['name']} selects no pod")
    for workload in workloads:
        pod = _pod(workload)
        own = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in pod.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in configmaps:
                problems.append(f"{volume['configMap']['name']} is not a rendered ConfigMap")
            if (
                "persistentVolumeClaim" in volume
                and volume["persistentVolumeClaim"]["claimName"] not in claims
            ):
                problems.append(f"{volume['persistentVolumeClaim']['claimName']} is not a rendered PVC")
        for container in pod["containers"]:
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            missing = mounts - {v["name"] for v in pod.get("volumes", [])} - own
            problems += [f"{workload['metadata']['name']}: mount {m} has no volume" for m in missing]
            for ref in container.get("envFrom", []):
                if ref.get("configMapRef", {}).get("name", "") not in configmaps:
                    problems.append(f"envFrom {ref} is not rendered")
            for env in container.get("env", []):
                secret = env.get("valueFrom", {}).get("secretKeyRef")
                if secret is not None and secret["name"] not in EXTERNAL_SECRETS:
                    problems.append(f"secret {secret['name']} is neither rendered nor documented")
    assert problems == []


def test_monitoring_config_maps_come_from_monitoring_files(rendered: list[Object]) -> None:
    dashboards = _one(rendered, "ConfigMap", "grafana-dashboards")
    files = sorted((ROOT / "monitoring" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards["data"] == {f.name: f.read_text() for f in files}
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    alerts = _one(rendered, "ConfigMap", "prometheus-alerts")
    assert alerts["data"]["alerts.yml"] == (ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text()
    scrape = yaml.safe_load(_one(rendered, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    assert scrape["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    prometheus = _one(rendered, "StatefulSet", "prometheus")
    mounts = {m["name"]: m["mountPath"] for m in _container(prometheus)["volumeMounts"]}
    assert mounts["rules"] == "/etc/prometheus/rules"


def test_kubernetes_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make setup-test` (scripts/setup.sh --with-test-tools)")
    config = yaml.safe_load((K8S / "base" / "monitoring" / "prometheus.yml").read_text())
    config["rule_files"] = [str(ROOT / "monitoring" / "prometheus" / "alerts.yml")]
    # Debian's promtool is built without Kubernetes discovery: the discovery block is checked here
    # and replaced by a static target for promtool, which checks the rest (relabelling included).
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    out = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
