"""The on-disk model registry: ``<root>/<model>/<version>/`` with model.onnx, manifest.json
and reference.parquet.

Versions are integers and never overwritten. Aliases (``production`` by default) live in
``<root>/<model>/aliases.json``, replaced atomically by rename so a reader never sees half a file.
Beside them: ``rollout.json`` (the running rollout, see model_store/rollout.py), ``history.jsonl``
(the audit trail of every change, see model_store/history.py) and ``.lock`` (held around each
change, so that concurrent writers take turns).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_store.errors import (
    IntegrityError,
    ModelNotFoundError,
    RegistrationError,
    RolloutConflictError,
    StoreReadOnlyError,
    VersionNotFoundError,
)
from model_store.history import WHO_CLI, Action, HistoryEntry, append_entry, now_utc, read_entries
from model_store.locking import model_lock
from model_store.log_columns import check_feature_names
from model_store.manifest import Manifest

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
REFERENCE_FILE = "reference.parquet"
ALIASES_FILE = "aliases.json"
ROLLOUT_FILE = "rollout.json"
# Matched whole (fullmatch): with match and "$", "name\n" would pass and make a folder.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,8}")


def check_model_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistrationError(
            f"model name {name!r} is invalid: use 1-63 lowercase letters, digits, '.', '_' or '-'"
        )
    return name


def _read_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _put(path: Path, data: bytes | None) -> None:
    if data is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, data)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; reports and aliases are for other users too
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelStore:
    """Read and write access to a model store directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading -----------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, model: str) -> list[int]:
        mdir = self.root / model
        if not _NAME.fullmatch(model) or not mdir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in mdir.iterdir()
            if _VERSION_DIR.fullmatch(p.name) and (p / MANIFEST_FILE).is_file()
        )

    def version_dir(self, model: str, version: int) -> Path:
        if not self.versions(model):
            raise ModelNotFoundError(f"model {model!r} is not in the store")
        path = self.root / model / str(version)
        if not (path / MANIFEST_FILE).is_file():
            raise VersionNotFoundError(f"model {model!r} has no version {version}")
        return path

    def manifest(self, model: str, version: int) -> Manifest:
        path = self.version_dir(model, version) / MANIFEST_FILE
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except ValueError as exc:
            raise IntegrityError(f"manifest of {model} v{version} is unreadable: {exc}") from exc

    def model_path(self, model: str, version: int) -> Path:
        return self.version_dir(model, version) / MODEL_FILE

    def reference_path(self, model: str, version: int) -> Path:
        return self.version_dir(model, version) / REFERENCE_FILE

    def verified_model_bytes(self, model: str, version: int) -> tuple[Manifest, bytes]:
        """The manifest and model bytes, refused if the file no longer matches its sha256."""
        manifest = self.manifest(model, version)
        data = self.model_path(model, version).read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != manifest.sha256:
            raise IntegrityError(
                f"{model} v{version}: model.onnx sha256 {actual[:12]}… does not match the "
                f"manifest's {manifest.sha256[:12]}…; the file was changed after registration"
            )
        return manifest, data

    # -- aliases -----------------------------------------------------------------------------
    def _aliases(self, model: str) -> dict[str, Any]:
        path = self.root / model / ALIASES_FILE
        if not path.is_file():
            return {"aliases": {}, "history": {}}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def aliases(self, model: str) -> dict[str, int]:
        return {k: int(v) for k, v in self._aliases(model)["aliases"].items()}

    def history(self, model: str, alias: str = "production") -> list[int]:
        """Versions the alias has named, oldest first; the last is the current one."""
        return [int(v) for v in self._aliases(model)["history"].get(alias, [])]

    def resolve(self, model: str, alias: str = "production") -> int:
        """The version an alias names, or the newest version when the alias is unset."""
        versions = self.versions(model)
        if not versions:
            raise ModelNotFoundError(f"model {model!r} is not in the store")
        return self.aliases(model).get(alias, versions[-1])

    def set_alias(
        self,
        model: str,
        version: int,
        alias: str = "production",
        *,
        who: str = WHO_CLI,
        reason: str | None = None,
    ) -> int | None:
        """Point ``alias`` at ``version``; returns the previous version. Recorded in history.

        Refused while a rollout is running: its promote or abort is how the alias moves then.
        """
        self.version_dir(model, version)
        with self.lock(model):
            self._refuse_during_rollout(model, "promote")
            data = self._aliases(model)
            previous = data["aliases"].get(alias)
            if previous == version:
                return int(previous)
            data["aliases"][alias] = version
            data["history"].setdefault(alias, []).append(version)
            entry = HistoryEntry(
                at=now_utc(), who=who, action=Action.PROMOTE, alias=alias,
                from_version=previous, to_version=version, reason=reason,
            )  # fmt: skip
            self.commit(model, {ALIASES_FILE: self._aliases_bytes(data)}, entry)
        return None if previous is None else int(previous)

    def rollback(
        self,
        model: str,
        alias: str = "production",
        *,
        who: str = WHO_CLI,
        reason: str | None = None,
    ) -> int:
        """Move ``alias`` back to the version it named before the last promote."""
        with self.lock(model):
            self._refuse_during_rollout(model, "roll back")
            data = self._aliases(model)
            history: list[int] = data["history"].get(alias, [])
            if len(history) < 2:
                raise RegistrationError(
                    f"{model}: alias {alias!r} has no earlier version to roll back to"
                )
            previous = history.pop()
            data["aliases"][alias] = history[-1]
            entry = HistoryEntry(
                at=now_utc(), who=who, action=Action.ROLLBACK, alias=alias,
                from_version=previous, to_version=history[-1], reason=reason,
            )  # fmt: skip
            self.commit(model, {ALIASES_FILE: self._aliases_bytes(data)}, entry)
        return int(history[-1])

    def alias_moved(self, model: str, version: int, alias: str) -> bytes:
        """The aliases file with ``alias`` moved to ``version``, for a :meth:`commit`."""
        data = self._aliases(model)
        if data["aliases"].get(alias) != version:
            data["aliases"][alias] = version
            data["history"].setdefault(alias, []).append(version)
        return self._aliases_bytes(data)

    @staticmethod
    def _aliases_bytes(data: dict[str, Any]) -> bytes:
        return json.dumps(data, indent=2).encode()

    def _refuse_during_rollout(self, model: str, what: str) -> None:
        if (self.root / model / ROLLOUT_FILE).is_file():
            raise RolloutConflictError(
                f"cannot {what} {model} while a rollout is running: promote or abort the "
                "rollout first (`vigil rollout promote|abort`)"
            )

    # -- audit trail -------------------------------------------------------------------------
    def lock(self, model: str) -> contextlib.AbstractContextManager[None]:
        """The model's exclusive lock: hold it around a read-modify-write, then :meth:`commit`."""
        if not self.versions(model):  # also keeps a name like ".." from locking outside
            raise ModelNotFoundError(f"model {model!r} is not in the store")
        return model_lock(self.root / model)

    def commit(self, model: str, files: dict[str, bytes | None], entry: HistoryEntry) -> None:
        """Replace (bytes) or delete (None) files of the model folder, then append ``entry``.

        All or nothing: if any write or the history append fails, the files are put back as
        they were and StoreReadOnlyError is raised, so history never records a change that did
        not happen, and no change happens unrecorded. The caller holds :meth:`lock`.
        """
        mdir = self.root / model
        before = {name: _read_or_none(mdir / name) for name in files}
        try:
            for name, data in files.items():
                _put(mdir / name, data)
            append_entry(mdir, entry)
        except OSError as exc:
            for name, data in before.items():
                with contextlib.suppress(OSError):  # put back what can be put back
                    _put(mdir / name, data)
            raise StoreReadOnlyError(
                f"cannot {entry.action.value.replace('_', ' ')} {model}: the model store is "
                f"not writable here ({exc.strerror or exc}); change it with `vigil` where it is"
            ) from exc

    def changes(self, model: str, limit: int | None = None) -> list[HistoryEntry]:
        """The audit trail of ``model``, oldest first (the newest ``limit`` entries if given)."""
        if not self.versions(model):
            raise ModelNotFoundError(f"model {model!r} is not in the store")
        return read_entries(self.root / model, limit)

    # -- writing -----------------------------------------------------------------------------
    def register(
        self,
        name: str,
        onnx_bytes: bytes,
        build_manifest: Callable[[int, str], Manifest],
        write_reference: Callable[[Path], None] | None = None,
    ) -> Manifest:
        """Store a new version atomically; ``build_manifest(version, sha256)`` makes its manifest.

        The version directory is assembled in a temporary directory and renamed into place, so a
        reader sees either no version or a complete one, and two writers never share a number.
        """
        check_model_name(name)
        mdir = self.root / name
        mdir.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(onnx_bytes).hexdigest()
        tmp = Path(tempfile.mkdtemp(dir=mdir, prefix=".incoming-"))
        try:
            (tmp / MODEL_FILE).write_bytes(onnx_bytes)
            if write_reference is not None:
                write_reference(tmp / REFERENCE_FILE)
            for _ in range(100):
                version = max(self.versions(name), default=0) + 1
                manifest = build_manifest(version, sha)
                check_feature_names(manifest.feature_names)  # the registration helpers check first
                (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
                try:
                    os.rename(tmp, mdir / str(version))
                except OSError:
                    continue  # another writer took this number; try the next
                return manifest
            raise RegistrationError(f"could not allocate a version number for {name}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
