"""The streaming sampler: candidates are cut back lazily, and the sample is still exactly the
rows of the k smallest keys, however the window was split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from monitoring.drift.window import Sampler


@pytest.mark.parametrize("step", [1, 37, 299, 300, 301, 4999])
def test_sample_is_the_rows_of_the_smallest_keys_whatever_the_batches(step: int) -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=5000), "prediction": "benign", "label": None})
    keys = np.random.default_rng(7).random(len(frame))  # the keys Sampler(seed=7) draws
    expected = frame.iloc[np.sort(np.argsort(keys)[:300])].reset_index(drop=True)
    sampler = Sampler(300, seed=7)
    for start in range(0, len(frame), step):
        sampler.add(frame.iloc[start : start + step])
    got = sampler.result()
    assert got.rows == 5000
    pd.testing.assert_frame_equal(got.sample, expected)


def test_a_window_smaller_than_the_cap_is_kept_whole() -> None:
    frame = pd.DataFrame({"x": np.arange(50.0)})
    sampler = Sampler(300, seed=0)
    for start in range(0, 50, 7):
        sampler.add(frame.iloc[start : start + 7])
    pd.testing.assert_frame_equal(sampler.result().sample, frame)


def test_arrow_batches_give_what_pandas_frames_give() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "never_finite": np.where(rng.random(n) < 0.5, np.inf, np.nan),
            "count": rng.integers(0, 9, size=n),
            "prediction": np.where(rng.random(n) < 0.5, "benign", "malignant"),
            "proba_malignant": rng.random(n),
            "label": np.where(rng.random(n) < 0.1, "benign", None),
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    from_pandas, from_arrow = Sampler(400, seed=5), Sampler(400, seed=5)
    for start in range(0, n, 250):
        from_pandas.add(frame.iloc[start : start + 250])
        from_arrow.add(table.slice(start, 250).combine_chunks().to_batches()[0])
    a, b = from_pandas.result(), from_arrow.result()
    pd.testing.assert_frame_equal(a.sample, b.sample)
    pd.testing.assert_frame_equal(a.labelled, b.labelled)
    assert a.finite == b.finite == {"x", "count", "proba_malignant"}
    assert a.rows == b.rows == n
