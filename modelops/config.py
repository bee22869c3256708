"""The environment configuration (the seed's "environment configuration YAML").

One YAML file per environment under ``infra/config/`` (``local.yaml``, ``docker.yaml``,
``kubernetes.yaml``, ``openshift.yaml``), validated by pydantic. Any value can be overridden with a
``MODELOPS_<SECTION>__<KEY>`` environment variable (``MODELOPS_MONITORING__KS_THRESHOLD=0.35``);
``MODELOPS_DATABASE_URL`` and ``MODELOPS_CONFIG`` are accepted as short forms.

Secrets never appear as values: a :class:`SecretRef` names an environment variable or a Prefect
Secret block, and :func:`modelops.secrets.resolve_secret` reads it at the moment it is needed.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "infra" / "config"
DEFAULT_ENVIRONMENT = "local"
ENV_PREFIX = "MODELOPS_"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _model_name(value: str) -> str:
    if not _MODEL_NAME.match(value):
        raise ValueError("a model name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names file, key and allowed values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=_Section)


class SecretRef(_Section):
    """Where a secret lives: an environment variable or a Prefect Secret block (never the value)."""

    env: str | None = None
    prefect_secret: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if bool(self.env) == bool(self.prefect_secret):
            raise ValueError("give exactly one of 'env' (a variable name) or 'prefect_secret' (a block name)")
        return self

    def describe(self) -> str:
        return f"env var {self.env}" if self.env else f"Prefect Secret block '{self.prefect_secret}'"


class ModelSettings(_Section):
    name: str = "hmeq-risk"
    experiment: str = "hmeq-risk"
    decision_threshold: float = Field(0.5, gt=0, lt=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _MODEL_NAME.match(value):
            raise ValueError("model name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
        return value


class TrainingSettings(_Section):
    epochs: int = Field(30, ge=1, le=1000)
    batch_size: int = Field(256, ge=8, le=65536)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.1, ge=0, lt=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    seed: int = 42
    train_rows: int = Field(20000, ge=100)


class StackSettings(_Section):
    """Where the embedded stack keeps its state and which loopback ports it uses."""

    home: Path = Path(".modelops")
    host: str = "127.0.0.1"
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)
    postgres_port: int = Field(5433, ge=1, le=65535)  # the embedded PostgreSQL, when database.url is unset
    work_pool: str = "modelops-local"
    # The pool's worker type, which `up` creates the pool with and starts a worker of: "process" (flow
    # runs are processes in this checkout), "docker" (each flow run is a container of the flow image) or
    # "kubernetes" (each flow run is a Job of the flow image in serving.namespace, on the cluster of
    # $KUBECONFIG; template: infra/k8s/worker/base-job-template.json, see modelops.stack.kubernetes_pool).
    work_pool_type: Literal["process", "docker", "kubernetes"] = "process"
    # docker pool: the flow image's repository (<registry>/<path>; `up` tags it <version>-<hash of what
    # goes into it>) and the base it is built on (infra/docker/flow.Dockerfile's BASE_IMAGE).
    flow_image: str = "127.0.0.1:5055/modelops/flows"
    flow_base_image: str = "python:3.11-slim"
    # docker pool: how long the first deployment may take to build and push the flow image (a cold
    # build installs TensorFlow & co. with pip: minutes; a cached one takes seconds).
    image_build_timeout_s: float = Field(1800.0, gt=0)
    # How often the worker polls for due runs. With worker_wakeups it also polls as soon as a run of its
    # pool is scheduled (an event), so this poll is only the fallback (modelops.stack.worker_wakeup).
    worker_query_seconds: float = Field(5.0, gt=0, le=60)
    worker_wakeups: bool = True
    # process pool: each flow run goes to a process that has already imported Prefect and the flows
    # (modelops.stack.engine_standby); false: every run starts `python -m prefect.engine` cold.
    engine_standby: bool = True
    startup_timeout_s: float = Field(120.0, gt=0)
    prefect_file: Path = Path("prefect.yaml")  # applied by `modelops up`; relative to the project root
    # Where the Prefect server and MLflow keep their own state: databases on the stack's PostgreSQL
    # (the embedded server, or the server of database.url), or SQLite files under the home.
    backend: Literal["postgres", "sqlite"] = "postgres"
    # Their database names (postgres backend). None: "prefect" / "mlflow" on the embedded server,
    # "<database>_prefect" / "<database>_mlflow" next to the database of a configured database.url.
    prefect_database: str | None = None
    mlflow_database: str | None = None
    # The prefect.toml `up` writes so Python and the `prefect` CLI run from its folder use the stack.
    # None: the project root's when the home is inside the project, else <home>/prefect.toml.
    prefect_toml: Path | None = None
    # The embedded PostgreSQL's bin directory (initdb, pg_ctl). None: pgserver's, which lacks the
    # pg_trgm extension the Prefect server's schema needs (then the Prefect server stays on SQLite).
    # E.g. /usr/lib/postgresql/15/bin with postgresql-contrib. Choose it before a home's first `up`.
    postgres_bin: Path | None = None

    @field_validator("prefect_database", "mlflow_database")
    @classmethod
    def _database_name(cls, value: str | None) -> str | None:
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError("a database name must match [a-z_][a-z0-9_]{0,62}")
        return value


class MlflowSettings(_Section):
    tracking_uri: str | None = None  # None: the embedded stack's server


class PrefectSettings(_Section):
    api_url: str | None = None  # None: the embedded stack's server
    ui_url: str | None = None


class DatabaseSettings(_Section):
    url: str | None = None  # None: the embedded pgserver under stack.home
    password: SecretRef | None = None
    schema_name: str = Field("modelops", alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_name")
    @classmethod
    def _valid_schema(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("schema must be a lower-case SQL identifier matching [a-z_][a-z0-9_]{0,62}")
        return value


class ServingSettings(_Section):
    target: Literal["local", "docker", "kubernetes", "openshift"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    # TF Serving's gRPC API beside the REST port (`modelops serve`, the container targets); 0/None: off
    grpc_port: int | None = Field(8500, ge=0, le=65535)
    base_image: str = "tensorflow/serving:2.18.0"
    registry: str = "127.0.0.1:5055"
    project: str = "modelops"
    image_stream: str = "hmeq-risk"
    namespace: str = "modelops"
    registry_username: str | None = None
    registry_token: SecretRef | None = None
    replicas: int = Field(1, ge=1, le=100)
    max_batch_size: int = Field(1024, ge=1)
    batching: bool = True
    batch_timeout_ms: float = Field(1.0, ge=0, le=1000)
    rollout_timeout_s: float = Field(180.0, gt=0)

    @field_validator("namespace", "project", "image_stream")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label: lower-case letters, digits and '-', at most 63 characters")
        return value


class WindowSettings(_Section):
    kind: Literal["count", "time"] = "count"
    size: int = Field(2000, ge=1)  # records for "count", minutes for "time"


class MonitoringSettings(_Section):
    ks_threshold: float = Field(0.3, gt=0, lt=1)
    min_sample: int = Field(200, ge=2)
    window: WindowSettings = WindowSettings()
    schedule_cron: str = "*/10 * * * *"
    # `modelops demo` asks ks-check for a run after each period; > 0 also adds an interval schedule
    # of that many seconds for the demo's length (a scheduled run can then hold the deployment's one
    # slot when the demo asks, and the asked run waits for it).
    demo_interval_s: int = Field(0, ge=0)
    psi_limit: float = Field(0.25, gt=0)
    score_ks_limit: float = Field(0.2, gt=0, lt=1)
    retrain_cooldown_s: int = Field(300, ge=0)


def _overrides_of(section: type[_Section], leave_out: tuple[str, ...] = ()) -> type[_Section]:
    """``section`` with every field optional (None: inherit the top-level value), with the same checks."""
    fields: dict[str, Any] = {}
    for name, info in section.model_fields.items():
        if name in leave_out:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            annotation = _overrides_of(annotation)
        fields[name] = (typing.Optional[annotation], FieldInfo.merge_field_infos(info, default=None))  # noqa: UP045
    return create_model(f"{section.__name__.removesuffix('Settings')}Overrides", __base__=_Section, **fields)


def _apply_overrides(base: _S, overrides: _Section) -> _S:
    """``base`` with the fields ``overrides`` sets (nested sections field by field)."""
    update: dict[str, Any] = {}
    for name in overrides.model_fields_set:
        value = getattr(overrides, name)
        if isinstance(value, _Section):
            value = _apply_overrides(getattr(base, name), value)
        if value is not None:
            update[name] = value
    return base.model_copy(update=update)


# A model's own monitoring and training settings (models.<name> in the config). The schedule is the
# ks-check deployment's, one for every model, so it has no per-model value. mypy sees the full
# sections: the generated classes have the same fields, all optional.
if typing.TYPE_CHECKING:
    MonitoringOverrides = MonitoringSettings
    TrainingOverrides = TrainingSettings
else:
    MonitoringOverrides = _overrides_of(MonitoringSettings, leave_out=("schedule_cron", "demo_interval_s"))
    TrainingOverrides = _overrides_of(TrainingSettings)


class ModelOverrides(_Section):
    """``models.<name>``: what differs for this model; every key left out is the top-level value."""

    monitoring: MonitoringOverrides = MonitoringOverrides()
    training: TrainingOverrides = TrainingOverrides()
    serving_port: int | None = Field(None, ge=1, le=65535)  # the local target's port for this model


class TeamsSettings(_Section):
    enabled: bool = False
    webhook: SecretRef | None = None
    # Or the name of a Prefect block holding the URL (`modelops notify-setup`): a Microsoft Teams
    # Webhook block for a Workflow URL, a Secret block for a legacy connector URL.
    block: str | None = None
    # auto: decide by the URL (Power Automate Workflow -> Adaptive Card; legacy .../webhookb2/... ->
    # MessageCard). Set it explicitly for a receiver whose URL says neither (a proxy, a test server).
    kind: Literal["auto", "workflow", "connector"] = "auto"


class EmailSettings(_Section):
    enabled: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    sender: str = "modelops@localhost"
    recipients: tuple[str, ...] = ()
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = False


class NotificationSettings(_Section):
    teams: TeamsSettings = TeamsSettings()
    email: EmailSettings = EmailSettings()


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ApprovalSettings(_Section):
    """``timeout_s`` takes seconds (259200) or a readable duration (``3d``, ``36h``, ``90m``), at most
    366 days."""

    approvers: tuple[str, ...] = ()  # empty: anyone may approve
    timeout_s: int = Field(3600, ge=1, le=366 * 86400)
    # A reminder goes out when this share of timeout_s has passed with no answer (0: no reminder).
    reminder_share: float = Field(0.75, ge=0, lt=1)

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use seconds (259200) or 3d, 36h, 90m, 45s")
        return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


class ModelOpsConfig(_Section):
    environment: str = DEFAULT_ENVIRONMENT
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    stack: StackSettings = StackSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    database: DatabaseSettings = DatabaseSettings()
    serving: ServingSettings = ServingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    notifications: NotificationSettings = NotificationSettings()
    approval: ApprovalSettings = ApprovalSettings()
    models: dict[ModelName, ModelOverrides] = {}

    @field_validator("models", mode="before")
    @classmethod
    def _empty_entries(cls, value: Any) -> Any:
        """``models: {hmeq-real: }`` (a model listed with nothing of its own) means all defaults."""
        if isinstance(value, dict):
            return {name: {} if entry is None else entry for name, entry in value.items()}
        return {} if value is None else value

    def monitoring_for(self, model_name: str) -> MonitoringSettings:
        """The model's monitoring settings: ``models.<name>.monitoring`` over ``monitoring``."""
        overrides = self.models.get(model_name)
        return _apply_overrides(self.monitoring, overrides.monitoring) if overrides else self.monitoring

    def training_for(self, model_name: str) -> TrainingSettings:
        """The model's training settings: ``models.<name>.training`` over ``training``."""
        overrides = self.models.get(model_name)
        return _apply_overrides(self.training, overrides.training) if overrides else self.training

    def serving_port_for(self, model_name: str) -> int | None:
        """``models.<name>.serving_port``, or None when the model has none of its own."""
        overrides = self.models.get(model_name)
        return overrides.serving_port if overrides else None

    def for_model(self, model_name: str) -> ModelOpsConfig:
        """This config with the model's own monitoring and training settings as the top-level ones.

        Code that reads ``config.monitoring`` / ``config.training`` then works for any model.
        """
        return self.model_copy(
            update={"monitoring": self.monitoring_for(model_name), "training": self.training_for(model_name)}
        )

    @property
    def stack_home(self) -> Path:
        home = self.stack.home
        return home if home.is_absolute() else PROJECT_ROOT / home

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow.tracking_uri or f"http://{self.stack.host}:{self.stack.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return self.prefect.api_url or f"http://{self.stack.host}:{self.stack.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return self.prefect.ui_url or self.prefect_api_url.removesuffix("/api")

    @property
    def serving_url(self) -> str:
        return f"http://{self.serving.host}:{self.serving.port}"


def config_path(environment_or_path: str | os.PathLike[str] | None = None) -> Path:
    """``None`` → ``$MODELOPS_CONFIG`` or ``local``; a bare name → ``infra/config/<name>.yaml``."""
    choice = environment_or_path or os.environ.get(f"{ENV_PREFIX}CONFIG") or DEFAULT_ENVIRONMENT
    candidate = Path(choice)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return candidate
    return CONFIG_DIR / f"{choice}.yaml"


def load_config(
    environment_or_path: str | os.PathLike[str] | None = None,
    environ: dict[str, str] | None = None,
) -> ModelOpsConfig:
    """Read, override from the environment and validate one environment config."""
    path = config_path(environment_or_path)
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {path} does not exist (environments in {CONFIG_DIR}: {available})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    environment = os.environ if environ is None else environ
    overrides = _environment_overrides(environment)
    merged = _deep_merge(raw, overrides)
    try:
        return ModelOpsConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(path, exc, overrides, environment)) from None


def _environment_overrides(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key == "database_url":
            key = "database__url"
        if "__" not in key:
            continue  # MODELOPS_HOME and friends belong to other tools, not to this file
        parts = key.split("__")
        node = overrides
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value) if value else value
    return overrides


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _allowed_keys(location: tuple[str | int, ...]) -> list[str]:
    model: type[BaseModel] = ModelOpsConfig
    parts = list(location[:-1])
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = getattr(field, "annotation", None)
        section = _section_model(annotation)
        if section is None:
            return []
        if typing.get_origin(annotation) is dict:
            if not parts:
                return []  # the location is a key of the mapping (a model name): any name is allowed
            parts.pop(0)
        model = section
    return [f.alias or name for name, f in model.model_fields.items()]


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel behind ``Section`` or ``Section | None`` (a SecretRef field is optional)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _explain(path: Path, exc: ValidationError, overrides: dict[str, Any], environ: Any = None) -> str:
    lines = [f"{path}: invalid configuration"]
    for error in exc.errors():
        location = tuple(error["loc"])
        key = ".".join(str(p) for p in location)
        source = _override_name(location, environ or {}) if _in(overrides, location) else str(path)
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(location))
            lines.append(f"  {key} (in {source}): unknown key; allowed keys here: {allowed}")
            continue
        message = error["msg"]
        if error["type"] == "literal_error":
            message = f"must be one of {error['ctx']['expected']}"
        shown = error.get("input")
        if location and str(location[-1]) in _SECRET_FIELDS and not isinstance(shown, dict):
            # Someone wrote the secret itself where a reference belongs: never echo it.
            message = "give a reference {env: VARIABLE} or {prefect_secret: BLOCK}, not the secret itself"
            lines.append(f"  {key} (in {source}): {message}; got a {type(shown).__name__} (value hidden)")
            continue
        lines.append(f"  {key} (in {source}): {message}; got {shown!r}")
    return "\n".join(lines)


_SECRET_FIELDS = {"password", "webhook", "registry_token"}


def _in(tree: dict[str, Any], location: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in location:
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def _override_name(location: tuple[Any, ...], environ: Any) -> str:
    """The variable that set ``location``, or the ones below it (an unknown section set by X__Y)."""
    name = ENV_PREFIX + "__".join(str(p).upper() for p in location)
    short = f"{ENV_PREFIX}DATABASE_URL"
    if location == ("database", "url") and name not in environ and short in environ:
        return short
    if name in environ:
        return name
    return ", ".join(sorted(v for v in environ if v.startswith(name + "__"))) or name
