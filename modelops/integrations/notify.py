"""Notifications after each stage of the loop: Microsoft Teams and/or e-mail, else the flow log.

Teams has two webhook kinds: Power Automate *Workflows* (``*.logic.azure.com``,
``*.powerplatform.com``) take an Adaptive Card in a ``message`` envelope; the retired Office 365
*connectors* (``*.webhook.office.com/webhookb2/...``) take a ``pymsteams`` MessageCard. The kind is
chosen from the URL unless ``notifications.teams.kind`` names it.

Secrets (the webhook URL carries its own signature; the SMTP password) are resolved at send time
and never logged: log lines say "teams: sent" or "teams: failed (HTTP 500)", never where to.
A failing channel logs a warning and never fails the calling flow.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import urlsplit

import pymsteams
from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext

from modelops.config import NotificationSettings
from modelops.secrets import resolve_secret

Stage = Literal[
    "approved",
    "rejected",
    "deployed",
    "deploy_failed",
    "performance_ok",
    "retraining_needed",
    "retrained",
    "monitoring_error",
]
STAGES: tuple[str, ...] = Stage.__args__  # type: ignore[attr-defined]

# Adaptive Card colour names and MessageCard theme colours per stage.
_GOOD, _WARN, _BAD = ("Good", "2EB886"), ("Warning", "E8A33D"), ("Attention", "D40E0D")
_STAGE_STYLE: dict[str, tuple[str, str]] = {
    "approved": _GOOD,
    "rejected": _WARN,
    "deployed": _GOOD,
    "deploy_failed": _BAD,
    "performance_ok": _GOOD,
    "retraining_needed": _WARN,
    "retrained": _GOOD,
    "monitoring_error": _BAD,
}
_TIMEOUT_S = 10.0

ChannelStatus = Literal["sent", "failed", "off"]


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow/task run logger inside a run (the message lands in the flow log), else a plain logger."""
    if FlowRunContext.get() or TaskRunContext.get():
        return get_run_logger()
    return logging.getLogger("modelops.notify")


def teams_kind(url: str, configured: str = "auto") -> Literal["workflow", "connector"]:
    """Which payload a Teams webhook URL takes: an explicit setting wins, else the URL decides."""
    if configured in ("workflow", "connector"):
        return configured  # type: ignore[return-value]
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path.lower()
    if host.endswith(".webhook.office.com") or host.endswith("outlook.office.com") or "/webhookb2/" in path:
        return "connector"
    # logic.azure.com / powerplatform.com and anything else: Workflows are what Teams issues today.
    return "workflow"


def adaptive_card(stage: str, title: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The Workflow envelope: a Teams message with one Adaptive Card attachment."""
    color, _ = _STAGE_STYLE.get(stage, _WARN)
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": title,
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {"type": "TextBlock", "text": f"stage: {stage}", "isSubtle": True, "spacing": "None"},
            {"type": "FactSet", "facts": [{"title": str(k), "value": _text(v)} for k, v in facts.items()]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def message_card(stage: str, title: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The legacy connector payload, built with pymsteams (sent by :func:`_post_json`, which logs nothing)."""
    _, theme = _STAGE_STYLE.get(stage, _WARN)
    card = pymsteams.connectorcard("https://invalid.example/unused")  # URL unused: we only build the payload
    card.title(title)
    card.summary(title)
    card.text(f"stage: {stage}")
    card.color(theme)
    section = pymsteams.cardsection()
    for key, value in facts.items():
        section.addFact(str(key), _text(value))
    card.addSection(section)
    return {"@type": "MessageCard", "@context": "https://schema.org/extensions", **card.payload}


def email_message(
    stage: str, title: str, facts: dict[str, Any], sender: str, recipients: tuple[str, ...]
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[modelops] {title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["X-ModelOps-Stage"] = stage
    width = max((len(str(k)) for k in facts), default=0)
    lines = [title, "", f"stage: {stage}", ""] + [
        f"{str(k).ljust(width)}  {_text(v)}" for k, v in facts.items()
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


def notify(
    stage: str,
    title: str,
    facts: dict[str, Any],
    settings: NotificationSettings,
    teams: bool = True,
    email: bool = True,
) -> dict[str, ChannelStatus]:
    """Tell people what happened at one stage; returns what each channel did ("sent"/"failed"/"off").

    ``teams``/``email`` are the per-run switches (the seed's start-form check boxes); a channel also
    needs ``enabled: true`` and its settings. With no channel on, the message goes to the flow log.
    """
    if stage not in STAGES:
        raise ValueError(f"notification stage {stage!r} is unknown: use one of {', '.join(STAGES)}")
    log = _logger()
    result: dict[str, ChannelStatus] = {"teams": "off", "email": "off"}
    if teams and settings.teams.enabled and settings.teams.webhook is not None:
        result["teams"] = _send_teams(stage, title, facts, settings, log)
    if email and settings.email.enabled and settings.email.recipients:
        result["email"] = _send_email(stage, title, facts, settings, log)
    if result["teams"] != "sent" and result["email"] != "sent":
        summary = "; ".join(f"{k}={_text(v)}" for k, v in facts.items())
        log.info("notification [%s] %s: %s", stage, title, summary)
    return result


def _send_teams(
    stage: str, title: str, facts: dict[str, Any], settings: NotificationSettings, log: Any
) -> ChannelStatus:
    try:
        url = resolve_secret(settings.teams.webhook)
    except Exception as exc:  # a missing secret names the variable/block, not the value
        log.warning("teams: failed (%s)", exc)
        return "failed"
    assert url is not None
    kind = teams_kind(url, settings.teams.kind)
    payload = adaptive_card(stage, title, facts) if kind == "workflow" else message_card(stage, title, facts)
    outcome = _post_json(url, payload)
    if outcome == "ok":
        log.info("teams: sent (%s)", "adaptive card" if kind == "workflow" else "message card")
        return "sent"
    log.warning("teams: failed (%s); the flow goes on", outcome)
    return "failed"


def _post_json(url: str, payload: dict[str, Any]) -> str:
    """POST JSON; 'ok' or a reason that never contains the URL (it carries the webhook's signature).

    urllib rather than httpx/requests: those log the request URL at INFO/DEBUG level.
    """
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return f"cannot connect: {type(reason).__name__}" + (
            f" errno {reason.errno}" if isinstance(reason, OSError) and reason.errno else ""
        )
    except (OSError, ValueError) as exc:
        return f"cannot connect: {type(exc).__name__}"


def _send_email(
    stage: str, title: str, facts: dict[str, Any], settings: NotificationSettings, log: Any
) -> ChannelStatus:
    cfg = settings.email
    message = email_message(stage, title, facts, cfg.sender, cfg.recipients)
    try:
        password = resolve_secret(cfg.password, required=bool(cfg.username)) if cfg.username else None
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=_TIMEOUT_S) as smtp:
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username:
                smtp.login(cfg.username, password or "")
            smtp.send_message(message)
    except smtplib.SMTPException as exc:
        code = getattr(exc, "smtp_code", None)
        log.warning("email: failed (%s%s); the flow goes on", type(exc).__name__, f" {code}" if code else "")
        return "failed"
    except Exception as exc:
        # OSError text names host/port only; ConfigError names the variable or block, not the value.
        log.warning("email: failed (%s: %s); the flow goes on", type(exc).__name__, exc)
        return "failed"
    log.info("email: sent to %d recipient(s)", len(cfg.recipients))
    return "sent"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
