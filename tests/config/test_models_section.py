"""``models.<name>``: each model's own monitoring and training settings over the top-level ones.

A model listed under ``models`` gives only what differs; ``monitoring_for`` / ``training_for`` /
``for_model`` merge it over the top-level sections (nested ``window`` key by key). Mistakes inside
the section get the same one-line report as the rest of the file: the dotted key with the model
name, the file or variable, and what is allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelops.config import CONFIG_DIR, ConfigError, ModelOpsConfig, load_config

CONFIG = """
monitoring:
  ks_threshold: 0.3
  min_sample: 200
  window: {kind: time, size: 90}
  retrain_cooldown_s: 300
training:
  epochs: 30
  batch_size: 256
models:
  hmeq-real:
    monitoring:
      ks_threshold: 0.25
      window: {size: 500}
      retrain_cooldown_s: 0
    training: {epochs: 5}
    serving_port: 8502
  credit.risk_v2:
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_a_model_gets_its_own_values_and_the_defaults_for_the_rest(tmp_path):
    config = load_config(write(tmp_path, CONFIG), environ={})
    real = config.monitoring_for("hmeq-real")
    assert (real.ks_threshold, real.min_sample, real.retrain_cooldown_s) == (0.25, 200, 0)
    assert (real.window.kind, real.window.size) == ("time", 500), "window merged key by key"
    assert (config.training_for("hmeq-real").epochs, config.training_for("hmeq-real").batch_size) == (5, 256)
    assert config.serving_port_for("hmeq-real") == 8502
    # listed with nothing of its own, and not listed at all: the top-level values
    for name in ("credit.risk_v2", "hmeq-risk"):
        assert config.monitoring_for(name) == config.monitoring
        assert config.training_for(name) == config.training
        assert config.serving_port_for(name) is None


def test_for_model_puts_the_model_values_where_every_task_reads_them(tmp_path):
    config = load_config(write(tmp_path, CONFIG), environ={})
    own = config.for_model("hmeq-real")
    assert own.monitoring == config.monitoring_for("hmeq-real") and own.training.epochs == 5
    assert own.for_model("hmeq-real") == own, "applying it twice changes nothing"
    assert own.database == config.database and own.models == config.models
    assert config.for_model("other").monitoring == config.monitoring


def test_a_top_level_override_reaches_the_models_that_do_not_set_the_key(tmp_path):
    environ = {
        "MODELOPS_MONITORING__MIN_SAMPLE": "50",
        "MODELOPS_MODELS__HMEQ-REAL__MONITORING__KS_THRESHOLD": "0.2",
    }
    config = load_config(write(tmp_path, CONFIG), environ=environ)
    assert config.monitoring_for("hmeq-real").min_sample == 50
    assert config.monitoring_for("hmeq-real").ks_threshold == 0.2
    assert config.monitoring_for("other").ks_threshold == 0.3


def test_the_shipped_configs_load_with_the_section():
    for path in CONFIG_DIR.glob("*.yaml"):
        assert load_config(path, environ={}).models == {}


CASES = [
    # (id, YAML, dotted key, fragments)
    (
        "unknown monitoring key",
        "models:\n  hmeq-real:\n    monitoring:\n      ks_treshold: 0.2\n",
        "models.hmeq-real.monitoring.ks_treshold",
        ["unknown key", "ks_threshold, min_sample, window"],
    ),
    (
        "schedule is one for all models",
        "models:\n  m:\n    monitoring:\n      schedule_cron: '* * * * *'\n",
        "models.m.monitoring.schedule_cron",
        ["unknown key", "retrain_cooldown_s"],
    ),
    (
        "unknown model key",
        "models:\n  m:\n    colour: red\n",
        "models.m.colour",
        ["unknown key", "monitoring, training, serving_port"],
    ),
    (
        "threshold range",
        "models:\n  m:\n    monitoring: {ks_threshold: 1.2}\n",
        "models.m.monitoring.ks_threshold",
        ["less than 1", "1.2"],
    ),
    (
        "window kind",
        "models:\n  m:\n    monitoring: {window: {kind: rows}}\n",
        "models.m.monitoring.window.kind",
        ["'count' or 'time'", "'rows'"],
    ),
    (
        "training range",
        "models:\n  m:\n    training: {epochs: 0}\n",
        "models.m.training.epochs",
        ["greater than or equal to 1"],
    ),
    (
        "port range",
        "models:\n  m:\n    serving_port: 99999\n",
        "models.m.serving_port",
        ["less than or equal to 65535"],
    ),
    (
        "model name rule",
        "models:\n  'my model': {}\n",
        "models.my model",
        ["[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", "'my model'"],
    ),
    ("not a mapping", "models: [a, b]\n", "models", ["valid dictionary", "['a', 'b']"]),
    ("entry not a mapping", "models:\n  m: 5\n", "models.m", ["valid dictionary", "got 5"]),
]


@pytest.mark.parametrize(("name", "text", "key", "fragments"), [pytest.param(*c, id=c[0]) for c in CASES])
def test_mistakes_in_the_section_name_the_model_key_and_what_is_allowed(tmp_path, name, text, key, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    line = next((line for line in message.splitlines() if line.strip().startswith(f"{key}")), None)
    assert line is not None, message
    assert f"(in {path})" in line
    for fragment in fragments:
        assert fragment in line, line


def test_a_bad_override_names_the_variable():
    variable = "MODELOPS_MODELS__M__MONITORING__MIN_SAMPLE"
    with pytest.raises(ConfigError) as caught:
        load_config("local", environ={variable: "1"})
    assert f"models.m.monitoring.min_sample (in {variable}): " in str(caught.value)
    assert "greater than or equal to 2" in str(caught.value)


def test_the_section_in_python():
    config = ModelOpsConfig(models={"a": {"monitoring": {"min_sample": 10}}})
    assert config.monitoring_for("a").min_sample == 10 and config.monitoring_for("a").ks_threshold == 0.3
