"""The log store on an object store: ``VIGIL_LOG_STORE=s3://bucket/prefix``.

The Parquet store's layout and encoding over pyarrow's S3 filesystem (no extra client library):
``bucket/prefix/predictions/model=<m>/version=<v>/date=<d>/part-<segment>.parquet`` and so on.
Each file is one object written in one request (``allow_delayed_open``: a single PUT below the
client's part size), named after its spool segment, so a redelivery overwrites itself. Credentials
come from the AWS SDK's standard chain (environment, profile, instance or pod identity); this
module never reads, logs or prints them. ``VIGIL_S3_ENDPOINT_URL`` points at an S3-compatible
store (MinIO, Ceph, moto).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from service.errors import LogStoreError
from service.iolog.parquet_store import ParquetStore, put_object
from service.iolog.schema import BatchSource
from service.settings import Settings

SCHEME = "s3://"
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def is_s3(url: str) -> bool:
    return url.startswith(SCHEME)


def scrub_credentials(text: str) -> str:
    """``text`` without any credential of the environment, in case an SDK message quotes one."""
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    return text


def s3_filesystem(settings: Settings) -> pafs.S3FileSystem:
    endpoint = settings.s3_endpoint_url
    options: dict[str, object] = {
        "allow_delayed_open": True,  # one PUT per file instead of a multipart upload
        "connect_timeout": settings.s3_timeout_s,
        "request_timeout": settings.s3_timeout_s,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=settings.s3_max_attempts),
    }
    if settings.s3_region:
        options["region"] = settings.s3_region
    if endpoint:
        parts = urlsplit(endpoint)
        options["endpoint_override"] = parts.netloc or parts.path
        options["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(**options)


class S3Store(ParquetStore):
    """The Parquet store on S3; only reaching the store differs."""

    def __init__(self, url: str, fs: pafs.FileSystem) -> None:
        if not is_s3(url) or not url[len(SCHEME) :].strip("/"):
            raise LogStoreError(f"VIGIL_LOG_STORE {url!r} is not s3://bucket[/prefix]")
        self.url = url.rstrip("/")
        super().__init__(url[len(SCHEME) :].strip("/"), fs)
        self.bucket = self.base.split("/", 1)[0]

    def check(self) -> None:
        """Raise ``LogStoreError`` with a reason (never a credential) unless an object can
        be written and deleted under the prefix now: unknown bucket, refused credentials and an
        unreachable endpoint all fail here, at start, instead of silently later."""
        probe = self.path("_ping", f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            bucket = self.fs.get_file_info(self.bucket)
            if bucket.type == pafs.FileType.NotFound:
                raise LogStoreError(f"log store {self.url}: bucket {self.bucket!r} not found")
            put_object(self.fs, probe, b"ping")
            self.fs.delete_file(probe)
        except OSError as exc:
            reason = scrub_credentials(str(exc))
            raise LogStoreError(f"log store {self.url} not writable: {reason}") from None

    def ping(self) -> bool:
        try:
            self.check()
        except LogStoreError:
            return False
        return True

    @contextlib.contextmanager
    def _reaching(self) -> Iterator[None]:
        """A listing that fails says which store and why, as ``LogStoreError`` (readers catch
        ``VigilError``), without a credential in it."""
        try:
            yield
        except OSError as exc:
            reason = scrub_credentials(str(exc))
            raise LogStoreError(f"log store {self.url} cannot be read: {reason}") from None

    def prediction_batches(
        self,
        model: str,
        version: int | None,
        since: datetime | None,
        until: datetime | None,
        columns: list[str] | None = None,
        batch_rows: int = 65_536,
    ) -> list[BatchSource]:
        with self._reaching():
            return super().prediction_batches(model, version, since, until, columns, batch_rows)

    def feedback_batches(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pa.RecordBatch]:
        with self._reaching():
            yield from super().feedback_batches(model, since, until)

    def rejected_rows(self, since: datetime | None, until: datetime | None) -> pa.Table:
        with self._reaching():
            return super().rejected_rows(since, until)

    def prune(self, older_than: datetime) -> dict[str, int]:
        with self._reaching():
            return super().prune(older_than)


def open_s3_store(settings: Settings) -> S3Store:
    return S3Store(settings.log_store_url, s3_filesystem(settings))
