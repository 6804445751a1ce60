"""``open_store``: one dispatch on VIGIL_LOG_STORE, and its password never printed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app as cli
from service.errors import LogStoreError
from service.iolog.deliver import Deliverer
from service.iolog.parquet_store import ParquetStore
from service.iolog.postgres_store import PostgresStore
from service.iolog.store import open_store
from service.metrics import DeliveryMetrics
from service.settings import Settings, redact_url
from tests.servers import free_port

SECRET = "s3cr3t-Pa55"


def test_open_store_picks_the_backend_from_the_setting(tmp_path: Path) -> None:
    parquet = open_store(Settings(data_dir=tmp_path))
    assert isinstance(parquet, ParquetStore) and parquet.root == tmp_path / "iolog"
    for scheme in ("postgresql", "postgres"):
        # No connection is made: the service must start while PostgreSQL is away.
        store = open_store(Settings(log_store=f"{scheme}://vigil:{SECRET}@127.0.0.1:1/logs"))
        assert isinstance(store, PostgresStore)
        assert SECRET not in repr(store) and "vigil:***@127.0.0.1" in repr(store)


def test_settings_never_show_the_password() -> None:
    settings = Settings(log_store=f"postgresql://vigil:{SECRET}@db:5432/logs?sslmode=require")
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.log_store_display == "postgresql://vigil:***@db:5432/logs?sslmode=require"
    assert redact_url(f"postgresql://db/logs?user=vigil&password={SECRET}").endswith("password=***")
    assert redact_url("/var/lib/vigil/iolog") == "/var/lib/vigil/iolog"


def test_a_malformed_url_is_reported_masked(tmp_path: Path) -> None:
    url = f"postgresql://vigil:{SECRET}@[::1/logs"  # libpq quotes the whole URL back
    with pytest.raises(LogStoreError) as caught:
        open_store(Settings(log_store=url))
    assert SECRET not in str(caught.value) and "vigil:***@" in str(caught.value)
    env = {"VIGIL_LOG_STORE": url, "VIGIL_DATA_DIR": str(tmp_path)}
    for args in (["logs", "prune", "--older-than", "30d"],
                 ["logs", "export", "--model", "m", "--out", str(tmp_path / "x.csv")]):  # fmt: skip
        result = CliRunner().invoke(cli, args, env=env)
        flat = result.output.replace("\n", "")  # rich wraps long lines
        assert result.exit_code == 1 and "not a valid PostgreSQL URL" in flat
        assert SECRET not in flat


def test_an_unreachable_server_is_reported_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://vigil:{SECRET}@127.0.0.1:{free_port()}/logs?connect_timeout=2"
    settings = Settings(log_store=url, data_dir=tmp_path)
    result = CliRunner().invoke(
        cli, ["logs", "prune", "--older-than", "1d"], env={"VIGIL_LOG_STORE": url}
    )
    assert result.exit_code != 0 and SECRET not in result.output.replace("\n", "")
    assert SECRET not in repr(result.exception) and "Connection refused" in str(result.exception)
    # The deliverer logs the failure and keeps the segment for the next round.
    segment = settings.spool_dir / "worker" / "seg-000001.seg"
    segment.parent.mkdir(parents=True)
    segment.write_bytes(b"")
    with caplog.at_level(logging.ERROR, logger="vigil.iolog"):
        Deliverer(settings, DeliveryMetrics()).run_once()
    assert caplog.records and SECRET not in caplog.text
