"""``modelops status``: each stack component's state, PID, RSS, restarts and URL; exit 1 when one is down
or a flow run has no process behind it."""

from __future__ import annotations

import argparse
import json

from modelops.config import ModelOpsConfig, load_config
from modelops.stack.status import ComponentStatus, status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def run(args: argparse.Namespace) -> int:
    return _status(load_config(), as_json=args.json)


def _status(config: ModelOpsConfig, *, as_json: bool) -> int:
    rows = status(config)
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


def _print_orphans(rows: list[ComponentStatus]) -> None:
    """The flow runs with no process behind them (0 once `modelops up` has reconciled them)."""
    counted = [row.orphaned_runs for row in rows if row.orphaned_runs is not None]
    if not counted:
        print("orphaned runs   unknown (the Prefect server does not answer)")
        return
    hint = "" if not sum(counted) else ": Running/Paused with no process behind them; `modelops up` ends them"
    print(f"orphaned runs   {sum(counted)}{hint}")
