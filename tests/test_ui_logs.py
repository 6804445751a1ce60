"""The Logs page: the count and preview of a window, and the download, which is byte for byte
what `vigil logs export` writes (the same function, streamed from a thread)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.iolog.export import export
from service.iolog.reader import open_predictions
from service.settings import Settings
from service.ui import logs
from tests.conftest import MODEL
from tests.servers import wait_stored


def _send(client: TestClient, rows: list[dict[str, float]], n: int, version: int) -> None:
    for i in range(n):
        r = client.post(
            f"/v1/models/{MODEL}/versions/{version}/predict", json={"instances": rows[i : i + 3]}
        )
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("version", [None, 2])
def test_download_is_the_export_byte_for_byte(
    client: TestClient, settings: Settings, rows: list[dict[str, float]], tmp_path: Path,
    fmt: str, version: int | None,
) -> None:  # fmt: skip
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    _send(client, rows, 30, 1)
    _send(client, rows, 20, 2)
    wait_stored(settings, MODEL, 3 * 50)  # both reads then see the same files, in one order
    query = f"since={since:%Y-%m-%dT%H:%M:%S}" + ("" if version is None else f"&version={version}")
    r = client.get(f"/ui/models/{MODEL}/logs/export.{fmt}?{query}")
    assert r.status_code == 200, r.text
    name = f"{MODEL}{'' if version is None else f'-v{version}'}.{fmt}"
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
    out = tmp_path / f"cli.{fmt}"
    done = export(open_predictions(settings, MODEL, version, since), out)
    assert done.rows == 3 * (20 if version else 50)
    assert r.content == out.read_bytes()


def test_page_counts_the_window_and_previews_100_rows(
    client: TestClient, rows: list[dict[str, float]]
) -> None:
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    _send(client, rows, 40, 1)  # 120 rows
    page = client.get(f"/ui/models/{MODEL}/logs?since={since:%Y-%m-%dT%H:%M:%S}")
    assert page.status_code == 200
    assert re.search(r'id="row-count">120<', page.text)
    body = page.text.split('<table id="preview"', 1)[1]
    assert body.count("<tr>") == 1 + 100  # the header and 100 rows
    assert "<th>mean_radius</th>" in body and "<th>label</th>" in body


def test_an_unreadable_log_file_is_an_error_page_not_half_a_file(
    client: TestClient, settings: Settings, rows: list[dict[str, float]]
) -> None:
    _send(client, rows, 5, 1)
    day = datetime.now(UTC).date().isoformat()
    broken = Path(settings.log_store_url) / "predictions" / f"model={MODEL}" / "version=1"
    (broken / f"date={day}").mkdir(parents=True, exist_ok=True)
    (broken / f"date={day}" / "part-broken.parquet").write_bytes(b"not parquet")
    r = client.get(f"/ui/models/{MODEL}/logs/export.csv")
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "cannot read log file" in r.text and "part-broken.parquet" in r.text


def test_an_abandoned_download_stops_its_writer_thread(
    client: TestClient, settings: Settings, rows: list[dict[str, float]], tmp_path: Path
) -> None:
    for i in range(150):  # 15,000 rows: more chunks of CSV than the pipe holds
        batch = [rows[(i * 100 + j) % len(rows)] for j in range(100)]
        assert client.post(f"/v1/models/{MODEL}/predict", json={"instances": batch}).is_success
    size = export(open_predictions(settings, MODEL), tmp_path / "all.csv").rows
    assert size == 15_000 and (tmp_path / "all.csv").stat().st_size > 12 * logs.CHUNK_BYTES
    pipe, writer = logs.stream_export(settings, logs.Window(MODEL, None, None, None), ".csv")
    first = pipe.get()
    assert isinstance(first, bytes) and len(first) >= logs.CHUNK_BYTES
    writer.join(timeout=2)
    assert writer.is_alive()  # blocked: the pipe is full and nobody reads
    pipe.abandoned.set()  # what the response does when the client goes away
    writer.join(timeout=10)
    assert not writer.is_alive()
