"""``modelops ks-check``: one KS check of the champion now (the scheduled deployment does the same)."""

from __future__ import annotations

import argparse
import json

HELP = "run one KS check now on the champion's labelled scoring log and print the result"


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
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")


def run(args: argparse.Namespace) -> int:
    import httpx

    from modelops.cli.approve import use_prefect_api
    from modelops.cli.errors import UserError
    from modelops.config import load_config
    from flows.ks_check import ks_check

    config = load_config()
    with use_prefect_api(config):
        try:
            result = ks_check(
                model_name=args.model,
                version=args.version,
                config=config,
                reference=args.reference,
                database_url=args.database_url,
                review_timeout_s=args.review_timeout,
            )
        except (httpx.TransportError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "Failed to reach API" not in str(exc):
                raise
            raise UserError(
                f"cannot reach the Prefect API at {config.prefect_api_url}: start the stack (modelops up) "
                "or set PREFECT_API_URL"
            ) from None
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif result["status"] == "error":
        print(f"KS check of {result['model']} failed: {result['error']}")
    else:
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
    return 1 if result["status"] == "error" else 0
