"""`modelops ship`: the log sidecar (spool directory -> PostgreSQL scoring log)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from modelops.cli.errors import UserError
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.database import DatabaseUnavailable, resolve_database_url
from modelops.scoring.sidecar import DatabaseDown, LogShipper, ShipperSettings

DEFAULT_SPOOL = "spool"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool", default=None, help="spool directory (default: $MODELOPS_SPOOL or <stack home>/spool)"
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL DSN (default: $MODELOPS_DATABASE_URL, config, stack)"
    )
    parser.add_argument("--once", action="store_true", help="ship what is in the spool now, then exit")
    parser.add_argument("--batch-rows", type=int, default=20_000, help="rows per transaction (default 20000)")
    parser.add_argument(
        "--poll", type=float, default=0.5, help="seconds between looks at an idle spool (default 0.5)"
    )
    parser.add_argument(
        "--rotate",
        choices=("move", "delete"),
        default="move",
        help="what to do with a finished, fully shipped file: move to <spool>/shipped/ (default) or delete",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="on SIGTERM/SIGINT keep shipping what is left, giving up on the database after this long "
        "(default 20; 0 = stop at once)",
    )
    parser.add_argument(
        "--backoff-max", type=float, default=30.0, help="longest wait between database retries (s)"
    )
    parser.add_argument(
        "--give-up-after",
        type=float,
        default=None,
        help="exit non-zero after the database has been down this long (default: never; 120 s with --once)",
    )


def spool_directory(explicit: str | None, config: ModelOpsConfig | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MODELOPS_SPOOL"):
        return os.environ["MODELOPS_SPOOL"]
    if config is not None:
        return str(config.stack_home / DEFAULT_SPOOL)
    return DEFAULT_SPOOL


def run(args: argparse.Namespace) -> int:
    if args.batch_rows < 1:
        raise UserError(f"--batch-rows {args.batch_rows} must be at least 1")
    config = load_config()
    try:
        dsn = resolve_database_url(config, args.database_url)
    except DatabaseUnavailable as exc:
        raise UserError(str(exc)) from None
    give_up = args.give_up_after if args.give_up_after is not None else (120.0 if args.once else None)
    settings = ShipperSettings(
        spool_dir=Path(spool_directory(args.spool, config)),
        schema=config.database.schema_name,
        batch_rows=args.batch_rows,
        poll_interval_s=args.poll,
        rotate=args.rotate,
        backoff_max_s=args.backoff_max,
        give_up_after_s=give_up,
    )
    shipper = LogShipper(dsn, settings)
    signals: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        signals.append(number)
        shipper.stop()  # the first signal: stop polling, drain; the second: stop after this batch

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stats = shipper.run(once=args.once)
        if signals and args.drain_seconds > 0:
            # In a pod the client has finished and the spool (an emptyDir) dies with the pod: ship it.
            print(f"ship: stopping; draining the spool for up to {args.drain_seconds:.0f} s", file=sys.stderr)
            shipper.settings = replace(settings, give_up_after_s=args.drain_seconds)
            shipper.stop_event.clear()
            stats = shipper.run(once=True)
    except DatabaseDown as exc:
        raise UserError(str(exc)) from None
    print(json.dumps({"shipped": stats.as_dict()}))
    return 0
