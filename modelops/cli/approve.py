"""``modelops approve``: answer a paused champion approval (the same as the form in the Prefect UI)."""

from __future__ import annotations

import argparse

from modelops.approval import ChampionApproval, validate_answer
from modelops.cli.errors import UserError
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.approvals import (
    ApprovalError,
    find_paused_approval,
    resume_approval,
    watch_for_refusal,
)
from modelops.integrations.prefect_api import PrefectUnreachable, prefect_api_reachable, use_prefect_api

_RECHECK_S = 8.0  # how long to watch for the flow re-pausing because it did not accept the answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--model", help="model whose paused approval to answer (default: model.name of the config)"
    )
    target.add_argument("--run", help="flow run id of the paused approval")
    parser.add_argument("--tag", default="", help="serving image tag, e.g. v7 (required to approve)")
    parser.add_argument("--reviewer", required=True, help="your name (must be in approval.approvers if set)")
    parser.add_argument("--reject", action="store_true", help="reject the candidate instead of approving it")
    parser.add_argument("--comment", default="", help="reason, kept in the approvals audit")
    parser.add_argument(
        "--no-wait", action="store_true", help="do not watch whether the flow accepted the answer"
    )


def run(args: argparse.Namespace) -> int:
    config = load_config()
    answer = ChampionApproval(
        approved=not args.reject, image_tag=args.tag, reviewer=args.reviewer, comment=args.comment
    )
    problem = validate_answer(answer, config.approval.approvers)
    if problem:
        raise UserError(f"answer not sent: {problem}")
    try:
        with use_prefect_api(config), prefect_api_reachable():
            return _answer(args, answer, args.model or config.model.name, config)
    except (ApprovalError, PrefectUnreachable) as exc:
        raise UserError(str(exc)) from None


def _answer(
    args: argparse.Namespace, answer: ChampionApproval, model_name: str, config: ModelOpsConfig
) -> int:
    run_id = args.run or find_paused_approval(model_name)
    answered_key = resume_approval(run_id, answer.model_dump(), stack=config)
    verb = "rejected" if args.reject else f"approved with image tag {args.tag}"
    print(f"approval run {run_id}: {verb} by {args.reviewer}")
    if not args.no_wait:
        refusal = watch_for_refusal(run_id, answered_key, _RECHECK_S)
        if refusal:
            print(f"the flow did not accept the answer and waits again: {refusal}")
            return 1
    return 0
