"""Writing a window of the log to a Parquet or CSV file, one record batch at a time."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from service.iolog.readahead import WriteBehind
from service.iolog.reader import LABEL, PredictionStream
from service.iolog.schema import parquet_options

SUFFIXES = (".parquet", ".csv")
# Arrow prints microsecond timestamps' fraction after %S: 2026-01-31T12:00:00.250000Z.
_CSV_TIME = "%Y-%m-%dT%H:%M:%SZ"
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Exported:
    rows: int
    labelled: int


def export(stream: PredictionStream, out: Path, progress: Progress | None = None) -> Exported:
    """Write ``stream`` to ``out`` (.parquet or .csv) batch by batch; the file appears whole,
    by rename, only once every batch is written."""
    if out.suffix not in SUFFIXES:
        raise ValueError(f"{out}: the output must end in .parquet or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        # Arrow's own file, not a Python one: pages are written without taking the GIL (from the
        # write-behind thread, while the main one keys the next batch).
        with pa.OSFile(str(tmp), "wb") as sink:
            done = write_export(stream, sink, out.suffix, progress)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return done


def write_export(
    stream: PredictionStream, sink: BinaryIO, suffix: str, progress: Progress | None = None
) -> Exported:
    """The bytes of an export (``suffix`` .parquet or .csv) written to ``sink`` as they are made:
    a file for ``vigil logs export``, an HTTP response for the console's download."""
    rows = labelled = 0
    # The output is encoded (zstd) in a thread of its own while the next batch is read and
    # keyed: pyarrow does both without the GIL.
    with _writer(suffix, sink, stream.schema) as w, WriteBehind(w) as write:
        for batch in stream:
            write(batch)
            rows += batch.num_rows
            if LABEL in batch.schema.names:
                labelled += batch.num_rows - batch.column(LABEL).null_count
            if progress:
                progress(rows)
    return Exported(rows, labelled)


@contextlib.contextmanager
def _writer(suffix: str, sink: BinaryIO, schema: pa.Schema) -> Any:
    if suffix == ".parquet":
        with pq.ParquetWriter(sink, schema, **parquet_options(schema)) as parquet:
            yield parquet.write_batch
        return
    text_schema = pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) else f for f in schema]
    )
    options = pcsv.WriteOptions(quoting_style="needed")
    with pcsv.CSVWriter(sink, text_schema, write_options=options) as csv:
        yield lambda batch: csv.write_batch(_csv_times(batch, text_schema))


def _csv_times(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [
        pc.strftime(col, format=_CSV_TIME) if pa.types.is_timestamp(col.type) else col
        for col in batch.columns
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
