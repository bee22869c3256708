"""The ``modelops`` program's exit: every exit handler runs, all output arrives, the status is kept.

``modelops`` (the console script, :func:`modelops.cli.run_program`) ends the process right after the
last exit handler instead of tearing down the modules a command imported. These tests run real
processes with their output on pipes (block-buffered), so output that was not flushed would be lost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODELOPS = str(Path(sys.executable).parent / "modelops")

# A stand-in command: it registers an exit handler (as Prefect does when imported), leaves output in
# the buffer, keeps an object whose finaliser runs only if the modules are torn down, and returns 3.
PROGRAM = """
import atexit, sys
from modelops import cli

class Finalised:
    def __del__(self):
        print("modules torn down", flush=True)

def command():
    global kept
    kept = Finalised()
    atexit.register(print, "command's exit handler ran")
    print("buffered", end="")
    return 3

cli.main = command
cli.run_program()
"""


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_the_command_s_exit_handlers_and_output_outlive_the_fast_exit():
    result = run(sys.executable, "-c", PROGRAM)
    assert result.returncode == 3
    assert result.stdout.startswith("buffered")
    assert "command's exit handler ran" in result.stdout
    assert "modules torn down" not in result.stdout  # the teardown was skipped


def test_an_exit_handler_registered_before_the_program_keeps_the_usual_exit(tmp_path):
    (tmp_path / "sitecustomize.py").write_text('import atexit\natexit.register(print, "early handler ran")\n')
    result = run(sys.executable, "-c", PROGRAM, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 3
    assert "early handler ran" in result.stdout and "command's exit handler ran" in result.stdout
    assert "modules torn down" in result.stdout  # the usual exit, which would have run it too


def test_exit_statuses_and_messages_of_the_console_script(tmp_path):
    help_ = run(MODELOPS, "--help")
    assert help_.returncode == 0 and "bench" in help_.stdout  # the whole usage, to the last command
    usage = run(MODELOPS, "no-such-command")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    missing = run(MODELOPS, "status", "--config", str(tmp_path / "nowhere.yaml"))
    assert missing.returncode == 2 and "nowhere.yaml does not exist" in missing.stderr
    generated = run(MODELOPS, "generate", "--out", str(tmp_path / "data"), "--periods", "1")
    assert generated.returncode == 0, generated.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "period_1.csv",
        "schema.yaml",
        "train.csv",
    ]
