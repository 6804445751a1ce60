"""``vigil logs compact``: merge a partition's small delivered files into files of a target size.

Per partition (``predictions/model=/version=/date=``, ``feedback/model=/date=``,
``rejected/date=``), on the local Parquet store and on S3 alike:

1. Resolve the partition's listing (``manifests.resolve``): the live files, committed manifests.
2. Delete what earlier runs left behind once ``grace`` has passed: inputs of committed manifests
   (then the manifest itself once its output is gone too), losing manifests' outputs, outputs
   whose compactor died before committing.
3. Group the live files delivered more than ``older_than`` ago (by modification time) into bins
   of about ``target_bytes``; files already that large are left alone.
4. For each bin: write ``part-_compacted-<id>.parquet`` (one PUT), then the manifest
   ``_compacted-<id>.json`` naming its inputs (one PUT: the commit point), and, with
   ``grace=0``, delete the inputs at once.

A reader's listing taken before the manifest sees the inputs and ignores the uncommitted output;
one taken after sees the output and ignores the inputs. Inputs outlive their manifest by
``grace`` so that a reader that listed before the commit can still open them.

One compactor at a time holds ``<root>/_compaction.lease`` (an object rewritten with an expiry,
renewed before each merge); a second one finds it held and stops. The lease saves work, correctness
does not depend on it: two manifests claiming one input resolve to the older one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.errors import Conflict
from service.iolog.manifests import Manifest, Resolution, output_name, resolve
from service.iolog.parquet_store import ParquetStore, _dates, put_object
from service.iolog.schema import parquet_options

log = logging.getLogger("vigil.iolog")
LEASE_FILE = "_compaction.lease"
TARGET_BYTES = 128 * 1024 * 1024
GRACE = timedelta(minutes=10)
LEASE_TTL = timedelta(minutes=5)


class CompactionBusy(Conflict):
    """Another compactor holds the lease."""


@dataclass
class CompactionResult:
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    bytes_in: int = 0
    deleted: int = 0
    seconds: float = 0.0
    per_partition: dict[str, int] = field(default_factory=dict)  # live files after the run


class Lease:
    """A best-effort lock object with an expiry: written, then read back to see who won."""

    def __init__(self, store: ParquetStore, ttl: timedelta = LEASE_TTL) -> None:
        self.fs, self.path, self.ttl = store.fs, store.path(LEASE_FILE), ttl
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def _holder(self) -> tuple[str, datetime] | None:
        try:
            with self.fs.open_input_stream(self.path) as fh:
                doc = json.loads(fh.read())
            return str(doc["owner"]), datetime.fromisoformat(doc["expires_at"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def acquire(self) -> None:
        held = self._holder()
        now = datetime.now(UTC)
        if held is not None and held[0] != self.owner and held[1] > now:
            raise CompactionBusy(f"another compactor ({held[0]}) holds the lease until {held[1]}")
        self.renew()
        time.sleep(0.2)  # a rival that wrote at the same moment: the last write wins
        held = self._holder()
        if held is None or held[0] != self.owner:
            raise CompactionBusy(f"another compactor ({held and held[0]}) took the lease")

    def renew(self) -> None:
        expires = (datetime.now(UTC) + self.ttl).isoformat()
        doc = json.dumps({"owner": self.owner, "expires_at": expires}).encode()
        put_object(self.fs, self.path, doc)

    def release(self) -> None:
        held = self._holder()
        if held is not None and held[0] == self.owner:
            self.fs.delete_file(self.path)


def partitions(store: ParquetStore) -> list[str]:
    return [d for parent in store.partition_parents() for d in _dates(store.fs, parent, None, None)]


def compact(
    store: ParquetStore,
    older_than: timedelta,
    *,
    target_bytes: int = TARGET_BYTES,
    grace: timedelta = GRACE,
    progress: Callable[[str], None] | None = None,
) -> CompactionResult:
    """Compact every partition of ``store``; raises ``CompactionBusy`` if another one runs."""
    started = time.monotonic()
    lease = Lease(store)
    lease.acquire()
    result = CompactionResult()
    try:
        for partition in partitions(store):
            _compact_partition(store, lease, partition, older_than, target_bytes, grace, result)
            if progress is not None:
                progress(partition)
    finally:
        lease.release()
    result.seconds = time.monotonic() - started
    return result


def _age(info: pafs.FileInfo, now: datetime) -> timedelta:
    mtime = info.mtime if isinstance(info.mtime, datetime) else None
    if mtime is None:
        return timedelta(0)
    return now - (mtime if mtime.tzinfo else mtime.replace(tzinfo=UTC))


def _delete(fs: pafs.FileSystem, path: str) -> int:
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        return 0
    return 1


def _clean(store: ParquetStore, partition: str, res: Resolution, grace: timedelta) -> int:
    """Step 2: delete leftovers past ``grace``, inputs before their manifest."""
    now, fs, deleted = datetime.now(UTC), store.fs, 0

    def old(name: str) -> bool:
        info = res.files.get(name)
        return info is not None and _age(info, now) >= grace

    gone: set[str] = set()  # deleted in this pass
    # Newest first: an output merged again is deleted before its own manifest is looked at.
    for m in sorted(res.accepted, key=lambda m: m.id, reverse=True):
        if not old(m.name):
            continue
        for name in m.inputs:
            if name in res.files:
                deleted += _delete(fs, f"{partition}/{name}")
                gone.add(name)
        if m.output not in res.files or m.output in gone:  # merged again and past grace too
            deleted += _delete(fs, f"{partition}/{m.name}")
    for m in res.losers:
        if old(m.name):
            deleted += _delete(fs, f"{partition}/{m.output}")
            deleted += _delete(fs, f"{partition}/{m.name}")
    for name in res.orphans:
        if old(name):
            deleted += _delete(fs, f"{partition}/{name}")
    return deleted


def _bins(res: Resolution, older_than: timedelta, target_bytes: int) -> list[list[str]]:
    now = datetime.now(UTC)
    bins: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name in res.live:
        info = res.files[name]
        if _age(info, now) < older_than or (info.size or 0) >= target_bytes:
            continue
        if current and size + (info.size or 0) > target_bytes:
            bins.append(current)
            current, size = [], 0
        current.append(name)
        size += info.size or 0
    bins.append(current)
    return [b for b in bins if len(b) >= 2]


def _compact_partition(
    store: ParquetStore,
    lease: Lease,
    partition: str,
    older_than: timedelta,
    target_bytes: int,
    grace: timedelta,
    result: CompactionResult,
) -> None:
    res = resolve(store.fs, partition)
    result.deleted += _clean(store, partition, res, grace)
    merged = False
    for names in _bins(res, older_than, target_bytes):
        merged = True
        lease.renew()  # per merged file: one takes seconds, the lease lasts minutes
        m = _merge(store, partition, names)
        result.files_in += len(names)
        result.files_out += 1
        result.rows += m.rows
        result.bytes_in += sum(res.files[n].size or 0 for n in names)
        if grace <= timedelta(0):
            for name in names:
                result.deleted += _delete(store.fs, f"{partition}/{name}")
    if merged:
        result.partitions += 1
        res = resolve(store.fs, partition)
        if grace <= timedelta(0):  # the manifests of outputs merged again just now
            result.deleted += _clean(store, partition, res, grace)
            res = resolve(store.fs, partition)
    result.per_partition[partition.removeprefix(store.base + "/")] = len(res.live)


def _merge(store: ParquetStore, partition: str, names: list[str]) -> Manifest:
    """Write the output (not yet counted), then its manifest (now it is): two single writes."""
    fs = store.fs
    paths = [f"{partition}/{n}" for n in names]
    schema = pa.unify_schemas([pq.read_schema(p, filesystem=fs) for p in paths])
    compaction_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    sink = pa.BufferOutputStream()
    rows = 0
    with pq.ParquetWriter(sink, schema, **parquet_options(schema)) as writer:
        for path in paths:  # one input at a time: memory holds one file's batches, not the bin
            for batch in ds.dataset(
                path, format="parquet", schema=schema, filesystem=fs
            ).to_batches():
                writer.write_batch(batch)
                rows += batch.num_rows
    output = output_name(compaction_id)
    put_object(fs, f"{partition}/{output}", sink.getvalue())
    manifest = Manifest(compaction_id, output, tuple(names), rows, None)
    put_object(fs, f"{partition}/{manifest.name}", manifest.to_json())
    return manifest
