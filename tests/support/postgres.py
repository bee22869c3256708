"""A PostgreSQL cluster of a test's own, which the test can stop and start (outage tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


class ThrowawayCluster:
    """A PostgreSQL 15 cluster of our own in a temp dir, on a free port, that the test can stop."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, port: int) -> None:
        if not (self.BIN / "initdb").exists():
            pytest.skip(f"needs PostgreSQL server binaries in {self.BIN}")
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="modelops-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
            shutil.chown(self.root, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
