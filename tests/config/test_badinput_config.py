"""Every invalid environment config is refused with the file, the key and what is allowed.

``load_config`` reads one YAML file, merges ``MODELOPS_<SECTION>__<KEY>`` overrides and validates
the result. Each case here writes a real file (or sets an override) and checks the one message a
person reads: it must name where the mistake is (file or variable), the dotted key, and the
allowed values, types or range, so the fix is obvious without reading the code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelops.config import CONFIG_DIR, ConfigError, ModelOpsConfig, SecretRef, load_config
from modelops.secrets import resolve_secret

FILE_CASES = [
    # (id, YAML text, dotted key, fragments that must all be in the message)
    (
        "unknown key",
        "model:\n  nam: x\n",
        "model.nam",
        ["unknown key", "name, experiment, decision_threshold"],
    ),
    ("unknown section", "modle:\n  name: x\n", "modle", ["unknown key", "model", "serving", "monitoring"]),
    (
        "unknown nested key",
        "monitoring:\n  window:\n    length: 5\n",
        "monitoring.window.length",
        ["unknown key", "kind, size"],
    ),
    (
        "wrong enum",
        "serving:\n  target: heroku\n",
        "serving.target",
        ["'local', 'docker', 'kubernetes' or 'openshift'", "'heroku'"],
    ),
    (
        "wrong enum nested",
        "monitoring:\n  window:\n    kind: rows\n",
        "monitoring.window.kind",
        ["'count' or 'time'", "'rows'"],
    ),
    ("teams kind", "notifications:\n  teams:\n    kind: slack\n", "notifications.teams.kind", ["'workflow'"]),
    ("wrong type int", "training:\n  epochs: many\n", "training.epochs", ["valid integer", "'many'"]),
    (
        "wrong type bool",
        "serving:\n  batching: sometimes\n",
        "serving.batching",
        ["valid boolean", "'sometimes'"],
    ),
    (
        "wrong type list",
        "training:\n  hidden_units: wide\n",
        "training.hidden_units",
        ["valid tuple", "'wide'"],
    ),
    ("section not a mapping", "serving: 5\n", "serving", ["ServingSettings", "got 5"]),
    ("above range", "monitoring:\n  ks_threshold: 1.5\n", "monitoring.ks_threshold", ["less than 1", "1.5"]),
    (
        "below range",
        "monitoring:\n  min_sample: 1\n",
        "monitoring.min_sample",
        ["greater than or equal to 2"],
    ),
    ("port range", "stack:\n  mlflow_port: 70000\n", "stack.mlflow_port", ["less than or equal to 65535"]),
    (
        "model name rule",
        "model:\n  name: 'my model'\n",
        "model.name",
        ["[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "'my model'"],
    ),
    ("namespace rule", "serving:\n  namespace: Prod_NS\n", "serving.namespace", ["DNS label", "'Prod_NS'"]),
    (
        "schema injection",
        'database:\n  schema: "x; DROP TABLE y"\n',
        "database.schema",
        ["[a-z_][a-z0-9_]{0,62}", "DROP TABLE"],
    ),
    (
        "secret ref both",
        "database:\n  password: {env: DB_PW, prefect_secret: db-pw}\n",
        "database.password",
        ["exactly one of 'env'", "'prefect_secret'"],
    ),
    (
        "secret ref empty",
        "notifications:\n  teams:\n    webhook: {}\n",
        "notifications.teams.webhook",
        ["exactly one of 'env'"],
    ),
    (  # the allowed keys of an optional section (SecretRef | None) are listed too
        "secret ref unknown key",
        "serving:\n  registry_token: {variable: TOKEN}\n",
        "serving.registry_token.variable",
        ["unknown key", "env, prefect_secret"],
    ),
]
FILE_CASES = [pytest.param(*case, id=case[0]) for case in FILE_CASES]


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("name", "text", "key", "fragments"), FILE_CASES)
def test_invalid_file_names_file_key_and_allowed_values(tmp_path, name, text, key, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid configuration")
    line = next((line for line in message.splitlines() if line.strip().startswith(f"{key} ")), None)
    assert line is not None, message
    assert f"(in {path})" in line
    for fragment in fragments:
        assert fragment in line, line


def test_every_mistake_in_a_file_is_listed_at_once(tmp_path):
    path = write(tmp_path, "serving:\n  target: x\n  port: -1\nmodel:\n  colour: red\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    keys = [line.split()[0] for line in str(caught.value).splitlines()[1:]]
    assert sorted(keys) == ["model.colour", "serving.port", "serving.target"]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just a sentence\n", "str"), ("42\n", "int")],
)
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(
        ConfigError, match=rf"^{path}: the top level must be a mapping of sections, got {kind}$"
    ):
        load_config(path, environ={})


def test_empty_file_is_all_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == ModelOpsConfig()


def test_unparsable_yaml_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, "model:\n  name: x\nserving: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(f"{path}: not valid YAML")
    assert "line" in str(caught.value)


def test_tabs_and_duplicate_sections(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model:\n\tname: x\n", "tabs.yaml"), environ={})
    # PyYAML keeps the last of two equal keys: the second section wins, and its mistakes are reported.
    with pytest.raises(ConfigError, match=r"serving\.port"):
        load_config(write(tmp_path, "serving:\n  port: 1\nserving:\n  port: 0\n", "dup.yaml"), environ={})


def test_missing_file_and_unknown_environment_list_the_choices(tmp_path):
    available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    with pytest.raises(ConfigError, match=rf"config file {tmp_path}/nope.yaml does not exist") as caught:
        load_config(tmp_path / "nope.yaml", environ={})
    assert available in str(caught.value)
    with pytest.raises(ConfigError, match=rf"{CONFIG_DIR}/staging.yaml does not exist.*{available}"):
        load_config("staging", environ={})


def test_unknown_environment_in_modelops_config(monkeypatch):
    monkeypatch.setenv("MODELOPS_CONFIG", "staging")  # read from the process environment, not environ=
    with pytest.raises(ConfigError, match=r"staging.yaml does not exist"):
        load_config(environ={})


OVERRIDE_CASES = [
    # (variable, value, dotted key, fragment)
    ("MODELOPS_MONITORING__KS_THRESHOLD", "high", "monitoring.ks_threshold", "valid number"),
    ("MODELOPS_MONITORING__KS_THRESHOLD", "0", "monitoring.ks_threshold", "greater than 0"),
    (
        "MODELOPS_SERVING__TARGET",
        "heroku",
        "serving.target",
        "'local', 'docker', 'kubernetes' or 'openshift'",
    ),
    ("MODELOPS_SERVING__PORT", "0", "serving.port", "greater than or equal to 1"),
    ("MODELOPS_SERVING__BATCHING", "maybe", "serving.batching", "valid boolean"),
    ("MODELOPS_MONITORING__WINDOW__KIND", "rows", "monitoring.window.kind", "'count' or 'time'"),
    ("MODELOPS_DATABASE__SCHEMA", "public; DROP SCHEMA modelops", "database.schema", "[a-z_][a-z0-9_]{0,62}"),
    ("MODELOPS_MODEL__COLOUR", "red", "model.colour", "unknown key; allowed keys here: name"),
    # an unknown section set by X__Y: the message names the variable that was set, not its prefix
    ("MODELOPS_NOPE__X", "1", "nope", "unknown key"),
    # the allowed keys of an optional section (SecretRef | None) are listed too
    ("MODELOPS_DATABASE__PASSWORD__VAR", "X", "database.password.var", "env, prefect_secret"),
]


@pytest.mark.parametrize(("variable", "value", "key", "fragment"), OVERRIDE_CASES)
def test_invalid_override_names_the_variable(variable, value, key, fragment):
    with pytest.raises(ConfigError) as caught:
        load_config("local", environ={variable: value})
    message = str(caught.value)
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{key} "))
    assert f"(in {variable})" in line, line
    assert fragment in line, line


def test_override_mistake_and_file_mistake_each_name_their_source(tmp_path):
    path = write(tmp_path, "serving:\n  target: heroku\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"MODELOPS_MONITORING__MIN_SAMPLE": "1"})
    message = str(caught.value)
    assert f"serving.target (in {path})" in message
    assert "monitoring.min_sample (in MODELOPS_MONITORING__MIN_SAMPLE)" in message


def test_valid_overrides_are_typed_and_win_over_the_file(tmp_path):
    path = write(tmp_path, "serving:\n  port: 9000\n")
    config = load_config(
        path,
        environ={
            "MODELOPS_SERVING__PORT": "9100",
            "MODELOPS_SERVING__BATCHING": "false",
            "MODELOPS_DATABASE_URL": "postgresql://u@127.0.0.1/db",
            "MODELOPS_HOME": "/elsewhere",  # no '__': another tool's variable, ignored
        },
    )
    assert config.serving.port == 9100 and config.serving.batching is False
    assert config.database.url == "postgresql://u@127.0.0.1/db"


@pytest.mark.parametrize("environment", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_shipped_configs_are_valid_and_hold_only_secret_references(environment):
    config = load_config(environment, environ={})
    refs = [
        config.database.password,
        config.serving.registry_token,
        config.notifications.teams.webhook,
        config.notifications.email.password,
    ]
    assert all(ref is None or isinstance(ref, SecretRef) for ref in refs)
    url = config.database.url
    assert url is None or urlsplit(url).password is None, f"{environment}: a DSN with a password"


SECRET_LOOKALIKE = "hunter2-Sup3rS3cret-value"


@pytest.mark.parametrize(
    "where",
    [
        ("file", "database:\n  password: " + SECRET_LOOKALIKE + "\n"),
        ("file", "notifications:\n  teams:\n    webhook: https://x.example/" + SECRET_LOOKALIKE + "\n"),
        ("env", "MODELOPS_SERVING__REGISTRY_TOKEN"),
    ],
    ids=["password in file", "webhook in file", "token in override"],
)
def test_a_secret_written_where_a_reference_belongs_is_refused_without_echoing_it(tmp_path, where):
    kind, text = where
    if kind == "file":
        call = {"environment_or_path": write(tmp_path, text), "environ": {}}
    else:
        call = {"environment_or_path": "local", "environ": {text: SECRET_LOOKALIKE}}
    with pytest.raises(ConfigError) as caught:
        load_config(**call)
    message = str(caught.value)
    assert "env" in message and "prefect_secret" in message  # says what to write instead
    assert SECRET_LOOKALIKE not in message


def test_missing_secret_names_the_variable_never_a_value(monkeypatch):
    monkeypatch.delenv("MODELOPS_TEST_ABSENT_SECRET", raising=False)
    ref = SecretRef(env="MODELOPS_TEST_ABSENT_SECRET")
    with pytest.raises(
        ConfigError, match="^secret missing: set the environment variable MODELOPS_TEST_ABSENT_SECRET$"
    ):
        resolve_secret(ref)
    assert resolve_secret(ref, required=False) is None
    with pytest.raises(ConfigError, match="no reference"):
        resolve_secret(None)
    monkeypatch.setenv("MODELOPS_TEST_ABSENT_SECRET", "")
    with pytest.raises(ConfigError, match="secret missing"):
        resolve_secret(ref)  # an empty value is as good as none


def test_cli_prints_a_config_mistake_as_one_error_and_exits_2(tmp_path):
    path = write(tmp_path, "serving:\n  target: heroku\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))",
            "status",
        ],
        env={"PATH": "/usr/bin:/bin", "MODELOPS_CONFIG": str(path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"modelops status: error: {path}: invalid configuration" in result.stderr
    assert "serving.target" in result.stderr and "'heroku'" in result.stderr
