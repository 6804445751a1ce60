"""The object-store overlay (k8s/overlays/s3): valid objects, no log volume, credentials from a
Secret (or the pod's cloud identity), the compaction CronJob running a real command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate as kv_validate
from typer.testing import CliRunner

from service.cli.main import app as cli
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "k8s" / "overlays" / "s3"
sys.path.insert(0, str(ROOT / "k8s"))
import render  # noqa: E402  (k8s/render.py is a script directory, not a package)

Obj = dict[str, Any]
SECRET_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "VIGIL_LOG_STORE"}


@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    return render.build(OVERLAY)


def _named(objs: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _pod(obj: Obj) -> Obj:
    spec = obj["spec"]
    pod: Obj = (spec["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else spec)["template"]
    return pod["spec"]


def test_every_object_is_valid_and_in_one_namespace(objs: list[Obj]) -> None:
    version = kv_utils.latest_version()
    for obj in objs:
        if not obj["apiVersion"].startswith("monitoring.coreos.com/"):
            kv_validate(obj, version, strict=True)
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {"vigil"}


def test_no_log_volume_only_a_spool_on_an_empty_dir(objs: list[Obj]) -> None:
    pod = _pod(_named(objs, "Deployment", "vigil"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/var/lib/vigil/data"]]
    claims = [v for v in volumes.values() if "persistentVolumeClaim" in v]
    assert [c["persistentVolumeClaim"]["claimName"] for c in claims] == ["vigil-models"]


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "vigil"), ("CronJob", "vigil-drift"), ("CronJob", "vigil-compact")],
)
def test_credentials_come_from_secrets_never_from_the_config_map(
    objs: list[Obj], kind: str, name: str
) -> None:
    (c,) = _pod(_named(objs, kind, name))["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env.keys() >= SECRET_VARIABLES
    for variable in SECRET_VARIABLES:
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == variable and ref["name"] in {"vigil-secrets", "vigil-s3-credentials"}
    assert {"configMapRef": {"name": "vigil-config"}} in c["envFrom"]
    assert not [o for o in objs if o["kind"] == "Secret"]
    data = _named(objs, "ConfigMap", "vigil-config")["data"]
    assert not {k for k in data if k.startswith("AWS_")}
    assert {
        k for k in data if k.removeprefix("VIGIL_").lower() not in Settings.model_fields
    } == set()


def test_the_compaction_job_runs_a_real_command(
    objs: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _named(objs, "CronJob", "vigil-compact")
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = _pod(job)["containers"]
    assert c["args"] == ["logs", "compact", "--older-than", "1h"]
    assert c["image"] == _pod(_named(objs, "Deployment", "vigil"))["containers"][0]["image"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    monkeypatch.setenv("VIGIL_LOG_STORE", str(tmp_path / "iolog"))
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, c["args"])
    assert result.exit_code == 0, result.output
    policy = _named(objs, "NetworkPolicy", "vigil-compact")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "compact"


def test_pods_reach_the_object_store_not_postgres(objs: list[Obj]) -> None:
    for name in ("vigil-server", "vigil-drift", "vigil-compact"):
        policy = _named(objs, "NetworkPolicy", name)
        ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
        assert 443 in ports and 5432 not in ports, name
