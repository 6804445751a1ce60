"""The Kubernetes manifests: every overlay renders, every object is valid for a current Kubernetes,
and what the manifests assume (ports, probe paths, settings, alert rules) is what the code does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate as kv_validate
from starlette.routing import Match

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
OVERLAYS = ["dev", "prod"]
CRD_GROUP = "monitoring.coreos.com/"

sys.path.insert(0, str(K8S))
import render  # noqa: E402  (k8s/render.py is a script directory, not a package)

Obj = dict[str, Any]


@pytest.fixture(scope="module", params=OVERLAYS)
def objs(request: pytest.FixtureRequest) -> list[Obj]:
    return render.build(K8S / "overlays" / request.param)


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    if obj["kind"] == "CronJob":
        spec: Obj = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return obj["spec"]["template"]["spec"]


def container(obj: Obj) -> Obj:
    containers: list[Obj] = pod_spec(obj)["containers"]
    assert len(containers) == 1
    return containers[0]


def serves_get(path: str) -> bool:
    """Whether the app built by the service code routes GET `path` (Starlette's own matching)."""
    settings = Settings(model_store=Path("/nonexistent/models"), data_dir=Path("/nonexistent"))
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(r.matches(scope)[0] is Match.FULL for r in create_app(settings).routes)


def test_generated_objects_equal_monitoring_sources() -> None:
    check = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rule = yaml.safe_load((K8S / "base" / "prometheusrule.yaml").read_text())
    source = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    cm = yaml.safe_load((K8S / "base" / "grafana-dashboard.yaml").read_text())
    dashboard = (ROOT / "monitoring" / "grafana" / "dashboards" / "vigil.json").read_text()
    assert json.loads(cm["data"]["vigil.json"]) == json.loads(dashboard)


def test_every_object_is_valid_for_current_kubernetes(objs: list[Obj]) -> None:
    version = kv_utils.latest_version()
    assert tuple(map(int, version.split(".")[:2])) >= (1, 30)
    validated = 0
    for obj in objs:
        if obj["apiVersion"].startswith(CRD_GROUP):
            continue  # no schema shipped for CRDs; their structure is checked below
        kv_validate(obj, version, strict=True)
        validated += 1
    assert validated >= 10


def test_rendered_prometheus_rule_is_monitoring_alerts(objs: list[Obj]) -> None:
    rule = one(objs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    source = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"]
    for group in rule["spec"]["groups"]:
        assert group["name"]
        assert group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert r["expr"]
    # The alerts select job="vigil": the ServiceMonitor's job label is the Service's name.
    assert 'job="vigil"' in yaml.safe_dump(source)
    assert one(objs, "Service")["metadata"]["name"] == "vigil"


def test_service_monitor_scrapes_the_metrics_route(objs: list[Obj]) -> None:
    monitor, service = one(objs, "ServiceMonitor"), one(objs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in port_names
    assert serves_get(endpoint["path"])


def test_ports_and_probes_agree_with_the_service_code(objs: list[Obj]) -> None:
    deploy, service, config = (
        one(objs, "Deployment"),
        one(objs, "Service"),
        one(objs, "ConfigMap", "vigil-config"),
    )
    c = container(deploy)
    [port] = c["ports"]
    default_port = Settings.model_fields["port"].default
    assert port["containerPort"] == default_port == int(config["data"]["VIGIL_PORT"])
    assert config["data"]["VIGIL_HOST"] == "0.0.0.0"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    assert (
        service["spec"]["selector"].items()
        <= deploy["spec"]["template"]["metadata"]["labels"].items()
    )
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "httpGet" in c["startupProbe"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert serves_get(c[probe]["httpGet"]["path"])
        assert c[probe]["httpGet"]["port"] == port["name"]


def test_config_map_holds_only_real_settings_and_production_accepts_them(
    objs: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = one(objs, "ConfigMap", "vigil-config")["data"]
    unknown = {k for k in data if k.removeprefix("VIGIL_").lower() not in Settings.model_fields}
    assert not unknown, f"ConfigMap keys that are not settings: {unknown}"
    assert data["VIGIL_WORKERS"] == "1"  # one uvicorn worker per pod; scale with replicas
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("VIGIL_ADMIN_TOKEN", "x" * 24)
    settings = Settings()  # the production validator refuses unsafe values at start-up
    assert settings.workers == 1
    assert not settings.train_demo_if_empty  # the store is mounted read-only


def test_secrets_come_from_a_secret_that_is_not_committed(objs: list[Obj]) -> None:
    assert not [o for o in objs if o["kind"] == "Secret"]
    for workload in (one(objs, "Deployment"), one(objs, "CronJob")):
        env = {e["name"]: e for e in container(workload).get("env", [])}
        ref = env["VIGIL_LOG_STORE"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "vigil-secrets"
    env = {e["name"]: e for e in container(one(objs, "Deployment"))["env"]}
    assert env["VIGIL_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "vigil-secrets"
    example = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    kv_validate(example, kv_utils.latest_version(), strict=True)
    assert set(example["stringData"]) == {"VIGIL_LOG_STORE", "VIGIL_ADMIN_TOKEN"}
    assert all("CHANGE-ME" in v for v in example["stringData"].values())


def _dockerfile_uid() -> int:
    match = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match
    return int(match.group(1))


def test_pods_are_locked_down(objs: list[Obj]) -> None:
    sa = one(objs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    claims = {o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for workload in (one(objs, "Deployment"), one(objs, "CronJob")):
        spec = pod_spec(workload)
        assert spec["serviceAccountName"] == sa["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == _dockerfile_uid()
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "limits" in c["resources"]
            assert "requests" in c["resources"]
        mounts = {m["mountPath"]: m for m in container(workload)["volumeMounts"]}
        assert mounts["/var/lib/vigil/models"].get("readOnly") is True
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        data = volumes[mounts["/var/lib/vigil/data"]["name"]]
        if workload["kind"] == "Deployment":
            assert "emptyDir" in data  # the spool: flushed on SIGTERM, kept across restarts
        else:  # the drift run index and reports outlive each Job
            assert data["persistentVolumeClaim"]["claimName"] in claims


def test_shutdown_fits_the_grace_period(objs: list[Obj]) -> None:
    spec = pod_spec(one(objs, "Deployment"))
    pre_stop = container(one(objs, "Deployment"))["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    cli = (ROOT / "service" / "cli" / "main.py").read_text()
    match = re.search(r"timeout_graceful_shutdown=(\d+)", cli)
    assert match, "vigil serve no longer sets uvicorn's graceful shutdown timeout"
    drain = int(match.group(1))
    # preStop, then uvicorn drains in-flight requests, then the spool is flushed: leave 15 s.
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 15
    spread = spec["topologySpreadConstraints"]
    assert "kubernetes.io/hostname" in {t["topologyKey"] for t in spread}


def test_autoscaling_and_disruption(objs: list[Obj]) -> None:
    hpa, deploy, pdb = (
        one(objs, "HorizontalPodAutoscaler"),
        one(objs, "Deployment"),
        one(objs, "PodDisruptionBudget"),
    )
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert (
        1 <= hpa["spec"]["minReplicas"] == deploy["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    )
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policy_admits_http_only_and_reaches_postgres_and_dns(objs: list[Obj]) -> None:
    policy = one(objs, "NetworkPolicy", "vigil-server")
    labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert ingress_ports == ["http"]
    egress = {
        (p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
    }
    assert egress == {(5432, "TCP"), (53, "UDP"), (53, "TCP")}
    drift = one(objs, "NetworkPolicy", "vigil-drift")
    assert "ingress" not in drift["spec"]
    assert "Ingress" in drift["spec"]["policyTypes"]


def test_drift_cronjob(objs: list[Obj]) -> None:
    job, deploy = one(objs, "CronJob"), one(objs, "Deployment")
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    c = container(job)
    assert c["args"][:4] == ["drift", "run", "--model", "breast-cancer"]
    assert c["image"] == container(deploy)["image"]
    config = one(objs, "ConfigMap", "vigil-config")["data"]
    assert config["VIGIL_PUSHGATEWAY_URL"].startswith("http")
    assert {"configMapRef": {"name": "vigil-config"}} in c["envFrom"]


def test_overlays_differ_where_they_should() -> None:
    dev, prod = (render.build(K8S / "overlays" / o) for o in OVERLAYS)
    images = {container(one(x, "Deployment"))["image"] for x in (dev, prod)}
    assert all(":" in i and not i.endswith(":latest") for i in images)
    assert one(dev, "Deployment")["spec"]["replicas"] < one(prod, "Deployment")["spec"]["replicas"]
    hpa = [one(x, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] for x in (dev, prod)]
    assert hpa[0] < hpa[1]
    namespaces = {o["metadata"].get("namespace") for o in prod if o["kind"] != "Namespace"}
    assert namespaces == {one(prod, "Namespace")["metadata"]["name"]}


def test_grafana_dashboard_config_map_is_picked_up(objs: list[Obj]) -> None:
    cm = one(objs, "ConfigMap", "vigil-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["vigil.json"])["panels"]
