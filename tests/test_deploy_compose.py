"""docker-compose.yml is well-formed and wired to what the repository and the image provide."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STACK = {"vigil", "drift", "postgres", "prometheus", "pushgateway", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def test_every_service_has_an_image_ports_and_known_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == STACK
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services) - {name}, name
    assert (ROOT / services["vigil"]["build"] / "Dockerfile").is_file()
    assert ports(services["vigil"]) == {Settings.model_fields["port"].default}
    assert ports(services["prometheus"]) == {9090}
    assert ports(services["pushgateway"]) == {9091}
    assert ports(services["grafana"]) == {3000}
    assert services["vigil"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_volumes_exist(compose: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_vigil_and_drift_share_the_image_store_and_log_store(compose: dict[str, Any]) -> None:
    vigil, drift = compose["services"]["vigil"], compose["services"]["drift"]
    assert drift["image"] == vigil["image"]
    assert drift["command"] == ["drift", "schedule", "--every", "15m"]
    assert drift["environment"]["VIGIL_LOG_STORE"] == vigil["environment"]["VIGIL_LOG_STORE"]
    assert vigil["environment"]["VIGIL_LOG_STORE"].startswith("postgresql://")
    host = re.match(r"postgresql://[^@]+@([^:/]+)", vigil["environment"]["VIGIL_LOG_STORE"])
    assert host
    assert host.group(1) in compose["services"]
    assert "models:/var/lib/vigil/models:ro" in drift["volumes"]
    for svc in (vigil, drift):
        for key in svc["environment"]:
            assert key.removeprefix("VIGIL_").lower() in Settings.model_fields, key


def test_prometheus_config_matches_monitoring_and_targets_the_stack(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    source = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())

    def jobs(cfg: dict[str, Any]) -> dict[str, tuple[str, bool]]:
        return {
            j["job_name"]: (j.get("metrics_path", "/metrics"), j.get("honor_labels", False))
            for j in cfg["scrape_configs"]
        }

    assert jobs(config) == jobs(source)
    assert config["rule_files"] == source["rule_files"]
    prometheus = compose["services"]["prometheus"]
    [mounted_config] = prometheus["configs"]
    config_dir = Path(mounted_config["target"]).parent
    mounts = {Path(v.split(":")[1]) for v in prometheus["volumes"]}
    assert {config_dir / rule for rule in config["rule_files"]} <= mounts
    services = compose["services"]
    for job in config["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services
            assert int(port) in ports(services[host])


def test_grafana_gets_the_provisioned_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in grafana["volumes"])
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provisioning = ROOT / "monitoring" / "grafana" / "provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "vigil.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts["./monitoring/grafana/dashboards"] == dashboards_path
    assert (ROOT / "monitoring" / "grafana" / "dashboards" / "vigil.json").is_file()
    datasource = yaml.safe_load((provisioning / "datasources" / "vigil.yml").read_text())
    host, port = re.fullmatch(
        r"http://([^:/]+):(\d+)", datasource["datasources"][0]["url"]
    ).groups()  # type: ignore[union-attr]
    assert host in compose["services"]
    assert int(port) in ports(compose["services"][host])
