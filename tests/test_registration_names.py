"""Names refused at registration: feature names that are log columns, model names that are not
whole matches of the allowed pattern (a trailing newline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from model_store.demo import DEMO_MODEL, demo_data, demo_pipeline, holdout_mask
from model_store.errors import RegistrationError
from model_store.registration import register_onnx_file, register_sklearn
from model_store.store import ModelStore, check_model_name
from service.cli.main import app as cli

CLASHING = ["proba_x", "request_id", "role", "status", "version"]


def _schema(store: ModelStore, tmp_path: Path, rename: dict[int, str]) -> Path:
    """A schema for the demo model's ONNX file, with some features renamed."""
    features = [f.model_dump() for f in store.manifest(DEMO_MODEL, 1).features]
    for index, name in rename.items():
        features[index]["name"] = name
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"features": features}))
    return path


def _register_cli(store: ModelStore, name: str, schema: Path) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["models", "register", name, "--onnx", str(store.model_path(DEMO_MODEL, 1)),
         "--schema", str(schema)],
        env={"VIGIL_MODEL_STORE": str(store.root)},
    )  # fmt: skip
    return result.exit_code, " ".join(result.output.split())


def test_cli_refuses_features_named_like_log_columns(store: ModelStore, tmp_path: Path) -> None:
    schema = _schema(store, tmp_path, dict(enumerate(CLASHING)))
    code, output = _register_cli(store, "clash", schema)
    assert code == 1
    assert "reserved" in output and all(repr(name) in output for name in CLASHING)
    assert not (store.root / "clash").exists()
    # the same file with ordinary names registers
    code, output = _register_cli(store, "clash", _schema(store, tmp_path, {0: "status_code"}))
    assert code == 0, output


@pytest.mark.parametrize("name", ["status", "model", "label", "role", "target", "proba_benign"])
def test_python_api_refuses_a_reserved_feature_name(
    store: ModelStore, tmp_path: Path, name: str
) -> None:
    schema = json.loads(_schema(store, tmp_path, {3: name}).read_text())
    with pytest.raises(RegistrationError, match=f"'{name}'"):
        register_onnx_file(store, "clash", store.model_path(DEMO_MODEL, 1), schema)
    x, y, classes = demo_data()
    x = x.rename(columns={x.columns[3]: name})
    mask = holdout_mask(y)
    pipe = demo_pipeline().fit(x.to_numpy()[~mask], y[~mask])
    with pytest.raises(RegistrationError, match=f"'{name}'"):
        register_sklearn(store, "clash", pipe, x, y, holdout_mask=mask, class_names=classes)
    assert not (store.root / "clash").exists()


@pytest.mark.parametrize("name", ["breast-cancer\n", "breast-cancer\r\n", "x\n", "\nx"])
def test_model_names_must_match_whole(store: ModelStore, tmp_path: Path, name: str) -> None:
    with pytest.raises(RegistrationError, match="is invalid"):
        check_model_name(name)
    code, output = _register_cli(store, name, _schema(store, tmp_path, {}))
    assert code == 1 and "is invalid" in output
    assert sorted(p.name for p in store.root.iterdir()) == [DEMO_MODEL]


def test_http_does_not_serve_a_name_with_a_trailing_newline(
    client: TestClient, store: ModelStore, rows: list[dict[str, float]]
) -> None:
    # A folder such a name made before names were matched whole must not be served either.
    shutil.copytree(store.root / DEMO_MODEL, store.root / f"{DEMO_MODEL}\n")
    for path in (f"/v1/models/{DEMO_MODEL}%0A", f"/v2/models/{DEMO_MODEL}%0A/ready"):
        r = client.get(path)
        assert r.status_code == 404 and "control character" in r.json()["error"], (path, r.text)
    for path in (
        f"/v1/models/{DEMO_MODEL}%0A/predict",
        f"/v1/models/{DEMO_MODEL}/predict%0A",
        f"/v1/models/{DEMO_MODEL}/versions/1%0A/predict",
        f"/v2/models/{DEMO_MODEL}/infer%0A",
    ):
        r = client.post(path, json={"instances": rows[:1]})
        assert r.status_code == 404 and "control character" in r.json()["error"], (path, r.text)
    assert client.get(f"/v1/models/{DEMO_MODEL}").status_code == 200
    # and the store, below HTTP, does not list or resolve it
    assert store.models() == [DEMO_MODEL] and store.versions(f"{DEMO_MODEL}\n") == []
