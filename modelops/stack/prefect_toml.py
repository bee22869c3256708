"""The ``prefect.toml`` that ``modelops up`` writes so Prefect's own settings point at the stack.

Prefect reads ``prefect.toml`` from the current directory (after environment variables and ``.env``,
before ``pyproject.toml`` and the profile). With this file in the project root, ``python -c "from
flows.ks_check import ks_check; ks_check()"`` and ``prefect flow-run ls`` run from there talk to the
stack's server, and no temporary server can start (``[server.ephemeral] enabled = false``).

The file is ours only while its first line says so: a ``prefect.toml`` someone else wrote is never
overwritten or removed, and ``down`` removes ours only when it was written for the same stack home.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelops.config import PROJECT_ROOT, ModelOpsConfig

MARKER = "# Written by `modelops up`"


def prefect_toml_path(config: ModelOpsConfig) -> Path:
    """``stack.prefect_toml``; by default the project root's when the stack home is inside the project
    (``.modelops``), else the home's own: a stack in a temporary home never repoints the project."""
    chosen = config.stack.prefect_toml
    if chosen is not None:
        return chosen if chosen.is_absolute() else PROJECT_ROOT / chosen
    home = config.stack_home.resolve()
    return PROJECT_ROOT / "prefect.toml" if home.is_relative_to(PROJECT_ROOT) else home / "prefect.toml"


def render(config: ModelOpsConfig) -> str:
    home = config.stack_home.resolve()
    return (
        f"{MARKER} for the stack in {home}.\n"
        "# Python and the `prefect` CLI run from this folder use that stack's Prefect server.\n"
        "# `modelops down` removes this file; `modelops up` rewrites it.\n"
        "[api]\n"
        f"url = {json.dumps(config.prefect_api_url)}\n"
        "\n"
        "[server.ephemeral]\n"
        "enabled = false  # never a temporary server: without the stack, a flow call fails and says why\n"
    )


def is_ours(path: Path, config: ModelOpsConfig | None = None) -> bool:
    """Written by ``modelops up`` (for the stack of ``config``, when given)."""
    try:
        first = path.read_text().splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    if not first.startswith(MARKER):
        return False
    return config is None or first == f"{MARKER} for the stack in {config.stack_home.resolve()}."


def write(config: ModelOpsConfig) -> tuple[Path, bool]:
    """Write (atomically) the file for this stack; (path, False) when a foreign file is in the way."""
    path = prefect_toml_path(config)
    if path.exists() and not is_ours(path):
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render(config))
    os.replace(tmp, path)
    return path, True


def remove(config: ModelOpsConfig) -> Path | None:
    """Remove the file if ``up`` wrote it for this stack; returns the removed path."""
    path = prefect_toml_path(config)
    if not is_ours(path, config):
        return None
    path.unlink(missing_ok=True)
    return path
