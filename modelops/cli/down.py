"""``modelops down``: stop what ``modelops up`` started; data stays under stack.home.

It imports no Prefect and no MLflow (:mod:`modelops.stack.teardown`), unlike ``up`` and ``status``:
stopping the stack takes a fraction of a second of CPU.
"""

from __future__ import annotations

import argparse

from modelops.config import load_config
from modelops.stack.teardown import down


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options of its own: ``--config`` names the stack."""


def run(args: argparse.Namespace) -> int:
    config = load_config()
    stopped = down(config)
    if stopped:
        print(f"stack stopped ({', '.join(stopped)}); data kept in {config.stack_home}")
    return 0
