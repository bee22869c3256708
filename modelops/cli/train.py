"""``modelops train``: run the train flow (MLflow run + new registry version aliased ``challenger``)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from modelops.cli.errors import UserError

HELP = "train the model on a CSV + schema (or generated HMEQ-like data) and register it as 'challenger'"


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

    import logging

    from modelops.config import load_config

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    config = load_config()
    if args.csv:  # fail fast, before Prefect starts, on a file the flow would reject anyway
        from modelops.data.loading import load_dataset
        from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema

        schema = DatasetSchema.from_yaml(args.schema) if args.schema else HMEQ_SCHEMA
        checked = load_dataset(args.csv, schema)
        print(
            f"train: {args.csv}: {len(checked)} rows, event rate {checked[schema.target].mean():.3f}",
            flush=True,
        )
    api = os.environ.get("PREFECT_API_URL")
    prefect = api or "none set: starting a temporary local server (slow)"
    model_name = args.model_name or config.model.name
    print(f"train: model {model_name}, MLflow {config.mlflow_uri}, Prefect API {prefect}", flush=True)
    print("train: importing TensorFlow, MLflow and Prefect ...", flush=True)
    started = time.perf_counter()
    from flows.train import train

    result = train(
        csv=str(args.csv) if args.csv else None,
        schema=str(args.schema) if args.schema else None,
        model_name=args.model_name,
        extra_tags=dict(args.tag) or None,
        rows=args.rows,
    )
    metrics = result["metrics"]
    print(
        f"\nregistered {result['model_name']} version {result['version']} (alias challenger) "
        f"in {time.perf_counter() - started:.0f} s\n"
        f"  hold-out: KS {metrics['ks']:.3f}  AUC {metrics['auc']:.3f}  Gini {metrics['gini']:.3f}  "
        f"accuracy {metrics['accuracy']:.3f}  log-loss {metrics['log_loss']:.4f}  (n={metrics['n']})\n"
        f"  data: {result['data_source']} (sha256 {result['data_digest'][:12]}…)\n"
        f"  MLflow run: {result['run_url'] or result['run_id'] + ' in ' + result['tracking_uri']}"
    )
    return 0
