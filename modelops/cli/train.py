"""``modelops train``: run the train flow (MLflow run + new registry version aliased ``challenger``)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from flows.base import require_prefect_api
from flows.train import train
from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.data.loading import load_dataset
from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema
from modelops.integrations.prefect_api import PrefectUnreachable, use_prefect_api


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--tag takes KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", type=Path, default=None, help="training data; default: generated HMEQ-like loans"
    )
    parser.add_argument(
        "--schema", type=Path, default=None, help="schema YAML (target, numeric, categorical, separator); "
        "default: the HMEQ schema",
    )  # fmt: skip
    parser.add_argument(
        "--model-name", default=None, help="registered model name (default: config model.name)"
    )
    parser.add_argument("--rows", type=int, default=None, help="generated training rows (default: config)")
    parser.add_argument(
        "--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE",
        help="extra lineage tag on the run and the version (repeatable)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    config = load_config()
    if args.csv:  # fail fast, before the flow starts, on a file the flow would reject anyway
        _check_csv(args.csv, args.schema)
    model_name = args.model_name or config.model.name
    try:
        with use_prefect_api(config):  # the stack's server (PREFECT_API_URL, if set, wins)
            api = require_prefect_api()
            print(f"train: model {model_name}, MLflow {config.mlflow_uri}, Prefect API {api}", flush=True)
            print("train: running the train flow (TensorFlow and MLflow load on first use) ...", flush=True)
            started = time.perf_counter()
            result = train(
                csv=str(args.csv) if args.csv else None,
                schema=str(args.schema) if args.schema else None,
                model_name=args.model_name,
                extra_tags=dict(args.tag) or None,
                rows=args.rows,
            )
    except PrefectUnreachable as exc:
        raise UserError(str(exc)) from None
    _print_result(result, time.perf_counter() - started)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.schema and not args.csv:
        raise UserError("--schema describes a --csv file: give --csv too (or neither, for generated data)")
    if args.csv and not args.csv.is_file():
        raise UserError(f"--csv {args.csv} does not exist")
    if args.schema and not args.schema.is_file():
        raise UserError(f"--schema {args.schema} does not exist")
    if args.rows is not None and args.rows < 100:
        raise UserError(f"--rows must be at least 100, got {args.rows}")
    if args.csv and args.rows is not None:
        raise UserError("--rows sizes generated data; it cannot be combined with --csv")


def _check_csv(csv: Path, schema_file: Path | None) -> None:
    schema = DatasetSchema.from_yaml(schema_file) if schema_file else HMEQ_SCHEMA
    checked = load_dataset(csv, schema)
    print(f"train: {csv}: {len(checked)} rows, event rate {checked[schema.target].mean():.3f}", flush=True)


def _print_result(result: dict[str, Any], seconds: float) -> None:
    metrics = result["metrics"]
    print(
        f"\nregistered {result['model_name']} version {result['version']} (alias challenger) "
        f"in {seconds:.0f} s\n"
        f"  hold-out: KS {metrics['ks']:.3f}  AUC {metrics['auc']:.3f}  Gini {metrics['gini']:.3f}  "
        f"accuracy {metrics['accuracy']:.3f}  log-loss {metrics['log_loss']:.4f}  (n={metrics['n']})\n"
        f"  data: {result['data_source']} (sha256 {result['data_digest'][:12]}…)\n"
        f"  MLflow run: {result['run_url'] or result['run_id'] + ' in ' + result['tracking_uri']}"
    )
