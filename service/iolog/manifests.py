"""Which files of a partition a reader counts, once compaction has merged some of them.

A partition directory holds delivered files ``part-<segment>.parquet``, compacted files
``part-_compacted-<id>.parquet`` and one manifest ``_compacted-<id>.json`` per compacted file,
naming the files it merged. The manifest is the commit point:

- a compacted file without its manifest is not counted (its compactor has not committed, or died);
- a file named as an input by a committed manifest is not counted (its rows are in the output);
- two manifests claiming the same input (two compactors despite the lease): the one with the
  smaller id wins, the other's output is not counted.

Every reader and the compactor apply this same rule to one listing of the partition, so whatever
moment the listing is taken at, each row is counted exactly once. Inputs are deleted only after
their manifest is committed (and a grace period has passed, for readers that listed before), and a
manifest only after its inputs and its output are gone. ``_`` names are skipped by pyarrow's,
DuckDB's and Polars' dataset discovery of ``*.parquet`` as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow.fs as pafs

MANIFEST_PREFIX = "_compacted-"
OUTPUT_PREFIX = "part-_compacted-"  # "_" cannot start a hostname, so no segment id clashes


@dataclass(frozen=True)
class Manifest:
    id: str
    output: str
    inputs: tuple[str, ...]
    rows: int
    written: datetime | None  # the manifest object's modification time

    @property
    def name(self) -> str:
        return manifest_name(self.id)

    def to_json(self) -> bytes:
        doc = {"id": self.id, "output": self.output, "inputs": list(self.inputs), "rows": self.rows}
        return json.dumps(doc, indent=1).encode()


@dataclass
class Resolution:
    """One listing of a partition, resolved."""

    files: dict[str, pafs.FileInfo]  # every name listed
    live: list[str]  # data files a reader counts, sorted
    accepted: list[Manifest] = field(default_factory=list)
    losers: list[Manifest] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # compacted outputs without a manifest


def manifest_name(compaction_id: str) -> str:
    return f"{MANIFEST_PREFIX}{compaction_id}.json"


def output_name(compaction_id: str) -> str:
    return f"{OUTPUT_PREFIX}{compaction_id}.parquet"


def _read_manifest(fs: pafs.FileSystem, path: str, info: pafs.FileInfo) -> Manifest | None:
    try:
        with fs.open_input_stream(path) as fh:
            doc = json.loads(fh.read())
    except FileNotFoundError:
        return None  # deleted after the listing: its inputs and output are gone too
    mtime = info.mtime if isinstance(info.mtime, datetime) else None
    return Manifest(doc["id"], doc["output"], tuple(doc["inputs"]), int(doc["rows"]), mtime)


def resolve(fs: pafs.FileSystem, partition: str) -> Resolution:
    infos = fs.get_file_info(pafs.FileSelector(partition, allow_not_found=True))
    files = {i.path.rsplit("/", 1)[-1]: i for i in infos if i.type == pafs.FileType.File}
    manifests = []
    for name in sorted(files):
        if name.startswith(MANIFEST_PREFIX) and name.endswith(".json"):
            m = _read_manifest(fs, f"{partition}/{name}", files[name])
            if m is not None:
                manifests.append(m)
    claimed: set[str] = set()
    out = Resolution(files, [])
    committed_outputs: set[str] = set()
    for m in sorted(manifests, key=lambda m: m.id):
        committed_outputs.add(m.output)
        if claimed.intersection(m.inputs):
            out.losers.append(m)
            continue
        claimed.update(m.inputs)
        out.accepted.append(m)
    winners = {m.output for m in out.accepted}
    for name in sorted(files):
        if not (name.startswith("part-") and name.endswith(".parquet")) or name in claimed:
            continue
        if name.startswith(OUTPUT_PREFIX):
            if name not in committed_outputs:
                out.orphans.append(name)
            if name not in winners:
                continue
        out.live.append(name)
    return out
