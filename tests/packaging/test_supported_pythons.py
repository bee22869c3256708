"""The supported Pythons: one list (requires-python), the bootstrap that picks one, the wheel check.

The wheel check (scripts/check_wheels.py) asks the package index: pip's HTTP cache cannot stand in for
it offline (index pages expire after minutes, and a proxy that strips cache headers leaves no cache at
all), so those tests skip, with pip's reason, when no index is reachable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support.network import free_port

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
CHECK = ROOT / "scripts" / "check_wheels.py"
UNREACHABLE = 3


@functools.cache
def _check_module() -> ModuleType:
    """scripts/check_wheels.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("check_wheels", CHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    return module


def _bootstrap_supported() -> list[str]:
    match = re.search(r"^SUPPORTED=\(([^)]*)\)$", BOOTSTRAP.read_text(), re.MULTILINE)
    assert match, "scripts/bootstrap.sh has no SUPPORTED=(...) line"
    return match.group(1).split()


def _bootstrap(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(BOOTSTRAP), str(tmp_path / "venv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_python(directory: Path, name: str, version: str) -> Path:
    """A stand-in that reports ``version`` and fails to create a virtualenv."""
    directory.mkdir(exist_ok=True)
    fake = directory / name
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$1" in -c) echo {version} ;; --version) echo "Python {version}.0" ;;'
        ' *) echo "fake python: $*" >&2; exit 1 ;; esac\n'
    )
    fake.chmod(0o755)
    return fake


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=1500, env=env, cwd=ROOT
    )


def _skip_when_unreachable(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode == UNREACHABLE:
        pytest.skip(f"no package index reachable for the wheel check: {done.stdout.strip()}")


def test_one_list_of_supported_pythons() -> None:
    from_pyproject = _check_module().supported_pythons()
    assert from_pyproject == _bootstrap_supported()
    assert "3.11" in from_pyproject  # what CI runs
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in from_pyproject
    for python in from_pyproject:
        assert _check_module().constraints_for(python).is_file()


def test_bootstrap_says_when_no_python_is_found(tmp_path: Path) -> None:
    done = _bootstrap(tmp_path, {"PATH": str(tmp_path / "nothing-here")})
    assert done.returncode != 0
    supported = " ".join(_bootstrap_supported())
    assert "bootstrap: no supported Python found on PATH" in done.stderr
    assert f"supported Pythons: {supported}. Install one" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "venv").exists()


def test_bootstrap_refuses_an_unsupported_python(tmp_path: Path) -> None:
    fake = _fake_python(tmp_path / "bin", "python3.10", "3.10")
    done = _bootstrap(tmp_path, {**os.environ, "PYTHON": str(fake)})
    assert done.returncode != 0
    assert f"PYTHON={fake} is Python 3.10, which this project does not support" in done.stderr
    assert "supported Pythons: " in done.stderr
    assert not (tmp_path / "venv").exists()


def test_bootstrap_picks_the_first_supported_python_that_runs(tmp_path: Path) -> None:
    """A python3.11 that does not run (a pyenv shim of a version not selected) is passed over."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3.11"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.11: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    _fake_python(bin_dir, "python3.12", "3.12")
    _fake_python(bin_dir, "python3", "3.10")
    done = _bootstrap(tmp_path, {"PATH": str(bin_dir)})
    # The fake cannot create the virtualenv, so bootstrap stops right after choosing it.
    assert (
        f"bootstrap: creating {tmp_path / 'venv'} with Python 3.12.0 ({bin_dir / 'python3.12'})"
        in done.stdout
    )
    assert done.returncode != 0


def test_wheel_check_says_when_no_index_is_reachable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        k: v for k, v in os.environ.items() if k not in {"PIP_PROXY", "PIP_INDEX_URL", "NO_PROXY", "no_proxy"}
    }
    env.update(HTTPS_PROXY=closed, HTTP_PROXY=closed, https_proxy=closed, http_proxy=closed)
    done = _check(env=env)
    assert done.returncode == UNREACHABLE, done.stdout + done.stderr
    assert "check-wheels: no package index reachable, nothing checked" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_supported_python_installs_from_wheels() -> None:
    done = _check()
    _skip_when_unreachable(done)
    assert done.returncode == 0, done.stdout + done.stderr
    for python in _check_module().supported_pythons():
        assert re.search(
            rf"^{re.escape(python)} \(requirements/constraints[^)]*\.txt\): ok$", done.stdout, re.M
        )


@pytest.mark.slow
def test_wheel_check_fails_on_a_pin_without_a_wheel(tmp_path: Path) -> None:
    """pgserver 0.0.6 has CPython wheels up to 3.11 only: a 3.12 install would have to build it."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("six==1.17.0\npgserver==0.0.6\n")
    done = _check("--python", "3.12", "--constraints", str(constraints), "--pins-only")
    _skip_when_unreachable(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"3.12 ({constraints}): FAIL" in done.stdout
    assert "No matching distribution found for pgserver==0.0.6" in done.stdout
