"""``modelops lifecycle``: start the lifecycle deployment for a candidate (it pauses for approval)."""

from __future__ import annotations

import argparse

from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.deployments import LIFECYCLE as LIFECYCLE_DEPLOYMENT
from modelops.integrations.prefect_api import start_deployment, use_prefect_api


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="registered model (default: model.name of the config)")
    parser.add_argument(
        "--version", default="challenger", help="candidate version number or alias (default: challenger)"
    )
    parser.add_argument(
        "--ks-threshold", type=float, default=None, help="KS threshold for the production stage"
    )
    parser.add_argument("--notify-teams", action="store_true", help="send Teams notifications for this run")
    parser.add_argument("--notify-email", action="store_true", help="send e-mail notifications for this run")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    if args.ks_threshold is not None and not 0 < args.ks_threshold < 1:
        raise UserError(f"--ks-threshold {args.ks_threshold} must be between 0 and 1 (e.g. 0.3)")
    model = args.model or config.model.name
    try:
        with use_prefect_api(config):
            flow_run = start_deployment(
                LIFECYCLE_DEPLOYMENT,
                {
                    "model_name": model,
                    "candidate_version": str(args.version),
                    "ks_threshold": args.ks_threshold,
                    "notify_teams": args.notify_teams,
                    "notify_email": args.notify_email,
                },
            )
    except Exception as exc:  # noqa: BLE001 - unreachable API, missing deployment: one line for the user
        raise UserError(
            f"cannot start {LIFECYCLE_DEPLOYMENT} ({type(exc).__name__}: {exc}); "
            "is the stack up (modelops up)?"
        ) from None
    print(f"lifecycle run {flow_run.name} started for {model} {args.version}")
    print(f"  follow it: {config.prefect_ui_url}/runs/flow-run/{flow_run.id}")
    print(
        "  it pauses for approval: answer the form there, or "
        f"`modelops approve --model {model} --tag <tag> --reviewer <you>`"
    )
    return 0
