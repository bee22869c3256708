"""``modelops bench``: the benchmark table (every figure against its floor, measured in one run)."""

from __future__ import annotations

import argparse
import sys

HELP = "benchmark serving, log shipping, the KS check, the retrain loop and the stack against their floors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from modelops.config import PROJECT_ROOT

    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))  # bench/ lives next to the package, not inside it
    try:
        from bench.suite import add_arguments as suite_arguments
    except ModuleNotFoundError:  # an installed package without the source tree
        parser.set_defaults(_no_bench=True)
        return
    suite_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from modelops.cli.errors import UserError

    if getattr(args, "_no_bench", False):
        raise UserError(
            "the benchmark suite lives in bench/ of the source tree: run modelops bench from a checkout"
        )
    from bench.suite import options_from, run_and_write

    try:
        options = options_from(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    report = run_and_write(options, args.out)
    return 1 if "errors" in report.sections else 0  # missed goals are figures, not failures
