"""``modelops down --purge`` deletes a stopped stack's home and only that: the refusals delete nothing.

In-process on real folders. The PostgreSQL data kept outside the home (as root) is placed under a
temporary ``SYSTEM_DIR``, so these tests need no root; ``test_root_private_home`` checks the real
``/var/lib/modelops`` folder through the command line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.stack import postgres
from modelops.stack.purge import PurgeRefused, purge, refusal, relocated_data
from modelops.stack.state import STATE_FILE

HOLDER = "import pathlib, sys, time; pathlib.Path(sys.argv[1]).touch(); time.sleep(120)"


def _stack_home(path: Path) -> Path:
    """What a stopped stack leaves: its folders, files inside them."""
    for name in ("logs", "prefect", "mlflow/artifacts", "postgres/data", "models/hmeq-risk/1"):
        (path / name).mkdir(parents=True)
    (path / "logs" / "worker.log").write_text("x" * 1000)
    (path / "models" / "hmeq-risk" / "1" / "saved_model.pb").write_bytes(b"\0" * 5000)
    return path


def _config(home: Path, **sections: dict) -> ModelOpsConfig:
    return ModelOpsConfig(stack={"home": str(home)}, **sections)


@pytest.fixture
def system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "var-lib-modelops"
    folder.mkdir()
    monkeypatch.setattr(postgres, "SYSTEM_DIR", folder)
    return folder


def _relocate(home: Path, named_home: Path) -> Path:
    outside = postgres.relocated_dir(home)
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "PG_VERSION").write_text("16\n")
    (outside / postgres.HOME_MARKER).write_text(f"{named_home.resolve()}\n")
    return outside


def test_purge_deletes_the_home_and_the_data_kept_outside_it(tmp_path, system_dir):
    home = _stack_home(tmp_path / "home")
    outside = _relocate(home, home)
    lines: list[str] = []
    deleted = purge(_config(home), lines.append)
    assert deleted == [outside, home]
    assert not home.exists() and not outside.exists()
    assert lines[0].startswith(f"purge: deleted {outside} (")
    assert lines[1] == f"purge: deleted {home} (0.0 MB)"  # 6 kB of files
    assert system_dir.exists()  # only the home's own folder under it


def test_data_outside_whose_marker_names_another_home_is_kept(tmp_path, system_dir):
    home = _stack_home(tmp_path / "home")
    outside = _relocate(home, tmp_path / "another-home")  # (a hash collision, or a moved home)
    assert relocated_data(home) is None
    purge(_config(home), lambda line: None)
    assert not home.exists() and (outside / "data" / "PG_VERSION").exists()


def test_data_outside_a_home_deleted_by_hand_is_deleted_too(tmp_path, system_dir):
    home = tmp_path / "home"  # `rm -rf .modelops`, as `make clean` did before `down --purge`
    outside = _relocate(home, home)
    lines: list[str] = []
    assert purge(_config(home), lines.append) == [outside]
    assert not outside.exists() and lines == [f"purge: deleted {outside} (0.0 MB)"]


def test_a_missing_home_is_nothing_to_delete(tmp_path):
    lines: list[str] = []
    assert purge(_config(tmp_path / "never-up"), lines.append) == []
    assert lines == [f"purge: {tmp_path / 'never-up'} does not exist: nothing to delete"]


@pytest.mark.parametrize(
    ("home", "reason"),
    [
        (Path("/"), "is not a stack home"),
        (Path.home(), "is not a stack home"),
        (PROJECT_ROOT, "holds the project itself"),
        (PROJECT_ROOT.parent, "holds the project itself"),
    ],
)
def test_folders_that_are_not_a_stack_home_are_refused(home, reason):
    assert reason in (refusal(home) or "")
    with pytest.raises(PurgeRefused, match="nothing deleted"):
        purge(_config(home), lambda line: None)


def test_a_folder_without_the_stack_folders_is_refused_and_kept(tmp_path):
    home = tmp_path / "my-project-data"
    (home / "logs").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    with pytest.raises(PurgeRefused, match=r"has no prefect/: not a stack home"):
        purge(_config(home), lambda line: None)
    assert (home / "notes.txt").read_text() == "mine"


def test_a_stack_still_recorded_as_running_is_refused(tmp_path):
    home = _stack_home(tmp_path / "home")
    (home / STATE_FILE).write_text('{"components": {}}')
    assert "still recorded as running" in (refusal(home) or "")
    assert (home / STATE_FILE).exists()


def test_a_live_postmaster_is_refused_and_a_stale_pid_file_is_not(tmp_path):
    home = _stack_home(tmp_path / "home")
    pgdata = home / "postgres" / "data"
    # A process whose command line names the data folder, as a postmaster's does ("-D <pgdata>").
    ready = tmp_path / "holder-ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ready), "-D", str(pgdata)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60  # its command line is the new one once it runs Python
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        (pgdata / "postmaster.pid").write_text(f"{holder.pid}\n{pgdata}\n")
        assert f"PostgreSQL (pid {holder.pid}) still serves {pgdata}" == refusal(home)
    finally:
        holder.kill()
        holder.wait()
    assert refusal(home) is None  # the same file, its process gone: a crash's leftover
    purge(_config(home), lambda line: None)
    assert not home.exists()


def test_a_configured_database_is_named_as_untouched(tmp_path):
    home = _stack_home(tmp_path / "home")
    lines: list[str] = []
    purge(_config(home, database={"url": "postgresql://postgres@127.0.0.1:5432/mine"}), lines.append)
    assert lines[-1] == "purge: the configured database (database.url) was not touched"
