"""``modelops down``: stop what ``modelops up`` started; data stays under stack.home.

``--purge`` then deletes that data too (:mod:`modelops.stack.purge`). It imports no Prefect and no
MLflow (:mod:`modelops.stack.teardown`), unlike ``up`` and ``status``: stopping the stack takes a
fraction of a second of CPU.
"""

from __future__ import annotations

import argparse

from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.stack.purge import PurgeRefused, purge
from modelops.stack.teardown import down, print_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--purge",
        action="store_true",
        help="then delete the stack home (runs, models, scores, logs) and, as root, the PostgreSQL "
        "data kept for it under /var/lib/modelops; a configured database.url is never touched",
    )


def run(args: argparse.Namespace) -> int:
    config = load_config()
    stopped = down(config)
    if args.purge:
        try:
            purge(config, print_line)
        except PurgeRefused as exc:
            raise UserError(str(exc)) from None
        if stopped:
            print(f"stack stopped ({', '.join(stopped)}); its data deleted")
        return 0
    if stopped:
        print(f"stack stopped ({', '.join(stopped)}); data kept in {config.stack_home}")
    return 0
