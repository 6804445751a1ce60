"""The embedded log store: a Hive-partitioned Parquet dataset that pandas, polars and DuckDB read.

<root>/predictions/model=<m>/version=<v>/date=<YYYY-MM-DD>/part-<segment>.parquet
<root>/rejected/date=<d>/part-<segment>.parquet
<root>/feedback/model=<m>/date=<d>/part-<segment>.parquet

Files are named after the spool segment they came from, and written by rename (on an object
store: one PUT), so delivering a segment twice (crash between write and spool cleanup) rewrites
the same files: no duplicates. The same code runs over any pyarrow filesystem: the local disk, or
S3 (``s3_store.py``). Compaction (``compaction.py``) merges files under a manifest
(``manifests.py``) that every reader here applies.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from service.iolog.frames import FEEDBACK, PREDICTIONS, REJECTED, Frame
from service.iolog.readahead import read_ahead
from service.iolog.schema import (
    REJECTED_SCHEMA,
    TS,
    BatchSource,
    conform_feedback,
    feedback_table,
    group_frames,
    parquet_options,
    predictions_table,
    rejected_table,
    with_model,
)

_FOOTER_THREADS = 8  # footers fetched at once from an object store
_FOOTERS_KEPT = 128  # files whose footer (~115 KB in memory each) is kept from listing to scan
_PARQUET = ds.ParquetFileFormat()
_GONE = ("NO_SUCH_KEY", "RESOURCE_NOT_FOUND")  # the AWS SDK's words for a 404 on GetObject


class CorruptLogFile(Exception):
    """A file of the Parquet log store cannot be read; its path is in the message."""


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    size: int | None  # from the listing

    def fragment(self, fs: pafs.FileSystem) -> ds.Fragment:
        # The listed size spares the HEAD request that opening an object by path costs.
        return _PARQUET.make_fragment(self.path, filesystem=fs, file_size=self.size)


def _write_local(table: pa.Table, directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{name}.parquet"
    tmp = directory / f".part-{name}.parquet.tmp"
    pq.write_table(table, tmp, **parquet_options(table.schema))
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


def put_object(fs: pafs.FileSystem, path: str, data: pa.Buffer | bytes) -> None:
    """One object in one write: an object store publishes it whole on success (a single PUT
    below the client's part size, a multipart upload completed atomically above it)."""
    if isinstance(fs, pafs.LocalFileSystem):  # no partial file either: write aside, rename
        directory, name = path.rsplit("/", 1)
        tmp = Path(directory) / f".{name}.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as out:
        out.write(data)


def parquet_bytes(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **parquet_options(table.schema))
    return sink.getvalue()


class ParquetStore:
    """The layout over a pyarrow filesystem: the local disk by default, or an object store
    (``service/iolog/s3_store.py``) with the same paths under ``bucket/prefix``."""

    content_errors: tuple[type[Exception], ...] = ()  # pyarrow's are ValueError/TypeError

    def __init__(self, root: Path | str, fs: pafs.FileSystem | None = None) -> None:
        self.local = fs is None
        self.fs: pafs.FileSystem = pafs.LocalFileSystem() if fs is None else fs
        self.root = Path(root)
        # pyarrow filesystems take "/"-separated strings: an absolute path, or bucket/prefix
        self.base = str(self.root.resolve()) if self.local else str(root).strip("/")

    def path(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def ping(self) -> bool:
        """Can a file be written (and fsynced) in the store now? Not on a full or read-only disk."""
        probe = self.root / f".ping-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with probe.open("wb") as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError:
            with contextlib.suppress(OSError):
                probe.unlink()
            return False
        return True

    def _write(self, table: pa.Table, parts: tuple[str, ...], name: str) -> None:
        if self.local:
            _write_local(table, self.root.joinpath(*parts), name)
        else:
            put_object(self.fs, self.path(*parts, f"part-{name}.parquet"), parquet_bytes(table))

    def deliver(self, frames: list[Frame], segment_id: str) -> dict[str, int]:
        preds, rejected, feedback = group_frames(frames)
        counts = {PREDICTIONS: 0, REJECTED: 0, FEEDBACK: 0}
        for (model, version, d), group in preds.items():
            table = predictions_table(group)
            parts = (PREDICTIONS, f"model={model}", f"version={version}", f"date={d}")
            self._write(table, parts, segment_id)
            counts[PREDICTIONS] += table.num_rows
        for d, group in rejected.items():
            table = rejected_table(group)
            self._write(table, (REJECTED, f"date={d}"), segment_id)
            counts[REJECTED] += table.num_rows
        for (model, d), group in feedback.items():
            table = feedback_table(group)
            self._write(table, (FEEDBACK, f"model={model}", f"date={d}"), segment_id)
            counts[FEEDBACK] += table.num_rows
        return counts

    def prune(self, older_than: datetime) -> dict[str, int]:
        """Whole days before ``older_than``'s date go, so up to one day more is kept."""
        from service.iolog.retention import prune_parquet  # here: retention imports the stores

        cutoff = older_than.astimezone(UTC).date()
        if self.local:
            return {"partitions": prune_parquet(self.root, cutoff)}
        removed = 0
        for parent in self.partition_parents():
            for d in _dates(self.fs, parent, None, cutoff - timedelta(days=1)):
                self.fs.delete_dir(d)
                removed += 1
        return {"partitions": removed}

    def partition_parents(self) -> list[str]:
        """Every directory holding date=<d> partitions."""
        out = [self.path(REJECTED)]
        for m in _subdirs(self.fs, self.path(FEEDBACK), "model="):
            out.append(m)
        for m in _subdirs(self.fs, self.path(PREDICTIONS), "model="):
            out.extend(_subdirs(self.fs, m, "version="))
        return out

    # -- reading -----------------------------------------------------------------------------
    def prediction_batches(
        self,
        model: str,
        version: int | None,
        since: datetime | None,
        until: datetime | None,
        columns: list[str] | None = None,
        batch_rows: int = 65_536,
    ) -> list[BatchSource]:
        """One source per version: only the window's model=/version=/date= directories are
        listed, each file column-projected and filtered on ``received_at`` as it is read, a few
        batches ahead of the consumer, in a thread (``readahead.py``)."""
        first, last = (since.date() if since else None), (until.date() if until else None)
        out = []
        for v, files in self._prediction_listing(model, version, first, last).items():
            if not files:
                continue
            schemas, footers = self._footers(files)
            stored = pa.unify_schemas(schemas)
            schema = with_model(stored.empty_table(), model, v).schema
            if columns is not None:
                schema = pa.schema([f for f in schema if f.name in columns])
            wanted = None if columns is None else [c for c in stored.names if c in columns]
            where = _received(since, until)
            batches = self._batches(files, footers, stored, wanted, where, batch_rows)
            out.append(BatchSource(schema, _tagged(read_ahead(batches), model, v)))
        return out

    def feedback_batches(
        self, model: str, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Every label of ``model``, streamed; a label's day says nothing of its prediction's,
        so the window cannot prune them."""
        for path in self.feedback_files(model):
            try:
                with self.fs.open_input_file(path) as fh:
                    for batch in pq.ParquetFile(fh).iter_batches(65_536):
                        # files written before label sources read as source "unknown"
                        yield from conform_feedback(pa.Table.from_batches([batch])).to_batches()
            except (OSError, pa.ArrowException) as exc:
                raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc

    def rejected_rows(self, since: datetime | None, until: datetime | None) -> pa.Table:
        first, last = (since.date() if since else None), (until.date() if until else None)
        tables = [self._read(f) for f in self.rejected_files(first, last)]
        return pa.concat_tables(tables) if tables else REJECTED_SCHEMA.empty_table()

    def prediction_files(
        self, model: str, version: int | None, first: date | None, last: date | None
    ) -> dict[int, list[str]]:
        """Listing only ``predictions/model=<m>/`` and, below it, the window's days."""
        listing = self._prediction_listing(model, version, first, last)
        return {v: [f.path for f in files] for v, files in listing.items()}

    def _prediction_listing(
        self, model: str, version: int | None, first: date | None, last: date | None
    ) -> dict[int, list[_File]]:
        out: dict[int, list[_File]] = {}
        for vdir in _subdirs(self.fs, self.path(PREDICTIONS, f"model={model}"), "version="):
            v = int(vdir.rsplit("=", 1)[1])
            if version is not None and v != version:
                continue
            out[v] = [f for d in _dates(self.fs, vdir, first, last) for f in self._live(d)]
        return out

    def feedback_files(self, model: str) -> list[str]:
        parent = self.path(FEEDBACK, f"model={model}")
        return [f for d in _dates(self.fs, parent, None, None) for f in self.live_files(d)]

    def rejected_files(self, first: date | None, last: date | None) -> list[str]:
        parent = self.path(REJECTED)
        return [f for d in _dates(self.fs, parent, first, last) for f in self.live_files(d)]

    def live_files(self, partition: str) -> list[str]:
        """The partition's data files as a reader must see them: a compacted file in place of
        the files it merged (``service/iolog/compaction.py`` explains the protocol)."""
        return [f.path for f in self._live(partition)]

    def _live(self, partition: str) -> list[_File]:
        from service.iolog.manifests import resolve  # here: manifests imports this module

        listed = resolve(self.fs, partition)
        return [_File(f"{partition}/{name}", listed.files[name].size) for name in listed.live]

    def _footers(self, files: list[_File]) -> tuple[list[pa.Schema], list[ds.Fragment | None]]:
        """Each file's schema, from footers fetched a few at a time (on an object store each is
        a round trip). The first ``_FOOTERS_KEPT`` files keep theirs for the scan, which then
        costs one request (the data) where opening by path cost two HEADs, the footer and the
        data; later files fetch their footer again (memory stays bounded in a long window)."""

        def footer(i: int) -> tuple[pa.Schema, ds.Fragment | None]:
            fragment = files[i].fragment(self.fs)
            try:
                schema = fragment.physical_schema
            except (OSError, pa.ArrowException) as exc:
                raise CorruptLogFile(f"cannot read log file {files[i].path}: {exc}") from exc
            return schema, fragment if i < _FOOTERS_KEPT else None

        threads = 1 if self.local else _FOOTER_THREADS
        with ThreadPoolExecutor(threads, thread_name_prefix="vigil-footers") as pool:
            read = list(pool.map(footer, range(len(files))))
        return [r[0] for r in read], [r[1] for r in read]

    def _batches(
        self,
        files: list[_File],
        footers: list[ds.Fragment | None],
        schema: pa.Schema,
        columns: list[str] | None,
        where: ds.Expression | None,
        batch_rows: int,
    ) -> Iterator[pa.RecordBatch]:
        for i, file in enumerate(files):  # one scan per file, so an unreadable one is named
            fragment, footers[i] = footers[i], None  # its footer is freed once read
            if fragment is None:
                fragment = file.fragment(self.fs)
            try:
                # One batch decoded ahead here (the read-ahead thread holds two more): the
                # default 16 held 120 MiB more of a compacted file and cost more CPU.
                batches = fragment.to_batches(
                    schema=schema,
                    columns=columns,
                    filter=where,
                    batch_size=batch_rows,
                    batch_readahead=1,
                )
                for batch in batches:
                    if batch.num_rows:
                        yield batch
            except (OSError, pa.ArrowException) as exc:
                raise CorruptLogFile(
                    f"cannot read log file {file.path}: {exc}{_hint(exc)}"
                ) from exc

    def _read(self, path: str) -> pa.Table:
        try:
            return pq.read_table(path, filesystem=self.fs)
        except (OSError, pa.ArrowException) as exc:
            raise CorruptLogFile(f"cannot read log file {path}: {exc}") from exc


def _hint(exc: Exception) -> str:
    # Listed, then deleted by a compaction's cleanup: the local disk says so with
    # FileNotFoundError, S3 in an OSError's text (the object was opened for its footer before).
    if isinstance(exc, FileNotFoundError) or any(c in str(exc) for c in _GONE):
        return " (merged and deleted by `vigil logs compact` after this read listed it: read again)"
    return ""


def _subdirs(fs: pafs.FileSystem, parent: str, prefix: str) -> list[str]:
    """``parent``'s sub-directories named ``<prefix>…``, sorted; one listing, not recursive."""
    infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    names = [i.path for i in infos if i.type == pafs.FileType.Directory]
    return sorted(p for p in names if p.rsplit("/", 1)[-1].startswith(prefix))


def _dates(fs: pafs.FileSystem, parent: str, first: date | None, last: date | None) -> list[str]:
    out = []
    for d in _subdirs(fs, parent, "date="):
        try:
            day = date.fromisoformat(d.rsplit("=", 1)[1])
        except ValueError:
            continue  # not ours
        if (first is None or day >= first) and (last is None or day <= last):
            out.append(d)
    return out


def _received(since: datetime | None, until: datetime | None) -> ds.Expression | None:
    where = None
    if since is not None:
        where = ds.field("received_at") >= pa.scalar(since, TS)
    if until is not None:
        upper = ds.field("received_at") < pa.scalar(until, TS)
        where = upper if where is None else where & upper
    return where


def _tagged(
    batches: Iterator[pa.RecordBatch], model: str, version: int
) -> Iterator[pa.RecordBatch]:
    # A function, not a generator expression in the loop: that would see the loop's last version.
    for batch in batches:
        yield with_model(batch, model, version)
