"""Which project source files a long-lived process imported, and whether one changed since.

The warm processes that fork work (the engine standby for flow runs, the warm standby for model
servers) import the project once; a file edited afterwards would not be in what they fork, so they
record the modification times of what they imported and refuse work once one differs.
Standard library only: the serving image's stand-in imports it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("flows", "tasks", "modelops")


def project_sources() -> dict[Path, int]:
    """Modification times of the project's modules now imported (``flows/``, ``tasks/``, ``modelops/``)."""
    packages = [PROJECT_ROOT / name for name in PROJECT_PACKAGES]
    sources: dict[Path, int] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and any(Path(file).is_relative_to(package) for package in packages):
            with contextlib.suppress(OSError):
                sources[Path(file)] = os.stat(file).st_mtime_ns
    return sources


def changed_sources(sources: dict[Path, int]) -> str | None:
    """The first loaded project file whose modification time changed (or that is gone), else None."""
    for path, mtime in sources.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return str(path.relative_to(PROJECT_ROOT))
        except OSError:
            return str(path.relative_to(PROJECT_ROOT))
    return None
