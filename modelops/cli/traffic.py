"""`modelops traffic`: the scoring client, replaying a data period or a CSV against the served model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from modelops.cli.errors import UserError
from modelops.cli.ship import spool_directory
from modelops.config import ModelOpsConfig, load_config
from modelops.scoring.client import PROTOCOLS, TrafficSettings, run_traffic
from modelops.scoring.endpoint import find_serving_url
from modelops.scoring.source import load_replay_records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to replay")
    source.add_argument(
        "--period",
        type=int,
        default=None,
        help="generated production period (1-4 drift as the seed's quarters)",
    )
    source.add_argument("--csv", default=None, help="replay this CSV instead (columns of the model's schema)")
    source.add_argument("--schema", default=None, help="schema YAML for --csv (default: the HMEQ schema)")
    source.add_argument(
        "--rows", type=int, default=None, help="records to replay (default: 5000 generated / all of the CSV)"
    )
    source.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    source.add_argument(
        "--drift", type=float, default=1.0, help="generator drift scale (0 = none, default 1)"
    )
    source.add_argument(
        "--labels-later",
        metavar="CSV",
        default=None,
        help="withhold the true labels from the log and write request_id,label to CSV (`modelops labels`)",
    )
    target = parser.add_argument_group("where and how fast")
    target.add_argument(
        "--url",
        default=None,
        help="TF Serving REST base URL, or with --protocol grpc grpc://host:port (default: the model's URL "
        "on the local target, else the one recorded on its champion version, else the config's serving "
        "URL; for gRPC its host with --grpc-port)",
    )
    target.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="rest",
        help="rest (default): the TF Serving REST API; grpc: its gRPC API (PredictionService/Predict)",
    )
    target.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="with --protocol grpc and no --url: the gRPC port on the serving URL's host "
        "(default: config serving.grpc_port, 8500)",
    )
    target.add_argument("--model", default=None, help="model name (default: config model.name)")
    target.add_argument(
        "--rate", type=float, default=0.0, help="records per second (default 0 = as fast as possible)"
    )
    target.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    target.add_argument("--batch-size", type=int, default=1, help="records per request (default 1)")
    target.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    target.add_argument(
        "--retry-for",
        type=float,
        default=15.0,
        help="resend requests that find no server for up to this many seconds per outage, e.g. while "
        "the stack restarts a killed server (default 15; 0 = never)",
    )
    target.add_argument(
        "--spool", default=None, help="spool directory (default: $MODELOPS_SPOOL or <stack home>/spool)"
    )
    target.add_argument(
        "--progress-every", type=float, default=5.0, help="seconds between progress lines (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")


def run(args: argparse.Namespace) -> int:
    config = load_config()
    if args.period is None and args.csv is None:
        raise UserError("nothing to replay: give --period N (generated data) or --csv FILE")
    records = load_replay_records(
        period=args.period, csv=args.csv, schema=args.schema, rows=args.rows, seed=args.seed, drift=args.drift
    )
    url, where = _serving_url(args, config)
    settings = _settings(args, config, url)
    print(
        f"traffic: replaying {len(records)} records of {records.source} to {settings.url} ({where}) "
        f"(model {settings.model_name}, rate {settings.rate or 'max'}/s, concurrency {settings.concurrency}, "
        f"batch {settings.batch_size}); spool {settings.spool_dir}",
        file=sys.stderr,
    )
    summary = run_traffic(records, settings)
    print(json.dumps(summary.as_dict()) if args.json else summary.table())
    if summary.sent and not summary.ok:
        print(
            f"modelops traffic: error: all {summary.sent} records failed ({summary.errors_by_kind}); "
            f"is the model served at {settings.url}? (`modelops serve` / `modelops up`)",
            file=sys.stderr,
        )
        return 3
    return 0


def _serving_url(args: argparse.Namespace, config: ModelOpsConfig) -> tuple[str, str]:
    """The URL to send to, and where it came from."""
    grpc = args.protocol == "grpc"
    if args.grpc_port is not None and not grpc:
        raise UserError("--grpc-port is for --protocol grpc")
    if args.url:
        if grpc and args.url.startswith(("http://", "https://")):
            raise UserError(
                f"--url {args.url} is a REST URL: with --protocol grpc give grpc://host:port "
                "(or leave --url out and give --grpc-port)"
            )
        if not grpc and args.url.startswith("grpc://"):
            raise UserError(f"--url {args.url} is a gRPC address: add --protocol grpc")
        return args.url, "--url"
    url, where = find_serving_url(config, args.model or config.model.name)
    if not grpc:
        return url, where
    port = args.grpc_port if args.grpc_port is not None else config.serving.grpc_port
    if not port:
        raise UserError(
            "--protocol grpc needs a gRPC port: --grpc-port N, or serving.grpc_port in the config"
        )
    host = urlsplit(url).hostname or config.serving.host
    host = f"[{host}]" if ":" in host else host
    return f"grpc://{host}:{port}", f"{where}'s host, gRPC port {port}"


def _settings(args: argparse.Namespace, config: ModelOpsConfig, url: str) -> TrafficSettings:
    try:
        return TrafficSettings(
            url=url.rstrip("/"),
            model_name=args.model or config.model.name,
            spool_dir=Path(spool_directory(args.spool, config)),
            decision_threshold=config.model.decision_threshold,
            rate=args.rate,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            timeout_s=args.timeout,
            labels_file=Path(args.labels_later) if args.labels_later else None,
            progress_every_s=args.progress_every,
            retry_window_s=args.retry_for,
            protocol=args.protocol,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
