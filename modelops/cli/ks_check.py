"""``modelops ks-check``: a KS check now, of one model's champion or (``--every-champion``) of every
champion in the registry, as the scheduled deployment does."""

from __future__ import annotations

import argparse
import json
from typing import Any

from flows.ks_check import ks_check
from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.integrations.prefect_api import PrefectUnreachable, prefect_api_reachable, use_prefect_api


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name (default: model.name of the config)")
    parser.add_argument("--version", help="model version to check (default: the MLflow 'champion' alias)")
    parser.add_argument(
        "--reference", help="CSV/Parquet of training rows (+ optional 'score') for drift figures"
    )
    parser.add_argument(
        "--database-url", help="scoring-log DSN (default: MODELOPS_DATABASE_URL, config, stack)"
    )
    parser.add_argument(
        "--review-timeout",
        type=int,
        default=0,
        help="on failure, wait this many seconds for a review in the Prefect UI (default 0: none)",
    )
    parser.add_argument(
        "--every-champion",
        action="store_true",
        help="check every registered model that has a champion, each with its own settings (as scheduled)",
    )
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    if args.every_champion and (args.model or args.version or args.reference):
        raise UserError(
            "--every-champion checks each champion with its own settings: "
            "drop --model, --version and --reference"
        )
    try:
        with use_prefect_api(config), prefect_api_reachable():
            result = ks_check(
                model_name=args.model,
                version=args.version,
                config=config,
                reference=args.reference,
                database_url=args.database_url,
                review_timeout_s=args.review_timeout,
                every_champion=args.every_champion,
            )
    except PrefectUnreachable as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.every_champion:
        _print_every_champion(result)
        return 1 if result["errors"] else 0
    elif result["status"] == "error":
        print(f"KS check of {result['model']} failed: {result['error']}")
    else:
        _print_summary(result)
    return 1 if result["status"] == "error" else 0


def _print_summary(result: dict[str, Any]) -> None:
    ks = "–" if result["ks"] is None else f"{result['ks']:.4f}"
    auc = "–" if result["auc"] is None else f"{result['auc']:.4f}"
    print(
        f"{result['model']} v{result['version']}: {result['status']}"
        f"  KS {ks} (threshold {result['threshold']})"
        f"  AUC {auc}  n={result['n']} events={result['n_events']}  — {result['reason']}"
    )
    if result.get("drift"):
        drift = result["drift"]
        print(
            f"drift: score KS {drift['score_ks']}, features over PSI {drift['psi_limit']}: "
            f"{', '.join(drift['drifted_features']) or 'none'}"
        )
    print(f"report: Prefect artifact '{result['artifact']}'")


def _print_every_champion(result: dict[str, Any]) -> None:
    if not result["checks"]:
        print("no registered model has a champion: nothing to check")
    for model, check in result["checks"].items():
        if check["status"] == "error":
            print(f"KS check of {model} failed: {check['error']}")
        else:
            _print_summary(check)
