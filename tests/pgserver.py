"""A throwaway PostgreSQL server on loopback for the log-store tests: real server, no stand-in.

PostgreSQL refuses to run as root, so as root the binaries run as the ``postgres`` user (which the
Debian package creates) via ``runuser``, in a data directory owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.servers import free_port

_TIMEOUT_S = 30


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major, reverse=True)
    on_path = shutil.which("pg_ctl")
    if found:
        return Path(found[0]).parent
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install the Debian package `postgresql`"
    )


def _major(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


@dataclass
class PgServer:
    base: Path
    port: int
    bin: Path
    _owner: tuple[int, int] | None = field(default=None)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._owner is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S + 15, check=False)
        if done.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}\n{log[-2000:]}"
            )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip
        conf = (
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.base}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 60\nshared_buffers = 32MB\n"
        )
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        (self.data / "pg_hba.conf").write_text(hba)

    def start(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.logfile),
                  "-w", "-t", str(_TIMEOUT_S))  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(_TIMEOUT_S))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def restart(self) -> None:
        if self.running():
            self.stop()
        self.start()

    def create_database(self) -> str:
        name = f"vigil_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)


def start_postgres() -> PgServer:
    base = Path(tempfile.mkdtemp(prefix="vigil-pg-"))  # not under pytest's 0700 root-owned tmp
    owner = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root needs the `postgres` user to run PostgreSQL"
            ) from None
        owner = (pw.pw_uid, pw.pw_gid)
        os.chown(base, *owner)
    server = PgServer(base, free_port(), _bin_dir(), owner)
    server.init()
    server.start()
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database per test; afterwards the server runs again even if the test stopped it."""
    if not pg_server.running():
        pg_server.start()
    yield pg_server.create_database()
    if not pg_server.running():
        pg_server.start()
