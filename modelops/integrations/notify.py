"""Notifications after each stage of the loop: Microsoft Teams and/or e-mail, else the flow log.

Teams has two webhook kinds: Power Automate *Workflows* (``*.logic.azure.com``,
``*.powerplatform.com``) take an Adaptive Card in a ``message`` envelope, posted here; the retired
Office 365 *connectors* (``*.webhook.office.com/webhookb2/...``) take a MessageCard, built and sent
by ``pymsteams``. The kind is chosen from the URL unless ``notifications.teams.kind`` names it.

The URL comes from ``notifications.teams.webhook`` (an environment variable or a Prefect Secret
block) or from ``notifications.teams.block``: a Prefect block made by :func:`save_teams_block`
(``modelops notify-setup``), a *Microsoft Teams Webhook* block for a Workflow URL (Prefect's block
accepts no other kind) or a *Secret* block for a connector URL. Both are visible in the Prefect UI.

Secrets (the webhook URL carries its own signature; the SMTP password) are resolved at send time
and never logged: log lines say "teams: sent" or "teams: failed (HTTP 500)", never where to.
A failing channel logs a warning and never fails the calling flow.
"""

from __future__ import annotations

import contextvars
import json
import logging
import smtplib
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import urlsplit

import pymsteams
import requests
from prefect import get_run_logger
from prefect.blocks.notifications import MicrosoftTeamsWebhook
from prefect.blocks.system import Secret
from prefect.context import FlowRunContext, TaskRunContext

from modelops.config import ConfigError, NotificationSettings
from modelops.secrets import resolve_secret

Stage = Literal[
    "approval_requested",
    "approval_reminder",
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
_ASK = ("Accent", "0078D7")
_STAGE_STYLE: dict[str, tuple[str, str]] = {
    "approval_requested": _ASK,
    "approval_reminder": _WARN,
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
Link = tuple[str, str]  # (label, URL): a button on a Teams card, a line in an e-mail

# urllib3 logs each request line (the URL path, where a connector webhook keeps its signature) at
# DEBUG; while a thread sends a card through pymsteams/requests these records are dropped.
_SENDING = threading.local()
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")


class _HideWebhookRequests(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_SENDING, "active", False)


for _name in _URL_LOGGERS:
    logging.getLogger(_name).addFilter(_HideWebhookRequests())


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


def adaptive_card(stage: str, title: str, facts: dict[str, Any], link: Link | None = None) -> dict[str, Any]:
    """The Workflow envelope: a Teams message with one Adaptive Card attachment (and a link button)."""
    color, _ = _STAGE_STYLE.get(stage, _WARN)
    card: dict[str, Any] = {
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
    if link is not None:
        card["actions"] = [{"type": "Action.OpenUrl", "title": link[0], "url": link[1]}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def connector_card(
    url: str, stage: str, title: str, facts: dict[str, Any], link: Link | None = None
) -> pymsteams.connectorcard:
    """The legacy connector's MessageCard as a ``pymsteams`` card for ``url`` (``send()`` posts it)."""
    _, theme = _STAGE_STYLE.get(stage, _WARN)
    card = pymsteams.connectorcard(url, http_timeout=_TIMEOUT_S)
    card.payload.update({"@type": "MessageCard", "@context": "https://schema.org/extensions"})
    card.title(title)
    card.summary(title)
    card.text(f"stage: {stage}")
    card.color(theme)
    section = pymsteams.cardsection()
    for key, value in facts.items():
        section.addFact(str(key), _text(value))
    card.addSection(section)
    if link is not None:
        card.addLinkButton(link[0], link[1])
    return card


def email_message(
    stage: str,
    title: str,
    facts: dict[str, Any],
    sender: str,
    recipients: tuple[str, ...],
    link: Link | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[modelops] {title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["X-ModelOps-Stage"] = stage
    width = max((len(str(k)) for k in facts), default=0)
    lines = [title, "", f"stage: {stage}", ""]
    if link is not None:
        lines += [f"{link[0]}: {link[1]}", ""]
    lines += [f"{str(k).ljust(width)}  {_text(v)}" for k, v in facts.items()]
    message.set_content("\n".join(lines) + "\n")
    return message


def notify(
    stage: str,
    title: str,
    facts: dict[str, Any],
    settings: NotificationSettings,
    teams: bool = True,
    email: bool = True,
    link: Link | None = None,
) -> dict[str, ChannelStatus]:
    """Tell people what happened at one stage; returns what each channel did ("sent"/"failed"/"off").

    ``teams``/``email`` are the per-run switches (the seed's start-form check boxes); a channel also
    needs ``enabled: true`` and its settings. With no channel on, the message goes to the flow log.
    ``link`` (label, URL) becomes a button on the Teams card and a line in the e-mail.
    """
    if stage not in STAGES:
        raise ValueError(f"notification stage {stage!r} is unknown: use one of {', '.join(STAGES)}")
    log = _logger()
    result: dict[str, ChannelStatus] = {"teams": "off", "email": "off"}
    teams_url_given = settings.teams.webhook is not None or bool(settings.teams.block)
    if teams and settings.teams.enabled and teams_url_given:
        result["teams"] = _send_teams(stage, title, facts, settings, log, link)
    if email and settings.email.enabled and settings.email.recipients:
        result["email"] = _send_email(stage, title, facts, settings, log, link)
    if result["teams"] != "sent" and result["email"] != "sent":
        summary = "; ".join(f"{k}={_text(v)}" for k, v in facts.items())
        where = f" ({link[0]}: {link[1]})" if link else ""
        log.info("notification [%s] %s: %s%s", stage, title, summary, where)
    return result


def notify_later(
    delay_s: float,
    stage: str,
    title: str,
    facts: dict[str, Any],
    settings: NotificationSettings,
    teams: bool = True,
    email: bool = True,
    link: Link | None = None,
) -> threading.Timer:
    """:func:`notify` in ``delay_s`` seconds, from a daemon timer thread; ``cancel()`` it to call it off.

    The timer runs in a copy of the caller's context, so inside a flow run its log lines land in
    that run's log.
    """
    context = contextvars.copy_context()
    timer = threading.Timer(
        delay_s, context.run, args=(notify, stage, title, facts, settings, teams, email, link)
    )
    timer.daemon = True
    timer.name = f"modelops-notify-{stage}"
    timer.start()
    return timer


def teams_url(settings: NotificationSettings) -> str:
    """The webhook URL, read at the moment of use (never log it): ``webhook`` first, else ``block``."""
    if settings.teams.webhook is not None:
        url = resolve_secret(settings.teams.webhook)
        assert url is not None  # required=True raises instead
        return url
    name = str(settings.teams.block)
    try:
        teams_block = MicrosoftTeamsWebhook.load(name)  # called from sync code: the block, no coroutine
        assert isinstance(teams_block, MicrosoftTeamsWebhook)
        return teams_block.url.get_secret_value()
    except ValueError:
        pass  # not a Teams Webhook block: a connector URL lives in a Secret block
    try:
        secret = Secret.load(name)
        assert isinstance(secret, Secret)
        value: str = secret.get()
        return value
    except ValueError:
        raise ConfigError(
            f"no Prefect block '{name}' of type Microsoft Teams Webhook or Secret: create it with "
            f"`modelops notify-setup --block {name}` (notifications.teams.block)"
        ) from None


def save_teams_block(name: str, url: str, overwrite: bool = False) -> str:
    """Keep a Teams webhook URL in a Prefect block named ``name``; returns the block type's slug.

    A Workflow URL goes into a *Microsoft Teams Webhook* block (Prefect checks it is one); a legacy
    connector URL, which that block refuses, into a *Secret* block. The config names either with
    ``notifications.teams.block: <name>``.
    """
    block: MicrosoftTeamsWebhook | Secret
    if teams_kind(url) == "workflow":
        block = MicrosoftTeamsWebhook(url=url)
    else:
        block = Secret(value=url)
    block.save(name, overwrite=overwrite)
    return block.get_block_type_slug()


def _send_teams(
    stage: str, title: str, facts: dict[str, Any], settings: NotificationSettings, log: Any, link: Link | None
) -> ChannelStatus:
    try:
        url = teams_url(settings)
    except Exception as exc:  # a missing secret names the variable/block, not the value
        log.warning("teams: failed (%s)", exc)
        return "failed"
    kind = teams_kind(url, settings.teams.kind)
    if kind == "workflow":
        outcome = _post_json(url, adaptive_card(stage, title, facts, link))
    else:
        outcome = _send_connector_card(connector_card(url, stage, title, facts, link))
    if outcome == "ok":
        log.info("teams: sent (%s)", "adaptive card" if kind == "workflow" else "message card")
        return "sent"
    log.warning("teams: failed (%s); the flow goes on", outcome)
    return "failed"


def _send_connector_card(card: pymsteams.connectorcard) -> str:
    """``card.send()``; 'ok' or a reason that never contains the URL (requests' errors quote it)."""
    try:
        with _url_logging_suppressed():
            card.send()
    except pymsteams.TeamsWebhookException:
        response = card.last_http_response
        return f"HTTP {response.status_code}" if response is not None else "refused"
    except requests.exceptions.Timeout:
        return "timed out"
    except requests.exceptions.RequestException as exc:
        return f"cannot connect: {type(exc).__name__}"
    return "ok"


@contextmanager
def _url_logging_suppressed() -> Iterator[None]:
    _SENDING.active = True
    try:
        yield
    finally:
        _SENDING.active = False


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
    stage: str, title: str, facts: dict[str, Any], settings: NotificationSettings, log: Any, link: Link | None
) -> ChannelStatus:
    cfg = settings.email
    message = email_message(stage, title, facts, cfg.sender, cfg.recipients, link)
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
