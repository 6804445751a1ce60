"""The one settings class of Vigil, read from the environment with the prefix ``VIGIL_``."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.durations import parse_duration


def _duration(value: object) -> object:
    # the command line's grammar (30s, 15m, 30d) for duration settings, not ISO 8601
    return parse_duration(value, allow_zero=True) if isinstance(value, str) else value


_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^\s/?#]*@")
_PARAM_PASSWORD = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``postgresql://user:***@host/db``: the password masked, in the netloc or a parameter.

    Regular expressions rather than a URL parser: a malformed URL must be masked too.
    """
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


def scrub(text: str, url: str) -> str:
    """``text`` (say, a driver's error message) without the password of ``url`` in any form."""
    secrets = [m.group(0)[len(m.group(1)) : -1] for m in _URL_PASSWORD.finditer(url)]
    secrets += [m.group(0)[len(m.group(1)) :] for m in _PARAM_PASSWORD.finditer(url)]
    text = text.replace(url, redact_url(url))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _default_home() -> Path:
    return Path(os.environ.get("VIGIL_HOME", Path.cwd() / ".vigil"))


class FsyncPolicy(StrEnum):
    """When the I/O log spool is fsynced to disk."""

    NEVER = "never"
    INTERVAL = "interval"
    ALWAYS = "always"


class DriftRule(StrEnum):
    """How the drift job decides dataset drift from the per-feature verdicts."""

    SHARE = "share"
    IMPORTANCE = "importance"


class OnLogFailure(StrEnum):
    """What the service does when an I/O record cannot be written."""

    REJECT = "reject"
    SERVE = "serve"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Everything Vigil can be configured with; each field maps to ``VIGIL_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", extra="ignore")

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="`production` refuses unsafe defaults (e.g. demo training at start).",
    )
    model_store: Path = Field(
        default_factory=lambda: _default_home() / "models",
        description="Directory of the model store: <store>/<model>/<version>/.",
    )
    data_dir: Path = Field(
        default_factory=lambda: _default_home() / "data",
        description="Directory for the I/O log spool, the Parquet log store and drift reports.",
    )
    log_store: str = Field(
        "",
        description="Where I/O records land: a directory path (Parquet), a postgresql:// URL or "
        "s3://bucket/prefix (an object store; credentials from the standard AWS chain). "
        "Empty means <data_dir>/iolog. Shown only through ``log_store_display``.",
        repr=False,  # a URL can carry a password: keep it out of reprs and tracebacks
    )
    s3_endpoint_url: str = Field(
        "",
        description="Endpoint of an S3-compatible store (MinIO, Ceph, moto) for an s3:// log "
        "store, e.g. http://minio:9000; empty: AWS S3 itself.",
    )
    s3_region: str = Field(
        "", description="Region of the s3:// log store's bucket; empty: the AWS SDK's default."
    )
    s3_timeout_s: float = Field(
        10.0, gt=0, description="Connect and request timeout for the s3:// log store."
    )
    s3_max_attempts: int = Field(
        3,
        ge=1,
        description="Tries of one S3 request before it fails (the deliverer retries failed "
        "segments every round anyway; fewer tries report an outage sooner).",
    )
    iolog_enabled: bool = Field(True, description="Log every request's inputs and outputs.")
    fsync: FsyncPolicy = Field(
        FsyncPolicy.INTERVAL,
        description="Spool fsync policy: `never` (process-crash safe), `interval` "
        "(also power-loss safe up to fsync_interval_s), `always` (fsync before every ack).",
    )
    fsync_interval_s: float = Field(1.0, gt=0, description="Seconds between spool fsyncs.")
    on_log_failure: OnLogFailure = Field(
        OnLogFailure.REJECT,
        description="`reject`: answer 503 when the log cannot be written; `serve`: keep serving "
        "and count unlogged records in vigil_iolog_unlogged_records_total.",
    )
    spool_segment_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Spool segment size before it is rotated."
    )
    spool_segment_seconds: float = Field(
        10.0, gt=0, description="Age after which a non-empty spool segment is rotated."
    )
    compact_interval_s: float = Field(
        2.0, gt=0, description="How often closed spool segments are moved into the store."
    )
    delivery_max_attempts: int = Field(
        5,
        ge=1,
        description="Delivery attempts (one per round) before a segment that fails by its own "
        "fault, not the store's, moves to <spool>/quarantine/ so later segments are delivered.",
    )
    delivery_idle_backlog_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="The deliverer process converts segments on a thread that runs only when "
        "the CPU is otherwise idle; past this many bytes of closed spool segments it delivers "
        "at its own priority (nice 10), until the backlog is under half of it.",
    )
    pii_secret: SecretStr = Field(
        SecretStr(""), description="Key for HMAC-SHA256 hashing of features marked PII `hash`."
    )
    metrics_enabled: bool = Field(True, description="Export Prometheus metrics at /metrics.")
    admin_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token for the admin API; empty disables the admin API entirely.",
    )
    feedback_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token required by POST /v1/feedback; empty: anyone may send labels "
        "(recorded with source `anonymous`, `token` when set).",
    )
    admin_name: str = Field(
        "admin",
        min_length=1,
        description="Who the admin token stands for in the model history (`who` of changes "
        "made through the admin API).",
    )
    ui_enabled: bool = Field(
        True,
        description="Serve the console at /ui (with VIGIL_ADMIN_TOKEN: behind a token login; "
        "without: only on 127.0.0.1 in development).",
    )
    max_rows: int = Field(10_000, gt=0, description="Largest batch accepted in one request.")
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body accepted, in bytes."
    )
    body_drain_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Of a body over max_body_bytes, up to this many more bytes are read and "
        "dropped so that the client receives the 413 instead of a connection reset; larger "
        "bodies (or a declared Content-Length above it) get the connection closed.",
    )
    body_drain_s: float = Field(
        5.0, ge=0, description="Longest time spent reading and dropping a refused body."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Requests running longer than this are answered 503."
    )
    ort_intra_op_threads: int = Field(
        1, ge=0, description="onnxruntime intra-op threads per session (0 = onnxruntime default)."
    )
    ort_inter_op_threads: int = Field(1, ge=0, description="onnxruntime inter-op threads.")
    alias: str = Field("production", description="Alias naming the default version served.")
    max_loaded_versions: int = Field(
        4,
        ge=1,
        description="Versions of one model kept loaded per worker; the least recently used is "
        "unloaded first, never the alias's version (pinned versions count towards the bound).",
    )
    alias_poll_s: float = Field(
        1.0, gt=0, description="How often the store's aliases are checked for promote/rollback."
    )
    rollout_eval_s: float = Field(
        10.0,
        gt=0,
        description="How often the automatic rollout loop evaluates the gates of a rollout "
        "started with auto (one replica at a time, holding the model's rollout lease).",
    )
    rollout_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 25.0],
        description="Canary percentages the automatic loop steps through after shadow; the "
        "step after the last promotes.",
    )
    shadow_timeout_s: float = Field(
        1.0,
        gt=0,
        description="A shadow candidate slower than this on a large batch is logged as failed "
        "and no longer waited for (small batches run inline, in microseconds).",
    )
    train_demo_if_empty: bool = Field(
        True, description="`vigil serve` trains and registers the demo model if the store is empty."
    )
    host: str = Field("127.0.0.1", description="Bind address of `vigil serve`.")
    port: int = Field(8000, ge=1, le=65535, description="Port of `vigil serve`.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    pushgateway_url: str = Field("", description="Pushgateway the drift job pushes gauges to.")
    drift_min_rows: int = Field(
        100, gt=0, description="Fewer rows than this in a window: status insufficient_data."
    )
    drift_max_rows: int = Field(
        50_000, gt=0, description="Windows larger than this are sampled down to it."
    )
    drift_performance_tolerance: float = Field(
        0.05, ge=0, description="Drop in accuracy/F1 vs reference that flags model drift."
    )
    drift_regression_tolerance: float = Field(
        0.2,
        ge=0,
        description="Relative rise of a regressor's MAE or RMSE vs reference that flags model "
        "drift (0.2: errors 20 % larger).",
    )
    drift_min_labelled_rows: int = Field(
        50, gt=0, description="Labelled rows needed in a window to judge model drift."
    )
    drift_rule: DriftRule = Field(
        DriftRule.IMPORTANCE,
        description="Dataset-drift rule: `importance` (the drifted features' share of the "
        "manifest's permutation importance ≥ VIGIL_DRIFT_IMPORTANCE_THRESHOLD; `share` when a "
        "manifest has none) or `share` (Evidently's: drifted features / features ≥ 0.5).",
    )
    drift_importance_threshold: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Importance-weighted share of drifted features that flags data drift.",
    )
    drift_segment_by: str = Field(
        "",
        description="Metadata key or categorical feature whose values the drift job also "
        "analyses one by one (empty: no segments); `--segment-by` overrides it per run.",
    )
    drift_segment_min_rows: int = Field(
        100,
        gt=0,
        description="Rows a segment needs to be analysed; smaller ones are listed as "
        "insufficient_data.",
    )
    drift_reports_max_age: Annotated[timedelta, BeforeValidator(_duration)] = Field(
        timedelta(days=30),
        description="Drift report folders older than this are deleted after each drift run and "
        "by `vigil logs prune` (30s, 12h, 30d, 2w; the newest run of a model is always kept).",
    )
    drift_reports_max_runs: int = Field(
        1000, ge=1, description="At most this many drift report folders are kept per model."
    )

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def log_store_url(self) -> str:
        """The real location, password included: hand it to a driver, never to a message."""
        return self.log_store or str(self.data_dir / "iolog")

    @property
    def log_store_display(self) -> str:
        """The location as it may be printed or logged: any password masked."""
        return redact_url(self.log_store_url)

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.environment is Environment.PRODUCTION:
            if self.train_demo_if_empty:
                raise ValueError(
                    "VIGIL_TRAIN_DEMO_IF_EMPTY must be false when VIGIL_ENVIRONMENT=production"
                )
            admin_token = self.admin_token.get_secret_value()
            if admin_token and len(admin_token) < 16:
                raise ValueError("VIGIL_ADMIN_TOKEN must be at least 16 characters in production")
            feedback_token = self.feedback_token.get_secret_value()
            if feedback_token and len(feedback_token) < 16:
                raise ValueError(
                    "VIGIL_FEEDBACK_TOKEN must be at least 16 characters in production"
                )
        return self
