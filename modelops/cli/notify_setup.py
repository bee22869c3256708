"""``modelops notify-setup``: keep the Teams webhook URL in a Prefect block, seen and changed in the UI.

A Power Automate Workflow URL goes into a *Microsoft Teams Webhook* block; a legacy connector URL
(``.../webhookb2/...``), which that block refuses, into a *Secret* block. The config then names the
block: ``notifications.teams.block: <name>``. The URL is read from an environment variable or typed
at a hidden prompt, never from the command line (it would stay in the shell history and in ``ps``),
and it is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from pydantic import ValidationError

from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.integrations.notify import save_teams_block, teams_kind
from modelops.integrations.prefect_api import PrefectUnreachable, prefect_api_reachable, use_prefect_api

URL_VARIABLE = "MODELOPS_TEAMS_WEBHOOK_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--block", required=True, help="name of the Prefect block to create, e.g. modelops-teams"
    )
    parser.add_argument(
        "--url-env",
        default=URL_VARIABLE,
        help=f"environment variable holding the webhook URL (default {URL_VARIABLE}; else a hidden prompt)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a block of that name")


def run(args: argparse.Namespace) -> int:
    url = _webhook_url(args.url_env)
    if not url.startswith(("https://", "http://")):
        raise UserError("the Teams webhook URL must start with https:// (value not shown)")
    config = load_config()
    try:
        with use_prefect_api(config), prefect_api_reachable():
            slug = save_teams_block(args.block, url, overwrite=args.overwrite)
    except PrefectUnreachable as exc:
        raise UserError(str(exc)) from None
    except ValidationError:  # its text would quote (part of) the URL
        raise UserError(
            f"block '{args.block}' not saved: Prefect's Microsoft Teams Webhook block takes Power Automate "
            "Workflow URLs (.../workflows/<id>/triggers/manual/paths/invoke?...); a legacy connector URL "
            "contains /webhookb2/"
        ) from None
    except ValueError as exc:  # a block of that name exists
        hint = " (add --overwrite to replace it)" if "already" in str(exc) else ""
        raise UserError(f"block '{args.block}' not saved: {_without(url, str(exc))}{hint}") from None
    kind = "Workflow (Adaptive Card)" if teams_kind(url) == "workflow" else "legacy connector (MessageCard)"
    print(f"notify-setup: {kind} URL saved in the Prefect block {slug}/{args.block}")
    print("  in the environment config:")
    print("    notifications:")
    print(f"      teams: {{enabled: true, block: {args.block}}}")
    print("  and switch Teams on per run (lifecycle: notify_teams=true; retrain: notify_teams=true)")
    return 0


def _webhook_url(variable: str) -> str:
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    if not sys.stdin.isatty():
        raise UserError(f"set {variable} to the Teams webhook URL (or run this in a terminal to type it)")
    value = getpass.getpass("Teams webhook URL (not shown): ").strip()
    if not value:
        raise UserError("no URL given")
    return value


def _without(url: str, text: str) -> str:
    return text.replace(url, "<the URL>")
