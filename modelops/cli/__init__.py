"""The ``modelops`` command line: one sub-command per module in this package.

Each command module defines ``add_arguments(parser)`` and ``run(args) -> int``; its one-line help is
in :data:`COMMANDS`.
Only the module of the command being run is imported: ``modelops --help`` imports none of them,
and ``modelops ship`` / ``traffic`` run where Prefect, MLflow and TensorFlow are not installed
(the client image). Errors a user can fix are raised as :class:`UserError` (or ``ConfigError`` /
``SchemaError``) and printed as one line naming the problem and the fix, with a non-zero exit.
Any other exception is printed as one line too (:func:`modelops.cli.errors.one_line`: the component,
cause and fix of an environment failure, else "unexpected <Type>"); ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from modelops.cli.errors import UserError, one_line
from modelops.config import ConfigError
from modelops.data.schema import SchemaError


class Command(NamedTuple):
    module: str  # under modelops.cli
    help: str


COMMANDS: dict[str, Command] = {
    "up": Command("up", "start the embedded stack (idempotent), wait until healthy and apply prefect.yaml"),
    "status": Command(
        "status", "show each stack component with URL, PID, health and RSS (exit 1 when one is down)"
    ),
    "down": Command("down", "stop exactly what `modelops up` started and remove the stack state"),
    "generate": Command(
        "generate", "write generated HMEQ-like data: train.csv, period_<i>.csv (drifting) and schema.yaml"
    ),
    "train": Command(
        "train",
        "train the model on a CSV + schema (or generated HMEQ-like data) and register it as 'challenger'",
    ),
    "approve": Command(
        "approve", "answer a paused champion approval: approve (or --reject) with an image tag and your name"
    ),
    "serve": Command(
        "serve",
        "serve a SavedModel base path (numbered version folders) over the TensorFlow Serving REST API",
    ),
    "traffic": Command(
        "traffic",
        "scoring client: replay a data period (or CSV) against the TF Serving REST API and spool the scores",
    ),
    "ship": Command(
        "ship", "log sidecar: ship the scoring client's spool to the PostgreSQL scoring log (exactly once)"
    ),
    "labels": Command(
        "labels", "load true labels that arrived after scoring: a CSV with columns request_id,label"
    ),
    "notify-setup": Command(
        "notify_setup", "keep the Teams webhook URL in a Prefect block (notifications.teams.block)"
    ),
    "ks-check": Command(
        "ks_check", "run one KS check now on the champion's labelled scoring log and print the result"
    ),
    "lifecycle": Command(
        "lifecycle", "start the lifecycle (approve → prebuild → build → deploy) for a registered version"
    ),
    "demo": Command(
        "demo",
        "run the whole loop: stack, train, approve, serve, replay drift, KS check, retrain, approve, recover",
    ),
    "bench": Command(
        "bench",
        "benchmark serving, log shipping, the KS check, the retrain loop and the stack against their floors",
    ),
}


def _global_options(parser: argparse.ArgumentParser, *, on_command: bool = False) -> None:
    """``--config`` and ``-v``: before the command (``modelops --config docker up``) or after it
    (``modelops up --config docker``); on a command they default to "not given", so they never
    undo the ones given before it."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS if on_command else None,
        help="environment name under infra/config/ or a YAML path (default: $MODELOPS_CONFIG or 'local')",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if on_command else False,
        help="debug logging, and the traceback of an error",
    )


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; only ``commands`` (default: all) get their arguments (and imports)."""
    chosen = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="modelops",
        description="ModelOps loop for TensorFlow models: train, approve, serve, monitor, retrain.",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.help)
        _global_options(command_parser, on_command=True)
        if name in chosen:
            module = importlib.import_module(f"modelops.cli.{command.module}")
            module.add_arguments(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, if any (global options may come first)."""
    scout = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    _global_options(scout)
    scout.add_argument("command", nargs="?")
    try:
        known, _ = scout.parse_known_args(argv)
    except argparse.ArgumentError:
        return None  # the full parser reports it
    return known.command if known.command in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_in(argv)
    args = build_parser([command] if command else []).parse_args(argv)
    if args.config:
        os.environ["MODELOPS_CONFIG"] = args.config
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    try:
        return int(args._module.run(args) or 0)
    except (UserError, ConfigError, SchemaError) as exc:
        print(f"modelops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelops {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(one_line(args.command, exc, verbose=args.verbose), file=sys.stderr)
        return 1


class _ExitStatus:
    value = 1  # until main() returns: an exception escaped it


def run_program() -> None:
    """The ``modelops`` program: :func:`main`, then an exit that skips tearing the modules down.

    A command imports up to ~2,000 modules (Prefect, pandas, ...); the interpreter frees them one by
    one at exit, ~0.4 CPU-second that nothing needs. :func:`_exit_after_handlers` is registered before
    the command runs, so every exit handler the command's libraries register runs before it (Prefect's
    log and event flushing among them); it then flushes what is left and ends the process.
    ``python -c "...main(...)"`` (how the targets start ``modelops serve``) exits as usual.
    """
    # Handlers registered before this one would run after it. The one there is logging's (registered
    # when this module imported logging), which it runs itself; with any other (a sitecustomize's,
    # say) the exit stays the usual one.
    registered = getattr(atexit, "_ncallbacks", lambda: -1)()
    if registered == 1:
        atexit.register(_exit_after_handlers)
    try:
        _ExitStatus.value = main()
    except SystemExit as exit_:  # argparse: --help (0), a usage error (2)
        code = exit_.code
        _ExitStatus.value = code if isinstance(code, int) else (0 if code is None else 1)
        raise
    sys.exit(_ExitStatus.value)


def _exit_after_handlers() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_ExitStatus.value)


if __name__ == "__main__":
    run_program()
