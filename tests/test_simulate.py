"""`vigil simulate`: realistic demo traffic, optional drift and noisy feedback, to a real server."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from model_store.demo import DEMO_NAMES, DIABETES_MIXED, train_demo_model
from model_store.store import ModelStore
from monitoring.simulate import (
    CategoryShift,
    SimulationError,
    demo_dataset,
    noisy_labels,
    noisy_targets,
    run_simulation,
    traffic,
)
from service.cli.monitoring import _drift_pairs, app
from service.iolog.reader import read_feedback, read_predictions
from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer, free_port


def test_traffic_looks_like_the_demo_data_and_shifts_on_request(
    demo: tuple[pd.DataFrame, np.ndarray, list[str]],
) -> None:
    x = demo[0]
    plain, labels = traffic(5000, seed=1)
    shifted, _ = traffic(5000, seed=1, drift={"mean_radius": 1.0})
    assert list(plain.columns) == list(x.columns) and len(labels) == 5000
    assert set(labels) == set(demo[2])
    sd = x["mean_radius"].std()
    assert abs(plain["mean_radius"].mean() - x["mean_radius"].mean()) < 0.1 * sd
    assert shifted["mean_radius"].mean() - plain["mean_radius"].mean() == pytest.approx(sd)
    assert (plain >= 0).all().all()  # noise never makes a size negative
    assert not plain.duplicated().any()  # rows are perturbed, not copies of the demo rows
    with pytest.raises(SimulationError, match="unknown features"):
        traffic(10, drift={"no_such_feature": 1.0})


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_every_demo_model_has_traffic_with_its_columns_and_truth(name: str) -> None:
    data = demo_dataset(name)
    x, truth = traffic(2000, seed=2, model=name)
    assert list(x.columns) == list(data.x.columns) and len(truth) == 2000
    if data.regression:
        assert truth.dtype == np.float64 and data.truth.min() <= truth.min()
    else:
        assert data.classes is not None and set(truth) == set(data.classes)
    for column in x.columns:
        if not pd.api.types.is_numeric_dtype(data.x[column]):  # categories are kept as they are
            assert set(x[column]) <= set(data.x[column])


def test_a_category_mix_moves_to_the_requested_share_and_may_bring_new_categories() -> None:
    x, _ = traffic(5000, seed=3, model=DIABETES_MIXED)
    before = (x["age_band"] == "55+").mean()
    more, _ = traffic(
        5000, seed=3, model=DIABETES_MIXED, drift={"age_band": CategoryShift("55+", 0.8)}
    )
    fewer, _ = traffic(
        5000, seed=3, model=DIABETES_MIXED, drift={"sex": CategoryShift("male", 0.1)}
    )
    new, _ = traffic(5000, seed=3, model=DIABETES_MIXED, drift={"sex": CategoryShift("other", 0.2)})
    assert before < 0.5 and (more["age_band"] == "55+").mean() == pytest.approx(0.8, abs=0.02)
    assert (fewer["sex"] == "male").mean() == pytest.approx(0.1, abs=0.02)
    assert set(fewer["sex"]) == {"female", "male"}  # rows moved out went to the other category
    assert (new["sex"] == "other").mean() == pytest.approx(0.2, abs=0.02)
    assert (more["bmi"] == x["bmi"]).all()  # only the named feature moved
    with pytest.raises(SimulationError, match="categorical: shift its mix"):
        traffic(10, model=DIABETES_MIXED, drift={"sex": 1.0})
    with pytest.raises(SimulationError, match="numeric: shift it by standard deviations"):
        traffic(10, model=DIABETES_MIXED, drift={"bmi": CategoryShift("a", 0.5)})
    with pytest.raises(SimulationError, match="within"):
        traffic(10, model=DIABETES_MIXED, drift={"sex": CategoryShift("male", 1.5)})
    with pytest.raises(SimulationError, match="not a demo model"):
        traffic(10, model="my-own-model")


def test_drift_option_reads_shifts_and_category_mixes() -> None:
    assert _drift_pairs(["bmi=1.5", "age_band=55+:0.8", "sex=a:b:0.25"]) == {
        "bmi": 1.5,
        "age_band": CategoryShift("55+", 0.8),
        "sex": CategoryShift("a:b", 0.25),
    }
    for bad in ("bmi", "=1", "bmi=x", "sex=female:x", "sex=:0.5"):
        with pytest.raises(typer.BadParameter):
            _drift_pairs([bad])


def test_label_noise_of_a_regressor_is_additive() -> None:
    targets = np.full(20_000, 100.0)
    noisy = noisy_targets(targets, 0.5, 80.0, np.random.default_rng(0))
    assert float(np.mean(noisy)) == pytest.approx(100.0, abs=1.0)
    assert float(np.std(noisy)) == pytest.approx(40.0, rel=0.03)
    assert (noisy_targets(targets, 0.0, 80.0, np.random.default_rng(0)) == targets).all()
    with pytest.raises(SimulationError, match="finite number"):
        noisy_targets(targets, float("nan"), 80.0, np.random.default_rng(0))


def test_label_noise_flips_about_the_requested_share() -> None:
    labels = ["benign"] * 10_000
    noisy, flipped = noisy_labels(labels, 0.3, ["malignant", "benign"], np.random.default_rng(0))
    assert flipped == sum(a != b for a, b in zip(labels, noisy, strict=True))
    assert 0.28 < flipped / 10_000 < 0.32


def test_cli_sends_traffic_and_feedback_that_land_in_the_log(
    vigil_server: Callable[..., VigilServer], settings: Settings
) -> None:
    token = {"VIGIL_FEEDBACK_TOKEN": "simulate-feedback-token-0b7d"}  # the server requires it
    server = vigil_server(env=token)
    args = ["simulate", "--model", MODEL, "--rows", "120", "--batch", "7", "--url", server.url]
    result = CliRunner().invoke(app, [*args, "--feedback", "--label-noise", "0.25"], env=token)
    assert result.exit_code == 0, result.output
    assert "sent 120 rows in 18 requests" in result.output and "0 errors" in result.output
    logged = read_predictions(settings, MODEL)
    assert len(logged) == 120 and logged["label"].notna().all()
    agree = (logged["label"] == logged["prediction"]).mean()
    assert 0.55 < agree < 0.9  # a quarter of the labels were flipped
    assert set(read_feedback(settings, MODEL)["source"]) == {"token"}


def test_cli_sends_a_regressors_category_mix_and_noisy_targets(
    vigil_server: Callable[..., VigilServer], settings: Settings, store: ModelStore
) -> None:
    train_demo_model(store, DIABETES_MIXED)
    server = vigil_server()
    args = ["simulate", "--model", DIABETES_MIXED, "--rows", "400", "--batch", "50"]
    drift = ["--drift", "sex=female:0.9", "--drift", "age_band=unknown:0.2", "--drift", "bmi=1"]
    noise = ["--feedback", "--label-noise", "1.5"]  # SDs of the target: above 1 is allowed here
    result = CliRunner().invoke(app, [*args, *drift, *noise, "--url", server.url])
    assert result.exit_code == 0, result.output
    assert "(400 labels with added noise)" in result.output
    logged = read_predictions(settings, DIABETES_MIXED)
    assert len(logged) == 400 and logged["sex"].dtype == object
    assert (logged["sex"] == "female").mean() == pytest.approx(0.9, abs=0.05)
    assert (logged["age_band"] == "unknown").mean() == pytest.approx(0.2, abs=0.05)
    errors = logged["label"].map(float) - logged["prediction"]
    assert float(errors.std()) > 100  # 1.5 target SDs (about 115) of noise on top of the model's
    flip = CliRunner().invoke(app, ["simulate", "--model", MODEL, "--feedback",
                                    "--label-noise", "1.5", "--url", server.url])  # fmt: skip
    assert flip.exit_code == 1 and "within [0, 1]" in flip.output


def test_unreachable_service_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SimulationError, match="cannot reach Vigil"):
        run_simulation(url, MODEL, 10)
    result = CliRunner().invoke(app, ["simulate", "--model", MODEL, "--rows", "5", "--url", url])
    assert result.exit_code == 1 and "cannot reach Vigil" in result.output
