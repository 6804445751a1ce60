"""`vigil simulate`: realistic demo traffic, optional drift and noisy feedback, to a real server."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from monitoring.simulate import SimulationError, noisy_labels, run_simulation, traffic
from service.cli.monitoring import app
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


def test_unreachable_service_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SimulationError, match="cannot reach Vigil"):
        run_simulation(url, MODEL, 10)
    result = CliRunner().invoke(app, ["simulate", "--model", MODEL, "--rows", "5", "--url", url])
    assert result.exit_code == 1 and "cannot reach Vigil" in result.output
