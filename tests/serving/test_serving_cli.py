"""``modelops serve`` refuses a wrong base path or a busy port with one line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.serving import build_saved_model

SERVE = "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"


def serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", SERVE, "serve", "--model-name", "risk", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_missing_base_path_is_one_line_and_exit_2(tmp_path):
    result = serve("--model-base-path", str(tmp_path / "nowhere"), "--port", "1")
    assert result.returncode == 2
    assert "is not a directory" in result.stderr and "Traceback" not in result.stderr


def test_base_path_without_versions_names_the_layout(tmp_path):
    (tmp_path / "not-a-version").mkdir()
    result = serve("--model-base-path", str(tmp_path), "--port", "1")
    assert result.returncode == 2 and "no numbered version folder" in result.stderr


def test_requested_version_absent(tmp_path):
    (tmp_path / "1").mkdir()
    result = serve("--model-base-path", str(tmp_path), "--versions", "2", "--port", "1")
    assert result.returncode == 2 and "version(s) [2] requested but not present" in result.stderr


@pytest.mark.slow
def test_busy_port_is_refused(tmp_path):
    build_saved_model(tmp_path / "1")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve("--model-base-path", str(tmp_path), "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
