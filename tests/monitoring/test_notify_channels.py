"""Notifications against local receivers: a Teams-like HTTP server and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import logging
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from support.network import http_receiver

from modelops.config import EmailSettings, NotificationSettings, SecretRef, TeamsSettings
from modelops.integrations.notify import notify, teams_kind

SECRET_MARK = "sig-SECRET-0123456789"
FACTS = {"model": "hmeq-risk", "version": "7", "KS": 0.41237, "reviewer": "alice"}


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, json.loads(body)))  # type: ignore[attr-defined]
        status = 500 if "/fail/" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"1")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def teams_receiver():
    with http_receiver(_Receiver) as server:
        yield server


def _teams(monkeypatch, url: str, kind: str = "auto") -> NotificationSettings:
    monkeypatch.setenv("TEST_TEAMS_WEBHOOK", url)
    return NotificationSettings(
        teams=TeamsSettings(enabled=True, webhook=SecretRef(env="TEST_TEAMS_WEBHOOK"), kind=kind)
    )


def test_url_decides_the_card_kind():
    assert (
        teams_kind(
            "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
        )
        == "workflow"
    )
    assert (
        teams_kind("https://default1234.environment.api.powerplatform.com/powerautomate/automations/x")
        == "workflow"
    )
    assert teams_kind("https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d") == "connector"
    assert teams_kind("http://127.0.0.1:9/webhookb2/x") == "connector"
    assert teams_kind("http://127.0.0.1:9/anything", "connector") == "connector"


def test_workflow_url_gets_an_adaptive_card(teams_receiver, monkeypatch, caplog):
    url = f"http://127.0.0.1:{teams_receiver.server_port}/workflows/abc/triggers/manual/paths/invoke?{SECRET_MARK}"
    caplog.set_level(logging.DEBUG)
    result = notify("deployed", "hmeq-risk v7 deployed", FACTS, _teams(monkeypatch, url), email=False)
    assert result == {"teams": "sent", "email": "off"}
    path, body = teams_receiver.received[0]
    assert path.startswith("/workflows/abc/")
    assert body["type"] == "message"
    attachment = body["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["body"][0] == {
        "type": "TextBlock",
        "text": "hmeq-risk v7 deployed",
        "weight": "Bolder",
        "size": "Medium",
        "color": "Good",
        "wrap": True,
    }
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts == {"model": "hmeq-risk", "version": "7", "KS": "0.4124", "reviewer": "alice"}
    assert "teams: sent" in caplog.text and SECRET_MARK not in caplog.text


def test_connector_url_gets_a_message_card(teams_receiver, monkeypatch, caplog):
    url = f"http://127.0.0.1:{teams_receiver.server_port}/webhookb2/{SECRET_MARK}/IncomingWebhook/x/y"
    caplog.set_level(logging.DEBUG)
    result = notify(
        "deploy_failed", "hmeq-risk v7: deploy failed", FACTS, _teams(monkeypatch, url), email=False
    )
    assert result["teams"] == "sent"
    _, body = teams_receiver.received[0]
    assert body["@type"] == "MessageCard" and body["@context"] == "https://schema.org/extensions"
    assert body["title"] == "hmeq-risk v7: deploy failed" and body["themeColor"] == "D40E0D"
    assert {"name": "KS", "value": "0.4124"} in body["sections"][0]["facts"]
    assert SECRET_MARK not in caplog.text


def test_failing_channel_warns_without_the_url_and_falls_back_to_the_log(
    teams_receiver, monkeypatch, caplog, capsys
):
    caplog.set_level(logging.DEBUG)
    failing = f"http://127.0.0.1:{teams_receiver.server_port}/fail/{SECRET_MARK}"
    assert (
        notify("rejected", "rejected", FACTS, _teams(monkeypatch, failing, "workflow"))["teams"] == "failed"
    )
    assert "teams: failed (HTTP 500)" in caplog.text
    refused = f"http://127.0.0.1:1/webhookb2/{SECRET_MARK}"
    assert notify("rejected", "rejected", FACTS, _teams(monkeypatch, refused))["teams"] == "failed"
    assert "teams: failed (cannot connect" in caplog.text
    assert "notification [rejected] rejected: model=hmeq-risk" in caplog.text  # nothing sent: the log has it
    everything = caplog.text + "".join(capsys.readouterr())
    assert SECRET_MARK not in everything


def test_missing_secret_names_the_variable(monkeypatch, caplog):
    monkeypatch.delenv("NO_SUCH_WEBHOOK_VAR", raising=False)
    settings = NotificationSettings(
        teams=TeamsSettings(enabled=True, webhook=SecretRef(env="NO_SUCH_WEBHOOK_VAR"))
    )
    caplog.set_level(logging.INFO)
    assert notify("approved", "approved", FACTS, settings)["teams"] == "failed"
    assert "NO_SUCH_WEBHOOK_VAR" in caplog.text


def test_switch_off_or_unconfigured_goes_to_the_log(teams_receiver, monkeypatch, caplog):
    url = f"http://127.0.0.1:{teams_receiver.server_port}/workflows/x"
    caplog.set_level(logging.INFO)
    assert notify("retrained", "retrained v8", FACTS, _teams(monkeypatch, url), teams=False) == {
        "teams": "off",
        "email": "off",
    }
    assert notify("retrained", "retrained v8", FACTS, NotificationSettings()) == {
        "teams": "off",
        "email": "off",
    }
    assert teams_receiver.received == []
    assert caplog.text.count("notification [retrained] retrained v8") == 2
    with pytest.raises(ValueError, match="stage 'nonsense' is unknown"):
        notify("nonsense", "x", {}, NotificationSettings())


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server(port):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            logins.append((auth_data.login.decode(), auth_data.password.decode()))
            return AuthResult(success=auth_data.password == b"s3cret-pass")
        return AuthResult(success=False)

    inbox = _Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_require_tls=False
    )
    controller.start()
    inbox.logins = logins  # type: ignore[attr-defined]
    inbox.port = port  # type: ignore[attr-defined]
    yield inbox
    controller.stop()


def _email(port: int, **extra: Any) -> NotificationSettings:
    return NotificationSettings(
        email=EmailSettings(
            enabled=True,
            smtp_host="127.0.0.1",
            smtp_port=port,
            sender="modelops@test",
            recipients=("ops@test", "ds@test"),
            **extra,
        )
    )


def test_email_over_real_smtp(smtp_server):
    result = notify(
        "retraining_needed", "hmeq-risk v7: KS 0.21 below 0.3", FACTS, _email(smtp_server.port), teams=False
    )
    assert result == {"teams": "off", "email": "sent"}
    sender, recipients, raw = smtp_server.messages[0]
    assert sender == "modelops@test" and recipients == ["ops@test", "ds@test"]
    message = message_from_bytes(raw)
    assert message["Subject"] == "[modelops] hmeq-risk v7: KS 0.21 below 0.3"
    assert message["X-ModelOps-Stage"] == "retraining_needed"
    body = message.get_payload(decode=True).decode()
    assert "stage: retraining_needed" in body and "KS        0.4124" in body


def test_email_login_uses_the_secret_and_never_logs_it(smtp_server, monkeypatch, caplog):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pass")
    caplog.set_level(logging.DEBUG)
    settings = _email(smtp_server.port, username="bot", password=SecretRef(env="TEST_SMTP_PASSWORD"))
    assert notify("approved", "approved", FACTS, settings)["email"] == "sent"
    assert smtp_server.logins == [("bot", "s3cret-pass")]
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-pass")
    assert notify("approved", "approved", FACTS, settings)["email"] == "failed"
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("modelops"))
    assert "email: failed (SMTP" in ours
    assert "s3cret-pass" not in ours and "wrong-pass" not in ours


def test_email_server_down_does_not_raise(port, caplog):
    caplog.set_level(logging.INFO)
    assert notify("deployed", "deployed", FACTS, _email(port))["email"] == "failed"
    assert "email: failed (ConnectionRefusedError" in caplog.text


@pytest.mark.slow
def test_inside_a_flow_the_message_reaches_the_flow_log(prefect_harness, teams_receiver, monkeypatch):
    """The flow log as the UI shows it (read back from the server), and no webhook URL in it."""
    import time

    from prefect import flow, runtime
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from modelops.integrations.prefect_client import prefect_client

    url = f"http://127.0.0.1:{teams_receiver.server_port}/webhookb2/{SECRET_MARK}"
    settings = _teams(monkeypatch, url)

    @flow
    def stage() -> tuple[str, dict]:
        notify("performance_ok", "all good", FACTS, settings, teams=False)
        return str(runtime.flow_run.id), notify("performance_ok", "all good", FACTS, settings)

    run_id, result = stage()
    assert result == {"teams": "sent", "email": "off"}
    with prefect_client(sync_client=True) as client:
        deadline = time.monotonic() + 60  # logs are shipped in batches
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            messages = [entry.message for entry in logs]
            if "teams: sent (message card)" in messages or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert any(m.startswith("notification [performance_ok] all good: model=hmeq-risk") for m in messages)
    assert "teams: sent (message card)" in messages
    assert not any(SECRET_MARK in m for m in messages)


# ------------------------------------------------------------------ "approval requested" + reminder
def _wait_for(condition, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_approval_request_and_reminder_reach_teams_and_email_with_the_form_link(
    prefect_harness, teams_receiver, smtp_server
):
    """Both Teams kinds (URLs kept in Prefect blocks) and SMTP get the request, then the reminder.

    The Workflow URL sits in a Microsoft Teams Webhook block, the connector URL in a Secret block
    (Prefect's Teams block refuses it); the connector card goes out through ``pymsteams``' send().
    """
    import threading
    import uuid

    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_UI_URL
    from support.approval import evidence, finish, in_background, paused_run

    from flows.approval import request_champion_approval
    from modelops.integrations.notify import save_teams_block

    tag = uuid.uuid4().hex[:8]
    base = f"http://127.0.0.1:{teams_receiver.server_port}"
    workflow_url = f"{base}/workflows/{tag}/triggers/manual/paths/invoke?sig={SECRET_MARK}"
    connector_url = f"{base}/webhookb2/{SECRET_MARK}/IncomingWebhook/{tag}/y"
    assert save_teams_block(f"teams-workflow-{tag}", workflow_url) == "ms-teams-webhook"
    assert save_teams_block(f"teams-connector-{tag}", connector_url) == "secret"
    email = _email(smtp_server.port).email
    by_workflow = NotificationSettings(
        teams=TeamsSettings(enabled=True, block=f"teams-workflow-{tag}"), email=email
    )
    by_connector = NotificationSettings(teams=TeamsSettings(enabled=True, block=f"teams-connector-{tag}"))
    models = {"workflow": f"nw-{tag}", "connector": f"nc-{tag}"}

    def ask(model: str, settings: NotificationSettings):
        return request_champion_approval(
            model, "3", evidence(), approvers=["alice"], timeout_s=40, notifications=settings,
            switches={"teams": True, "email": True}, reminder_share=0.25,
        )  # fmt: skip

    jobs = {
        "workflow": in_background(ask, models["workflow"], by_workflow),
        "connector": in_background(ask, models["connector"], by_connector),
    }
    runs = {kind: paused_run(models[kind], job=jobs[kind]) for kind in jobs}
    forms = {kind: f"{PREFECT_UI_URL.value()}/runs/flow-run/{run.id}" for kind, run in runs.items()}

    def posts(kind: str) -> list[dict]:
        marker = "/workflows/" if kind == "workflow" else "/IncomingWebhook/"
        return [body for path, body in teams_receiver.received if marker in path and tag in path]

    # request, then the reminder at 25 % of the 40 s timeout: nobody has answered yet
    _wait_for(lambda: len(posts("workflow")) >= 2 and len(posts("connector")) >= 2, 60, "request + reminder")
    _wait_for(lambda: len(smtp_server.messages) >= 2, 30, "two e-mails")

    request, reminder = (p["attachments"][0]["content"] for p in posts("workflow"))
    assert request["body"][0]["text"] == f"{models['workflow']} v3 waits for your approval"
    assert request["body"][1]["text"] == "stage: approval_requested"
    assert request["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the approval form", "url": forms["workflow"]}
    ]
    facts = {f["title"]: f["value"] for f in request["body"][2]["facts"]}
    assert facts["approval form"] == forms["workflow"]
    assert facts["window KS"] == "0.470 (champion 0.310)" and facts["approvers"] == "alice"
    assert reminder["body"][0]["text"].startswith(f"Reminder: {models['workflow']} v3 still waits")
    assert reminder["actions"][0]["url"] == forms["workflow"]

    card, second = posts("connector")
    assert (
        card["@type"] == "MessageCard"
        and card["title"] == f"{models['connector']} v3 waits for your approval"
    )
    assert card["potentialAction"] == [
        {
            "@context": "http://schema.org",
            "@type": "ViewAction",
            "name": "Open the approval form",
            "target": [forms["connector"]],
        }
    ]
    assert second["title"].startswith("Reminder:") and second["text"] == "stage: approval_reminder"

    # a long subject is folded onto a continuation line; unfolding leaves the leading space
    subjects = [str(message_from_bytes(raw)["Subject"]).strip() for _, _, raw in smtp_server.messages]
    assert subjects[0] == f"[modelops] {models['workflow']} v3 waits for your approval"
    assert subjects[1].startswith(f"[modelops] Reminder: {models['workflow']} v3 still waits")
    body = message_from_bytes(smtp_server.messages[0][2]).get_payload(decode=True).decode()
    assert f"Open the approval form: {forms['workflow']}" in body

    for kind, run in runs.items():
        resume_flow_run(run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "alice"})
        assert finish(jobs[kind]).approved
    # the answer cancels the reminder: no timer thread is left, and nothing more was sent
    assert not [t for t in threading.enumerate() if t.name.startswith("modelops-notify-")]
    assert len(posts("workflow")) == len(posts("connector")) == 2 and len(smtp_server.messages) == 2


@pytest.mark.slow
def test_an_answer_before_the_reminder_cancels_it(prefect_harness, teams_receiver, monkeypatch):
    import threading
    import uuid

    from prefect.flow_runs import resume_flow_run
    from support.approval import evidence, finish, in_background, paused_run

    from flows.approval import request_champion_approval

    model = f"nr-{uuid.uuid4().hex[:8]}"
    settings = _teams(monkeypatch, f"http://127.0.0.1:{teams_receiver.server_port}/workflows/{model}")
    job = in_background(
        lambda: request_champion_approval(
            model, "3", evidence(), timeout_s=600, notifications=settings, reminder_share=0.9
        )
    )
    run = paused_run(model, job=job)
    assert [t for t in threading.enumerate() if t.name == "modelops-notify-approval_reminder"]
    resume_flow_run(run.id, run_input={"approved": False, "reviewer": "bob", "comment": "no"})
    assert not finish(job).approved
    _wait_for(
        lambda: not [t for t in threading.enumerate() if t.name == "modelops-notify-approval_reminder"],
        10,
        "the reminder timer to stop",
    )
    stages = [body["attachments"][0]["content"]["body"][1]["text"] for _, body in teams_receiver.received]
    assert stages == ["stage: approval_requested"]


def test_teams_block_that_does_not_exist_names_the_command(monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    settings = NotificationSettings(teams=TeamsSettings(enabled=True, block="no-such-teams-block"))
    from modelops.integrations import notify as channels

    def missing(name: str):
        raise ValueError(f"Unable to find block document named {name}")

    monkeypatch.setattr(channels.MicrosoftTeamsWebhook, "load", missing)
    monkeypatch.setattr(channels.Secret, "load", missing)
    assert notify("approval_requested", "x", FACTS, settings)["teams"] == "failed"
    assert "modelops notify-setup --block no-such-teams-block" in caplog.text


@pytest.mark.slow
def test_notify_setup_keeps_each_kind_of_url_in_a_prefect_block_and_never_prints_it(
    prefect_harness, monkeypatch, capsys
):
    import uuid

    from prefect.blocks.notifications import MicrosoftTeamsWebhook
    from prefect.blocks.system import Secret

    from modelops.cli import main

    tag = uuid.uuid4().hex[:8]
    workflow = f"https://prod-1.westeurope.logic.azure.com/workflows/{tag}/triggers/manual/paths/invoke?sig={SECRET_MARK}"
    connector = f"https://contoso.webhook.office.com/webhookb2/{SECRET_MARK}/IncomingWebhook/{tag}/y"
    monkeypatch.setenv("MODELOPS_TEAMS_WEBHOOK_URL", workflow)
    assert main(["notify-setup", "--block", f"wf-{tag}"]) == 0
    monkeypatch.setenv("MODELOPS_TEAMS_WEBHOOK_URL", connector)
    assert main(["notify-setup", "--block", f"conn-{tag}"]) == 0
    assert main(["notify-setup", "--block", f"conn-{tag}"]) == 2  # exists: refused without --overwrite
    assert main(["notify-setup", "--block", f"conn-{tag}", "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert f"saved in the Prefect block ms-teams-webhook/wf-{tag}" in out
    assert f"saved in the Prefect block secret/conn-{tag}" in out
    assert f"teams: {{enabled: true, block: wf-{tag}}}" in out and "--overwrite" in err
    assert SECRET_MARK not in out + err
    assert MicrosoftTeamsWebhook.load(f"wf-{tag}").url.get_secret_value() == workflow
    assert Secret.load(f"conn-{tag}").get() == connector
    settings = NotificationSettings(teams=TeamsSettings(enabled=True, block=f"conn-{tag}"))
    from modelops.integrations.notify import teams_url

    assert teams_url(settings) == connector
