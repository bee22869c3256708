"""The ``modelops`` command line: one sub-command per module in this package.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import nothing heavy at module level (TensorFlow, MLflow, Prefect) so that
``modelops status`` answers in well under a second; they import inside ``run``.
Errors a user can fix are raised as :class:`UserError` (or ``ConfigError``/``SchemaError``) and
printed as one line naming the problem and the fix, with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from modelops.cli.errors import UserError

# command name -> module under modelops.cli
COMMANDS: dict[str, str] = {
    "up": "stack",
    "status": "stack",
    "down": "stack",
    "generate": "generate",
    "train": "train",
    "approve": "approve",
    "serve": "serve",
    "traffic": "traffic",
    "ship": "ship",
    "labels": "labels",
    "ks-check": "ks_check",
    "lifecycle": "lifecycle",
    "demo": "demo",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelops",
        description="ModelOps loop for TensorFlow models: train, approve, serve, monitor, retrain.",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="environment name under infra/config/ or a YAML path (default: $MODELOPS_CONFIG or 'local')",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"modelops.cli.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"modelops.cli.{module_name}":
                continue  # command not built yet
            raise
        help_text = getattr(module, "HELP_BY_COMMAND", {}).get(name, module.HELP)
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser, name) if _takes_name(module) else module.add_arguments(
            command_parser
        )
        command_parser.set_defaults(_module=module)
    return parser


def _takes_name(module: object) -> bool:
    import inspect

    return len(inspect.signature(module.add_arguments).parameters) == 2  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        os.environ["MODELOPS_CONFIG"] = args.config
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    from modelops.config import ConfigError
    from modelops.data.schema import SchemaError

    try:
        return int(args._module.run(args) or 0)
    except (UserError, ConfigError, SchemaError) as exc:
        print(f"modelops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelops {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
