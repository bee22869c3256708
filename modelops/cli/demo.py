"""``modelops demo``: the seed's whole loop on the embedded stack, narrated."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from modelops.cli.demo_loop import DemoError, run_demo
from modelops.cli.errors import UserError
from modelops.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auto-approve",
        nargs="?",
        const="modelops-demo",
        default=None,
        metavar="REVIEWER",
        help="answer each approval form as REVIEWER (default name: modelops-demo) instead of waiting for you",
    )
    parser.add_argument("--periods", type=int, default=4, help="production periods to replay (default 4)")
    parser.add_argument("--rows", type=int, default=2000, help="records per period (default 2000)")
    parser.add_argument(
        "--result-json", default=None, help="also write the outcome (steps, checks, versions) here"
    )


def run(args: argparse.Namespace) -> int:
    if args.periods < 1 or args.rows < 200:
        raise UserError("--periods must be >= 1 and --rows >= 200 (the KS check needs a minimum sample)")
    config = load_config()
    try:
        result = run_demo(
            config, args.auto_approve, periods=args.periods, rows_per_period=args.rows, count_startup=True
        )
    except DemoError as exc:
        raise UserError(
            f"{exc} (logs: {config.stack_home / 'logs'}; Prefect UI: {config.prefect_ui_url})"
        ) from None
    if args.result_json:
        with open(args.result_json, "w") as handle:
            json.dump(asdict(result), handle, indent=2, default=str)
    return 0
