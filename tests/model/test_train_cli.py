"""``modelops generate`` and ``modelops train`` as a person runs them (subprocesses, real services)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema

MODELOPS = [str(Path(sys.executable).parent / "modelops")]


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELOPS, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_generate_writes_train_periods_and_schema(tmp_path):
    done = run_cli(
        ["generate", "--out", str(tmp_path), "--rows", "1000", "--period-rows", "300", "--periods", "3"]
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "period_1.csv", "period_2.csv", "period_3.csv", "schema.yaml", "train.csv",
    ]  # fmt: skip
    assert DatasetSchema.from_yaml(tmp_path / "schema.yaml") == HMEQ_SCHEMA
    train = pd.read_csv(tmp_path / "train.csv")
    assert len(train) == 1000 and list(train.columns)[0] == "BAD"
    assert len(pd.read_csv(tmp_path / "period_3.csv")) == 300
    assert "train.csv: 1000 rows, BAD rate" in done.stdout


def test_generate_rejects_bad_options(tmp_path):
    done = run_cli(["generate", "--out", str(tmp_path), "--drift", "-1"])
    assert (
        done.returncode == 2
        and done.stderr.strip() == "modelops generate: error: --drift must be >= 0, got -1.0"
    )


@pytest.mark.slow
def test_train_command_registers_and_prints_a_summary(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    run_cli(["generate", "--out", str(tmp_path / "data"), "--rows", "2500", "--periods", "0"])
    env = {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "MODELOPS_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MODELOPS_TRAINING__EPOCHS": "5",
        "MODELOPS_TRAINING__BATCH_SIZE": "64",
        "MODELOPS_TRAINING__LEARNING_RATE": "0.003",
    }
    data = tmp_path / "data"
    done = run_cli(
        ["train", "--csv", str(data / "train.csv"), "--schema", str(data / "schema.yaml"),
         "--model-name", "cli-model", "--tag", "ticket=OPS-1"],
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered cli-model version 1 (alias challenger)" in done.stdout
    assert "hold-out: KS 0." in done.stdout and "AUC 0." in done.stdout
    assert f"in sqlite:///{tmp_path}/mlflow.db" in done.stdout
    assert "epoch 5/5" in done.stdout + done.stderr  # progress while training

    from modelops.integrations import registry

    version = registry.resolve_version(f"sqlite:///{tmp_path}/mlflow.db", "cli-model", "challenger")
    assert version.tags["ticket"] == "OPS-1"


@pytest.mark.slow
def test_train_command_bad_csv_is_one_clear_line(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "bad.csv").write_text("BAD;LOAN\n1;100\n0;200\n")
    (tmp_path / "schema.yaml").write_text("target: BAD\nnumeric: [LOAN]\ncategorical: []\n")
    done = run_cli(
        ["train", "--csv", str(tmp_path / "bad.csv"), "--schema", str(tmp_path / "schema.yaml")],
        env={"PREFECT_API_URL": PREFECT_API_URL.value(), "MODELOPS_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("modelops train: error:") and "separator is probably ';'" in last


def test_train_command_checks_its_options(tmp_path):
    done = run_cli(["train", "--schema", str(tmp_path / "s.yaml")])
    assert done.returncode == 2 and "give --csv too" in done.stderr
    done = run_cli(["train", "--csv", str(tmp_path / "absent.csv")])
    assert done.returncode == 2 and "does not exist" in done.stderr
