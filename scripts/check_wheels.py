#!/usr/bin/env python3
"""Check that the pinned stack installs from wheels on every supported Python.

For each supported CPython 3.X (the minor versions that ``requires-python`` in pyproject.toml admits),
pip resolves, wheels only, every pin of that version's constraints file together with the project and
its ``test`` extra, for x86_64 Linux with glibc <= 2.35 (Ubuntu 22.04, the oldest supported system).
``pip install --dry-run --report`` is used rather than ``pip download``: the same finder and resolver,
but it reads only the wheels' metadata instead of downloading ~600 MB per Python.

A version's constraints file is requirements/constraints-py3.X.txt when it exists, else
requirements/constraints.txt. pip's configuration files and the PIP_* variables that add or restrict
package sources (find-links, extra indexes, constraints) are ignored, so that a local wheel directory
cannot hide a wheel missing from the index; PIP_INDEX_URL, certificates and proxies are honoured.

Run with the project's virtualenv:  .venv/bin/python scripts/check_wheels.py [--python 3.12 ...]
Exit status: 0 every Python resolves; 1 some Python does not (pip's reason is printed); 3 no package
index is reachable (nothing was checked).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
OLDEST_GLIBC_MINOR = 35  # Ubuntu 22.04 (Debian 12 has 2.36)
# pip freeze leaves these out of a constraints file; the resolution may pull them in unpinned.
UNPINNED_OK = {"pip", "setuptools", "wheel"}
# PIP_* variables kept: where the one index is and how to reach it. Every other one is dropped.
PIP_ENV_KEPT = {
    "PIP_INDEX_URL",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_TRUSTED_HOST",
    "PIP_PROXY",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CACHE_DIR",
    "PIP_NO_CACHE_DIR",
}
EXIT_UNREACHABLE = 3


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def supported_pythons(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The CPython 3.X versions that requires-python admits, e.g. ['3.11', '3.12']."""
    spec = SpecifierSet(tomllib.loads(pyproject.read_text())["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(8, 20) if spec.contains(f"3.{minor}.0")]


def constraints_for(python: str, requirements: Path = ROOT / "requirements") -> Path:
    specific = requirements / f"constraints-py{python}.txt"
    return specific if specific.exists() else requirements / "constraints.txt"


def read_pins(constraints: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in constraints.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"{constraints}: not an exact pin: {raw!r}")
            pins[canonical(name)] = version.strip()
    return pins


def platforms() -> list[str]:
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(5, OLDEST_GLIBC_MINOR + 1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in PIP_ENV_KEPT}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_resolve(
    python: str, requirements: list[str], workdir: Path, report: Path
) -> subprocess.CompletedProcess[str]:
    """pip's wheel-only resolution of ``requirements`` for CPython ``python``, without installing."""
    abi = "cp" + python.replace(".", "")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    command += ["--target", str(workdir / "target"), "--report", str(report), "--only-binary=:all:"]
    command += ["--python-version", python, "--implementation", "cp", "--abi", abi]
    for platform in platforms():
        command += ["--platform", platform]
    return subprocess.run(
        command + requirements, cwd=ROOT, env=pip_env(), capture_output=True, text=True, timeout=1200
    )


def index_reachable() -> tuple[bool, str]:
    """Whether pip reaches its index: resolve pip itself, metadata only."""
    with tempfile.TemporaryDirectory(prefix="check-wheels-") as tmp:
        probe = pip_resolve(
            f"{sys.version_info[0]}.{sys.version_info[1]}",
            ["--no-deps", "--retries", "1", "--timeout", "15", "pip"],
            Path(tmp),
            Path(tmp) / "report.json",
        )
    lines = (probe.stderr or probe.stdout).strip().splitlines() or ["pip failed"]
    why = next(
        (line for line in lines if "connection" in line.lower() or "could not fetch" in line.lower()),
        lines[-1],
    )
    return probe.returncode == 0, why[:300]


@dataclass
class Result:
    python: str
    constraints: Path
    ok: bool
    lines: list[str] = field(default_factory=list)


def check(python: str, constraints: Path, with_project: bool = True) -> Result:
    pins = read_pins(constraints)
    result = Result(python, constraints, ok=False)
    requirements = ["-r", str(constraints)]  # every pin is installed: each must have a wheel
    if with_project:
        requirements.append(".[test]")
    with tempfile.TemporaryDirectory(prefix=f"check-wheels-{python}-") as tmp:
        report_path = Path(tmp) / "report.json"
        try:
            done = pip_resolve(python, requirements, Path(tmp), report_path)
        except subprocess.TimeoutExpired as exc:
            result.lines = [f"pip did not finish within {exc.timeout:.0f} s"]
            return result
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.strip()]
            result.lines = errors[-12:] or [f"pip exited with {done.returncode}"]
            return result
        report = json.loads(report_path.read_text())
    resolved: dict[str, str] = {}
    for item in report["install"]:
        name = canonical(item["metadata"]["name"])
        url = item["download_info"]["url"]
        if name == "modelops":
            continue
        resolved[name] = item["metadata"]["version"]
        if not url.endswith(".whl"):
            result.lines.append(f"{name} {resolved[name]}: not a wheel ({url})")
    for name, version in pins.items():
        if resolved.get(name) != version:
            result.lines.append(f"{name}=={version}: resolved to {resolved.get(name)}")
    extra = sorted(f"{name} {version}" for name, version in resolved.items() if name not in pins)
    unexpected = [item for item in extra if item.split()[0] not in UNPINNED_OK]
    if unexpected:
        result.lines.append(f"needed but not pinned in {constraints.name}: {', '.join(unexpected)}")
    result.ok = not result.lines
    if result.ok:
        note = f"; unpinned: {', '.join(extra)}" if extra else ""
        result.lines.append(f"{len(pins)} pins resolve from wheels{note}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--python", action="append", help="a CPython 3.X to check (repeatable); default: every supported one"
    )
    parser.add_argument("--constraints", type=Path, help="check this file instead of each version's own")
    parser.add_argument(
        "--pins-only", action="store_true", help="check only the pins, without the project itself"
    )
    args = parser.parse_args(argv)

    pythons = args.python or supported_pythons()
    reachable, reason = index_reachable()
    if not reachable:
        print(f"check-wheels: no package index reachable, nothing checked: {reason}")
        return EXIT_UNREACHABLE
    targets = [(python, args.constraints or constraints_for(python)) for python in pythons]
    glibc = f"2.{OLDEST_GLIBC_MINOR}"
    print(f"check-wheels: CPython {', '.join(pythons)} on x86_64 Linux, glibc <= {glibc}, wheels only")
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        futures = [pool.submit(check, python, path, not args.pins_only) for python, path in targets]
        results = [future.result() for future in futures]
    for result in results:
        shown = result.constraints
        if shown.is_relative_to(ROOT):
            shown = shown.relative_to(ROOT)
        print(f"{result.python} ({shown}): {'ok' if result.ok else 'FAIL'}")
        for line in result.lines:
            print(f"    {line}")
    if all(result.ok for result in results):
        return 0
    if not index_reachable()[0]:
        print("check-wheels: the package index became unreachable during the check; nothing is proven")
        return EXIT_UNREACHABLE
    return 1


if __name__ == "__main__":
    sys.exit(main())
