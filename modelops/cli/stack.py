"""``modelops up`` / ``status`` / ``down``: the embedded stack on 127.0.0.1, state under stack.home."""

from __future__ import annotations

import argparse
import json
import time

from modelops.cli.errors import UserError
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.postgres import redact
from modelops.stack import endpoints, manager, prefect_toml
from modelops.stack.manager import StackError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "status":
        parser.add_argument("--json", action="store_true", help="print the status as JSON")
    if name == "up":
        parser.add_argument(
            "--sqlite",
            action="store_true",
            help="keep the Prefect server's and MLflow's state in SQLite files under the stack home "
            "instead of their PostgreSQL databases (same as stack.backend: sqlite)",
        )


def run(args: argparse.Namespace) -> int:
    config = load_config()
    try:
        if args.command == "up":
            if getattr(args, "sqlite", False):
                config = config.model_copy(
                    update={"stack": config.stack.model_copy(update={"backend": "sqlite"})}
                )
            return _up(config)
        if args.command == "status":
            return _status(config, as_json=getattr(args, "json", False))
        if args.command == "down":
            return _down(config)
    except StackError as exc:
        raise UserError(str(exc)) from None
    raise UserError(f"unknown stack command {args.command!r}: use up, status or down")


def _up(config: ModelOpsConfig) -> int:
    t0 = time.monotonic()
    print(f"modelops up: stack home {config.stack_home}", flush=True)
    manager.up(config)
    ends = endpoints(config)
    total_rss = sum(s.rss_bytes for s in manager.status(config))
    print(f"stack ready in {time.monotonic() - t0:.1f} s (RSS {total_rss / 2**20:.0f} MB)")
    print(f"  Prefect UI   {ends.prefect_ui_url}")
    print(f"  Prefect API  {ends.prefect_api_url}")
    print(f"  MLflow       {ends.mlflow_uri}")
    print(f"  PostgreSQL   {redact(ends.database_url)}")
    toml = prefect_toml.prefect_toml_path(config)
    if prefect_toml.is_ours(toml, config):
        print(f"  prefect.toml {toml} (Python and `prefect` run from {toml.parent} use this stack)")
    return 0


def _status(config: ModelOpsConfig, *, as_json: bool) -> int:
    rows = manager.status(config)
    if as_json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
    elif not rows:
        print(f"the stack is not up (no state in {config.stack_home}): run `modelops up`")
    else:
        width = max(15, *(len(row.name) for row in rows))  # serving:<model> rows: one per model and URL
        print(f"{'component':<{width}} {'state':<9} {'pid':>7} {'rss MB':>7} {'restarts':>8}  url")
        for row in rows:
            state = "healthy" if row.healthy else ("unhealthy" if row.running else "down")
            pid = str(row.pid) if row.pid else "-"
            rss = f"{row.rss_bytes / 2**20:.0f}" if row.rss_bytes else "-"
            line = f"{row.name:<{width}} {state:<9} {pid:>7} {rss:>7} {row.restarts:>8}  {row.url}"
            print(line + (f"  ({row.detail})" if row.detail and not row.healthy else ""))
        print(f"{'total':<{width}} {'':<9} {'':>7} {sum(r.rss_bytes for r in rows) / 2**20:>7.0f}")
        _print_orphans(rows)
    orphans = sum(row.orphaned_runs or 0 for row in rows)
    return 0 if rows and all(row.healthy for row in rows) and not orphans else 1


def _print_orphans(rows: list[manager.ComponentStatus]) -> None:
    """The flow runs with no process behind them (0 once `modelops up` has reconciled them)."""
    counted = [row.orphaned_runs for row in rows if row.orphaned_runs is not None]
    if not counted:
        print("orphaned runs   unknown (the Prefect server does not answer)")
        return
    hint = "" if not sum(counted) else ": Running/Paused with no process behind them; `modelops up` ends them"
    print(f"orphaned runs   {sum(counted)}{hint}")


def _down(config: ModelOpsConfig) -> int:
    stopped = manager.down(config)
    if stopped:
        print(f"stack stopped ({', '.join(stopped)}); data kept in {config.stack_home}")
    return 0
