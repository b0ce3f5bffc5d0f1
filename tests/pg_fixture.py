"""A PostgreSQL primary and a streaming replica on free ports, owned by the test.

PostgreSQL refuses to run as root, so when the tests run as root the server binaries
(``/usr/lib/postgresql/*/bin``) run as the ``postgres`` user through ``runuser``, with data
directories under a temporary directory owned by that user. Skips only when the binaries
are missing *and* ``CI`` is not ``true``; under CI a missing binary fails instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
BIN = _BINS[0] if _BINS and os.path.exists(os.path.join(_BINS[0], "initdb")) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """Primary + hot-standby replica (streaming replication), both on 127.0.0.1."""

    def __init__(self) -> None:
        if BIN is None:
            if os.environ.get("CI") == "true":
                pytest.fail("PostgreSQL server binaries not found but CI=true: tests must run")
            pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.as_root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="buttress-pg-")
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.ports = {"primary": free_port(), "replica": free_port()}
        self.running: set[str] = set()
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _run(self, *cmd: str, timeout: float = 120) -> str:
        assert BIN is not None
        argv = [os.path.join(BIN, cmd[0]), *cmd[1:]]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({out.returncode}): {out.stdout}{out.stderr}")
        return out.stdout

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _conf(self, name: str) -> None:
        with open(os.path.join(self.path(name), "postgresql.conf"), "a") as f:
            f.write(
                f"\nport = {self.ports[name]}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nwal_level = replica\n"
                "max_wal_senders = 4\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nhot_standby = on\nshared_buffers = 16MB\n"
                "max_connections = 30\nwal_receiver_status_interval = 1s\n"
                "wal_retrieve_retry_interval = 500ms\n"
            )

    def _setup(self) -> None:
        self._run("initdb", "-D", self.path("primary"), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")  # fmt: skip
        self._conf("primary")
        self.start("primary")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.ports["primary"]),
                  "-U", "postgres", "-D", self.path("replica"), "-R", "-X", "stream",
                  "--no-sync")  # fmt: skip
        self._conf("replica")
        self.start("replica")

    def dsn(self, name: str) -> str:
        return (
            f"host=127.0.0.1 port={self.ports[name]} user=postgres dbname=postgres "
            "connect_timeout=2"
        )

    def start(self, name: str) -> None:
        self._run("pg_ctl", "-D", self.path(name), "-l", self.path(f"{name}.log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        self.running.add(name)

    def stop(self, name: str) -> None:
        self._run("pg_ctl", "-D", self.path(name), "-m", "immediate", "-w", "stop")
        self.running.discard(name)

    def close(self) -> None:
        for name in list(self.running):
            try:
                self.stop(name)
            except Exception:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.close()
