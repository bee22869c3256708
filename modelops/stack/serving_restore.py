"""``modelops up`` serves again every model the local target served before ``down`` (or a crash).

What ran is the local target's records (``<home>/serving/state/<model>.json``): the version and,
through the sticky port map, the URL. Each model comes back on the same port from its served copy
(``<home>/serving/models/<model>/<version>``) or, when that copy is gone, from the registry's
``champion``. Models start side by side, each in a thread: a model that cannot start is reported and
the others still come up.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modelops.config import ModelOpsConfig
from modelops.targets.base import DeployError, Rollout
from modelops.targets.local import LocalTarget

Echo = Callable[[str], None]


def restore_serving(config: ModelOpsConfig, echo: Echo, target: LocalTarget | None = None) -> list[str]:
    """Serve every recorded model that is not running; returns the names of the components served."""
    target = target or LocalTarget(config)
    models = [model for model in target.models() if target.current(model) is None]
    if not models:
        return []
    echo(f"serving: starting {', '.join(models)} again on their URLs")
    with ThreadPoolExecutor(max_workers=min(4, len(models)), thread_name_prefix="restore") as pool:
        outcomes = list(pool.map(lambda model: _restore(config, target, model), models))
    served = []
    for model, outcome in zip(models, outcomes, strict=True):
        if isinstance(outcome, Rollout):
            pid = outcome.details["pid"]
            echo(f"serving:{model}: version {outcome.version} serves at {outcome.url} (pid {pid})")
            served.append(f"serving:{model}")
        else:
            echo(f"serving:{model}: not served again: {outcome}")
    return served


def _restore(config: ModelOpsConfig, target: LocalTarget, model: str) -> Rollout | str:
    """The rollout, or why the model could not be served again."""
    record = target.record(model)
    if record is None:
        return "its serving record is gone"
    try:
        if (target.served_copy(model, record.version) / "saved_model.pb").is_file():
            return target.revive(model) or "its serving record is gone"
        return _from_registry(config, target, model, record.version)
    except DeployError as exc:
        return str(exc)


def _from_registry(config: ModelOpsConfig, target: LocalTarget, model: str, recorded: str) -> Rollout | str:
    """The served copy is gone: serve the registry's champion instead."""
    # pandas and the model code under the registry client: only for this rare case, not at every `up`
    from modelops.integrations.registry import CHAMPION, download_serving_model, tracking_server_unreachable

    unreachable = tracking_server_unreachable(config.mlflow_uri)
    if unreachable:
        return f"its served copy (version {recorded}) is gone and the registry is unreachable ({unreachable})"
    with tempfile.TemporaryDirectory(prefix=f"modelops-restore-{model}-") as scratch:
        try:
            folder = download_serving_model(model, CHAMPION, Path(scratch), config.mlflow_uri)
        except Exception as exc:  # noqa: BLE001 - any registry failure is a reason, reported per model
            return f"its served copy (version {recorded}) is gone and the registry's champion failed: {exc}"
        return target.deploy(model, folder.name, folder)
