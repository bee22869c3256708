"""``modelops bench``: the benchmark table (every figure against its floor, measured in one run)."""

from __future__ import annotations

import argparse
import sys

from modelops.cli.errors import UserError
from modelops.config import PROJECT_ROOT

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))  # bench/ lives next to the package, not inside it
try:
    from bench import suite
except ModuleNotFoundError:  # an installed package without the source tree
    suite = None  # type: ignore[assignment]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    if suite is not None:
        suite.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if suite is None:
        raise UserError(
            "the benchmark suite lives in bench/ of the source tree: run modelops bench from a checkout"
        )
    try:
        options = suite.options_from(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    report = suite.run_and_write(options, args.out)
    return 1 if "errors" in report.sections else 0  # missed goals are figures, not failures
