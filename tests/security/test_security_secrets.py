"""No secret ends up anywhere: logs, Prefect logs/artifacts/events/runs, MLflow, files, the scoring log, git.

Three recognisable fake secrets are put where the project reads secrets (environment variables named
by SecretRefs in the environment config): a Teams Workflow webhook URL (its signature is the
secret; the URL points at a local receiver), a registry token and a database password. Then real
flows run against a real Prefect server, a real MLflow (sqlite in a temp dir) and the real
PostgreSQL: ``train`` (tiny), ``notify`` (sent, refused, unreachable), ``ks-check`` (degraded and
failing, each notifying Teams) and the registry push/pull path. Afterwards every output is read
back (every log record of this process at DEBUG, the Prefect server's logs, artifacts, events, flow
and task runs through its API *and* its raw SQLite file, MLflow through its API and its raw
files, every file under the temp dir, the scoring-log tables) and searched for the secrets. The
receiver must have seen the webhook secret: it proves the secret was used, not just absent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import http_client
from support.network import free_port, http_receiver
from support.scoring_log import insert_scores, labelled_sample

from modelops.config import PROJECT_ROOT, ConfigError, ModelOpsConfig, load_config

MARK = uuid.uuid4().hex[:12]
TEAMS_SECRET = f"teamsSig{MARK}"
REGISTRY_TOKEN = f"regTok{MARK}"
DB_PASSWORD = f"dbPw{MARK}"
SECRETS = {"teams webhook": TEAMS_SECRET, "registry token": REGISTRY_TOKEN, "db password": DB_PASSWORD}
ENV = {"teams": "SECTEST_TEAMS_WEBHOOK", "token": "SECTEST_REGISTRY_TOKEN", "db": "SECTEST_DB_PASSWORD"}


class _Receiver(BaseHTTPRequestHandler):
    """A Teams Workflow stand-in: 202 for /workflows/..., 500 for /broken/...; records what it got."""

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((self.path, json.loads(body)))  # type: ignore[attr-defined]
        self.send_response(500 if self.path.startswith("/broken/") else 202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # the default writes the path (the secret) to stderr
        pass


@pytest.fixture
def receiver():
    with http_receiver(_Receiver) as server:
        yield server


def webhook(receiver: ThreadingHTTPServer, prefix: str = "workflows", port: int | None = None) -> str:
    """A Power Automate-shaped URL whose path and signature carry the secret."""
    port = port or receiver.server_port
    return (
        f"http://127.0.0.1:{port}/{prefix}/{TEAMS_SECRET}/triggers/manual/paths/invoke"
        f"?api-version=1&sp=%2Ftriggers&sv=1.0&sig={TEAMS_SECRET}"
    )


def environment_config(tmp_path: Path, database_url: str, name: str = "security-test.yaml") -> Path:
    """A full environment config that holds only references to the secrets, never values."""
    config = {
        "environment": "security-test",
        "model": {"name": f"sec-{MARK}", "experiment": f"sec-{MARK}"},
        "training": {"epochs": 2, "batch_size": 64, "hidden_units": [8], "train_rows": 600},
        "stack": {"home": str(tmp_path / "home")},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow/mlflow.db"},
        "database": {"url": database_url, "password": {"env": ENV["db"]}},
        "serving": {
            "registry": "127.0.0.1:5055",
            "registry_username": "robot",
            "registry_token": {"env": ENV["token"]},
        },
        "monitoring": {"ks_threshold": 0.3, "min_sample": 100, "window": {"kind": "count", "size": 1000}},
        "notifications": {"teams": {"enabled": True, "webhook": {"env": ENV["teams"]}, "kind": "workflow"}},
    }
    (tmp_path / "mlflow").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def found_secrets(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        return [name for name, value in SECRETS.items() if value.encode() in text]
    return [name for name, value in SECRETS.items() if value in text]


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def process_logs():
    """Every log record this process emits at DEBUG (prefect's run loggers do not reach the root)."""
    records = RecordingHandler()
    names = (
        "",
        "prefect",
        "prefect.flow_runs",
        "prefect.task_runs",
        "modelops",
        "mlflow",
        "httpx",
        "urllib3",
    )
    watched = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.addHandler(records)
        logger.setLevel(logging.DEBUG)  # what a user debugging a run would see, too
    yield records
    for logger, level in zip(watched, levels, strict=True):
        logger.removeHandler(records)
        logger.setLevel(level)


class Leaks:
    """Collects every surface searched and what was found there, for one readable failure."""

    def __init__(self) -> None:
        self.searched: dict[str, int] = {}
        self.found: dict[str, list[str]] = {}

    def check(self, surface: str, content: str | bytes) -> None:
        self.searched[surface] = self.searched.get(surface, 0) + len(content)
        hits = found_secrets(content)
        if hits:
            self.found.setdefault(surface, []).extend(hits)

    def assert_clean(self, minimum_surfaces: list[str]) -> None:
        missing = [s for s in minimum_surfaces if not self.searched.get(s)]
        assert not missing, f"surfaces with nothing to search (the check would be empty): {missing}"
        assert not self.found, f"secrets found: {self.found}"


# ---------------------------------------------------------------- flows


def run_train(config_path: Path) -> dict:
    from flows.train import train

    return train(config=str(config_path), rows=600)


def run_notifications(receiver: ThreadingHTTPServer, monkeypatch) -> dict:
    """One flow, three Teams outcomes: sent, HTTP 500 from the receiver, nobody listening."""
    from prefect import flow

    from modelops.config import NotificationSettings, SecretRef, TeamsSettings
    from modelops.messages import Message
    from tasks.notify import notify

    monkeypatch.setenv("SECTEST_TEAMS_BROKEN", webhook(receiver, "broken"))
    monkeypatch.setenv("SECTEST_TEAMS_GONE", webhook(receiver, port=free_port()))

    def settings(variable: str) -> NotificationSettings:
        return NotificationSettings(
            teams=TeamsSettings(enabled=True, webhook=SecretRef(env=variable), kind="workflow")
        )

    @flow(name="security-notify")
    def notify_three_ways() -> dict:
        facts = {"model": f"sec-{MARK}", "version": "1"}
        return {
            "sent": notify(Message("approved", "approved", facts), settings(ENV["teams"]), email=False),
            "refused": notify(Message("deployed", "deployed", facts), settings("SECTEST_TEAMS_BROKEN")),
            "unreachable": notify(Message("deployed", "deployed", facts), settings("SECTEST_TEAMS_GONE")),
            "unset": notify(Message("deployed", "deployed", facts), settings("SECTEST_TEAMS_NEVER_SET")),
        }

    return notify_three_ways()


def run_ks_checks(config_path: Path, down_config_path: Path, model: str) -> tuple[dict, dict]:
    """A degraded check (notifies Teams, writes the trend artifact) and one whose database is down."""
    from flows.ks_check import ks_check

    degraded = ks_check(model_name=model, version="1", config=str(config_path), review_timeout_s=0)
    failed = ks_check(model_name=model, version="1", config=str(down_config_path), review_timeout_s=0)
    return degraded, failed


def run_registry_paths(config_path: Path) -> list[str]:
    """Push and pull with the token (the engine refuses: no such image); then without the token set."""
    from prefect import flow

    from modelops.integrations import image

    config = load_config(config_path, environ={})
    reference = image.image_reference(config, f"sec-{MARK}")

    @flow(name="security-registry")
    def registry_attempts() -> list[str]:
        outcomes = []
        for action in (image.push_image, image.pull_image):
            try:
                action(config, reference)
                outcomes.append(f"{action.__name__}: ok")
            except (image.ImageError, ConfigError) as exc:
                outcomes.append(f"{action.__name__}: {exc}")
        return outcomes

    return registry_attempts()


# ---------------------------------------------------------------- reading back


def pushes_reach_the_engine(config_path: Path) -> bool:
    """Whether the registry attempts get as far as the Docker engine (``make test`` starts it and the
    loopback registry). Without them the attempts fail before the push, so the authenticated push is
    not exercised: CI (MODELOPS_REQUIRE_DOCKER=1) fails then, a developer's plain pytest checks the rest."""
    from modelops.integrations import image

    config = load_config(config_path, environ={})
    try:
        image.check_registry_reachable(config.serving.registry, timeout=2)
        image.docker_client(timeout=30)
    except image.ImageError as exc:
        if os.environ.get("MODELOPS_REQUIRE_DOCKER") == "1":
            pytest.fail(f"no Docker engine or registry for the authenticated push: {exc}")
        return False
    return True


# Lines each flow writes last: reading stops once all are in (the API receives logs in batches).
LOG_MARKERS = (
    "teams: sent (adaptive card)",
    "teams: failed (HTTP 500)",
    f"KS check of sec-{MARK} failed",
)
PUSH_MARKER = "pushing "  # only when the push reaches the engine


def prefect_surfaces(leaks: Leaks, since: datetime, markers: tuple[str, ...] = LOG_MARKERS) -> dict[str, Any]:
    from prefect.client.schemas.filters import ArtifactFilter, LogFilter, LogFilterTimestamp
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL

    from modelops.integrations.prefect_client import prefect_client

    seen: dict[str, Any] = {}
    with prefect_client(sync_client=True) as client:
        logs = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # logs arrive in batches: wait until the flows' last lines are in
            logs = []
            offset = 0
            while True:
                page = client.read_logs(
                    log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=since)), offset=offset, limit=200
                )
                logs += page
                offset += len(page)
                if len(page) < 200:
                    break
            text = "\n".join(entry.message for entry in logs)
            if all(marker in text for marker in markers):
                break
            time.sleep(0.25)
        seen["logs"] = [entry.message for entry in logs]
        leaks.check("prefect logs (API)", "\n".join(seen["logs"]))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter())
        text = "\n".join(
            json.dumps({"key": a.key, "data": a.data, "description": a.description}, default=str)
            for a in artifacts
        )
        seen["artifacts"] = text
        leaks.check("prefect artifacts (API)", text)
        runs = client.read_flow_runs()
        leaks.check(
            "prefect flow runs (API)",
            "\n".join(r.model_dump_json() for r in runs),
        )
        tasks = client.read_task_runs()
        leaks.check("prefect task runs (API)", "\n".join(t.model_dump_json() for t in tasks))
    seen["events"] = read_events(PREFECT_API_URL.value(), since)
    leaks.check("prefect events (API)", json.dumps(seen["events"]))
    database = PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[-1]
    for path in Path(database).parent.glob(Path(database).name + "*"):  # the db and its -wal
        leaks.check("prefect server database file", path.read_bytes())
    return seen


def read_events(api: str, since: datetime) -> list[dict[str, Any]]:
    """Every event since ``since`` (pages of 50), once the flows' last modelops event is stored."""
    body = {"filter": {"occurred": {"since": since.isoformat()}}, "limit": 50}
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = http_client.post(f"{api}/events/filter", json=body, timeout=30).json()
        events = list(answer["events"])
        while answer.get("next_page"):
            answer = http_client.get(answer["next_page"], timeout=30).json()
            events += answer["events"]
        if any(e["event"] == "modelops.monitoring.failed" for e in events):
            break
        time.sleep(0.25)
    return events


def mlflow_surfaces(leaks: Leaks, config_path: Path, trained: dict) -> None:
    from mlflow.tracking import MlflowClient

    config = load_config(config_path, environ={})
    client = MlflowClient(tracking_uri=config.mlflow_uri)
    run = client.get_run(trained["run_id"])
    leaks.check(
        "mlflow run params/tags/metrics", json.dumps([run.data.params, run.data.tags, run.data.metrics])
    )
    version = client.get_model_version(trained["model_name"], trained["version"])
    leaks.check("mlflow model version", json.dumps([version.tags, version.description, version.source]))
    registered = client.get_registered_model(trained["model_name"])
    leaks.check("mlflow registered model", json.dumps([registered.tags, registered.description]))


def files_under(leaks: Leaks, root: Path, surface: str) -> int:
    count = 0
    for path in root.rglob("*"):
        if path.is_file():
            leaks.check(surface, path.read_bytes())
            count += 1
    return count


def scoring_log_surfaces(leaks: Leaks, dsn: str) -> None:
    import psycopg2

    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", ("modelops",)
        )
        tables = [row[0] for row in cursor.fetchall()]
        for table in tables:
            cursor.execute(
                f"SELECT coalesce(json_agg(t)::text, '') FROM modelops.{table} t"
            )  # names from the catalogue
            leaks.check("scoring-log database", cursor.fetchone()[0])
    connection.close()


# ---------------------------------------------------------------- the test


@pytest.mark.slow
def test_flows_leave_no_secret_in_any_output(
    prefect_harness, postgres_url, receiver, process_logs, tmp_path, monkeypatch
):
    from modelops.integrations.database import apply_migrations

    monkeypatch.setenv(ENV["teams"], webhook(receiver))
    monkeypatch.setenv(ENV["token"], REGISTRY_TOKEN)
    monkeypatch.setenv(ENV["db"], DB_PASSWORD)
    since = datetime.now(UTC) - timedelta(seconds=5)
    config_path = environment_config(tmp_path, postgres_url)
    config = load_config(config_path, environ={})
    model = config.model.name

    trained = run_train(config_path)
    assert trained["version"] == "1"
    notified = run_notifications(receiver, monkeypatch)
    assert notified == {
        "sent": {"teams": "sent", "email": "off"},
        "refused": {"teams": "failed", "email": "off"},
        "unreachable": {"teams": "failed", "email": "off"},
        "unset": {"teams": "failed", "email": "off"},
    }
    apply_migrations(postgres_url)
    scores, labels = labelled_sample(600, 0.2, seed=5)  # weak separation: KS below 0.3
    insert_scores(postgres_url, model, "1", scores, labels)
    down_url = f"postgresql://modelops@127.0.0.1:{free_port()}/gone"  # the password comes from the SecretRef
    degraded, failed = run_ks_checks(config_path, environment_config(tmp_path, down_url, "down.yaml"), model)
    assert degraded["status"] == "degraded", degraded
    assert failed["status"] == "error", failed
    pushes = pushes_reach_the_engine(config_path)
    registry = run_registry_paths(config_path)
    assert len(registry) == 2 and all(": ok" not in line for line in registry), registry

    # The secrets were really used: the receiver got the cards at the secret URL.
    paths = [path for path, _ in receiver.received]
    assert sum(TEAMS_SECRET in p and p.startswith("/workflows/") for p in paths) >= 3, paths
    assert any(p.startswith("/broken/") for p in paths)
    cards = json.dumps([card for _, card in receiver.received])
    assert "KS check of" in cards and "below 0.3" in cards
    assert not found_secrets(cards), "a card carries a secret"

    leaks = Leaks()
    leaks.check("log records of this process", "\n".join(process_logs.lines))
    leaks.check(
        "flow return values", json.dumps([trained, notified, degraded, failed, registry], default=str)
    )
    seen = prefect_surfaces(leaks, since, LOG_MARKERS + (PUSH_MARKER,) if pushes else LOG_MARKERS)
    mlflow_surfaces(leaks, config_path, trained)
    assert files_under(leaks, tmp_path, "files under the temp dir") > 10
    scoring_log_surfaces(leaks, postgres_url)

    # What each surface must show, so that "no secret" is not "nothing logged".
    logs = "\n".join(seen["logs"])
    assert "teams: sent (adaptive card)" in logs and "teams: failed (HTTP 500)" in logs
    assert "teams: failed (cannot connect" in logs
    assert "secret missing: set the environment variable SECTEST_TEAMS_NEVER_SET" in logs
    if pushes:  # the push ran with the token as its credentials
        assert "pushing 127.0.0.1:5055/" in logs and " as robot" in logs
    else:
        assert all("unreachable" in line for line in registry), registry
    assert any(e["event"] == "modelops.monitoring.failed" for e in seen["events"])
    assert f"KS check of {model}" in seen["artifacts"] or model in seen["artifacts"]
    leaks.assert_clean(
        [
            "log records of this process",
            "prefect logs (API)",
            "prefect artifacts (API)",
            "prefect flow runs (API)",
            "prefect task runs (API)",
            "prefect events (API)",
            "prefect server database file",
            "mlflow run params/tags/metrics",
            "mlflow model version",
            "files under the temp dir",
            "scoring-log database",
        ]
    )
    print(f"\nsearched {len(leaks.searched)} surfaces, {sum(leaks.searched.values()):,} characters/bytes")


# ---------------------------------------------------------------- registry token, without flows


def test_registry_token_is_resolved_before_the_network_and_never_echoed(tmp_path, monkeypatch, caplog):
    from modelops.integrations import image

    caplog.set_level(logging.DEBUG)
    config = ModelOpsConfig(
        serving={
            "registry": f"127.0.0.1:{free_port()}",
            "registry_username": "robot",
            "registry_token": {"env": ENV["token"]},
        }
    )
    reference = image.image_reference(config, "v1")
    monkeypatch.delenv(ENV["token"], raising=False)
    with pytest.raises(ConfigError, match=f"set the environment variable {ENV['token']}"):
        image.push_image(config, reference)  # before any connection: the registry port is closed
    monkeypatch.setenv(ENV["token"], REGISTRY_TOKEN)
    with pytest.raises(image.ImageError, match="is unreachable") as caught:
        image.push_image(config, reference)
    assert not found_secrets(str(caught.value))
    with pytest.raises(image.ImageError):
        image.pull_image(config, reference)
    assert not found_secrets(caplog.text)


# ---------------------------------------------------------------- the repository


SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}\b"),
    "Teams webhook with signature": re.compile(
        r"https://[\w.-]+(webhook\.office\.com|logic\.azure\.com)[^\s\"']*sig=[\w%-]{20,}"
    ),
    "DSN with a password": re.compile(r"\b[a-z+]+://[^\s:/@'\"]+:([^\s@/'\"{}]+)@"),
    "password assignment": re.compile(
        r"(?i)\b(password|passwd|token|secret)\s*[:=]\s*[\"']([^\"'\s{}$]{8,})[\"']"
    ),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# Obviously fake values the tests and docs use on purpose.
PLACEHOLDERS = re.compile(
    r"(?i)secret|password|passw|wrong|s3cret|example|dummy|fake|test|\*\*\*|xxx|changeme|pass\b|\$\{|\{\{"
)


def tracked_files() -> list[Path]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    return [PROJECT_ROOT / name for name in listing.decode().split("\0") if name]


def test_no_secret_in_the_repository():
    files = tracked_files()
    assert len(files) > 50
    hits = []
    for path in files:
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        assert not found_secrets(text), path  # this test's own values are generated, never stored
        for name, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                value = match.group(match.lastindex or 0)
                if PLACEHOLDERS.search(value) or PLACEHOLDERS.search(match.group(0)):
                    continue
                line = text.count("\n", 0, match.start()) + 1
                hits.append(f"{path.relative_to(PROJECT_ROOT)}:{line}: {name}: {match.group(0)[:60]}")
    assert not hits, "possible secrets in tracked files:\n" + "\n".join(hits)


def _leaves(node: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, child in node.items() for leaf in _leaves(child, f"{key}.{k}" if key else str(k))]
    return [(key, node)]


def test_environment_configs_hold_references_not_values():
    secret_keys = {"password", "webhook", "registry_token", "token"}
    for path in sorted((PROJECT_ROOT / "infra" / "config").glob("*.yaml")):
        for key, _ in _leaves(yaml.safe_load(path.read_text()) or {}):
            leaf = key.rsplit(".", 1)[-1]
            assert leaf not in secret_keys, (
                f"{path.name}: {key} holds a value; use {{env: VAR}} or {{prefect_secret: BLOCK}}"
            )
        config = load_config(path, environ={})
        for dsn in (config.database.url, config.mlflow.tracking_uri, config.prefect.api_url):
            assert dsn is None or not re.search(r"://[^/@]+:[^/@]+@", dsn), f"{path.name}: {dsn}"
