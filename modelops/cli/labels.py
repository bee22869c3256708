"""`modelops labels`: load late-arriving true outcomes (request_id,label) into the labels table."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.integrations.database import DatabaseUnavailable, apply_migrations, resolve_database_url
from modelops.integrations.scoring_log import load_labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv", required=True, help="CSV file with a header and columns request_id,label (0/1)"
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL DSN (default: $MODELOPS_DATABASE_URL, config, stack)"
    )


def run(args: argparse.Namespace) -> int:
    path = Path(args.csv)
    if not path.exists():
        raise UserError(f"labels file {path} does not exist")
    config = load_config()
    try:
        dsn = resolve_database_url(config, args.database_url)
    except DatabaseUnavailable as exc:
        raise UserError(str(exc)) from None
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"request_id", "label"} <= columns:
            raise UserError(f"{path}: needs a header with columns request_id,label; found {sorted(columns)}")
        schema = config.database.schema_name
        apply_migrations(dsn, schema)
        try:
            count = load_labels(dsn, ((row["request_id"], row["label"]) for row in reader), schema)
        except ValueError as exc:
            raise UserError(f"{path}: {exc}") from None
    print(f"labels: loaded {count} labels from {path}")
    return 0
