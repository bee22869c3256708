"""The current flow run: its name once the model and version are known, and per-model slots.

Not tasks: renaming a run or holding a slot is about the flow run itself, not a step of its work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.runtime import flow_run

from modelops.integrations.flow_runs import HOLDER_WAIT_S, exclusive_slot, rename_flow_run, slot_holder


def version_label(version_or_alias: object) -> str:
    """``v3`` for a version number, the alias itself (``challenger``) until it is resolved."""
    text = str(version_or_alias)
    return f"v{text}" if text.isdigit() else text


def name_this_run(name: str, model_name: str | None = None) -> None:
    """Rename the current flow run (``ks-check-hmeq-risk-v3``); tag it ``model:<name>``."""
    if flow_run.id and (name != flow_run.name or model_name):
        _rename(flow_run.id, name, model_name)


def name_parent_run(name: str, model_name: str | None = None) -> None:
    """Rename the current subflow's parent run (the lifecycle, once its stage resolved the version)."""
    if flow_run.parent_flow_run_id:
        _rename(flow_run.parent_flow_run_id, name, model_name)


def _rename(run_id: str, name: str, model_name: str | None) -> None:
    try:
        rename_flow_run(run_id, name, [f"model:{model_name}"] if model_name else ())
    except Exception as exc:  # noqa: BLE001 - a name is for people: the run goes on without it
        get_run_logger().warning("could not rename flow run %s to %s: %s", run_id, name, exc)


def retrain_slot(model_name: str) -> str:
    return f"modelops-retrain-{model_name}"


@contextmanager
def one_retrain_per_model(model_name: str) -> Iterator[str | None]:
    """Hold the model's retrain slot for the block (yields None), or yield why this run must skip."""
    slot = retrain_slot(model_name)
    with exclusive_slot(slot, flow_run.id) as held:
        if held:
            yield None
            return
        holder = slot_holder(slot, besides=flow_run.id, wait_s=HOLDER_WAIT_S)
        which = f"run {holder.name} ({holder.id})" if holder else "its run is still starting"
        yield f"a retrain of {model_name} is already running ({which})"
