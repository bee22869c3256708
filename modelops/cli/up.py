"""``modelops up``: start the embedded stack on 127.0.0.1 (state under stack.home) and print where it is."""

from __future__ import annotations

import argparse
import time

from modelops.cli.errors import UserError
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.postgres import redact
from modelops.stack import endpoints, manager, prefect_toml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="keep the Prefect server's and MLflow's state in SQLite files under the stack home "
        "instead of their PostgreSQL databases (same as stack.backend: sqlite)",
    )


def run(args: argparse.Namespace) -> int:
    config = load_config()
    if getattr(args, "sqlite", False):
        config = config.model_copy(update={"stack": config.stack.model_copy(update={"backend": "sqlite"})})
    try:
        return _up(config)
    except manager.StackError as exc:
        raise UserError(str(exc)) from None


def _up(config: ModelOpsConfig) -> int:
    t0 = time.monotonic()
    print(f"modelops up: stack home {config.stack_home}", flush=True)
    manager.up(config)
    ends = endpoints(config)
    total_rss = sum(s.rss_bytes for s in manager.status(config))
    print(f"stack ready in {time.monotonic() - t0:.1f} s (RSS {total_rss / 2**20:.0f} MB)")
    print(f"  Prefect UI   {ends.prefect_ui_url}")
    print(f"  Prefect API  {ends.prefect_api_url}")
    print(f"  MLflow       {ends.mlflow_uri}")
    print(f"  PostgreSQL   {redact(ends.database_url)}")
    toml = prefect_toml.prefect_toml_path(config)
    if prefect_toml.is_ours(toml, config):
        print(f"  prefect.toml {toml} (Python and `prefect` run from {toml.parent} use this stack)")
    return 0
