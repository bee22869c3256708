"""SQL: values travel only as bound parameters; identifiers (the schema) are validated before any SQL.

Three layers, each tested for real:

* a static scan of every SQL call in ``modelops/``: no ``%``/``.format`` string building; an f-string
  may only interpolate the validated ``schema``, module constants, or fragments the same module builds
  from constants and ``mogrify`` (listed below, reviewed); a public function that puts ``schema``
  into SQL validates it itself;
* every public function that takes ``schema`` refuses an injection before touching the database;
* against the real PostgreSQL: hostile values (model names, reviewers, comments) are stored and
  matched literally, and an injected schema from the config file or ``MODELOPS_DATABASE__SCHEMA``
  stops the command with a message and leaves the database untouched.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml
from support.network import free_port

from modelops.config import PROJECT_ROOT, ConfigError, WindowSettings, load_config
from modelops.integrations.database import apply_migrations, validate_identifier

PACKAGE = PROJECT_ROOT / "modelops"
SQL_CALLS = {"execute", "executemany", "copy_expert", "mogrify", "execute_values"}
# SQL fragments a module builds from constants and cursor.mogrify(...) and then interpolates.
REVIEWED_FRAGMENTS = {"query", "sql", "where", "label", "below", "above"}
INJECTIONS = [
    "modelops; DROP SCHEMA public CASCADE --",
    "modelops.scoring_log; --",
    'modelops" OR "1"="1',
    "Modelops",  # upper case would need quoting: refused, not silently folded
    "modelops ",
    "",
    "m" * 64,
    "modelоps",  # Cyrillic o
    "pg_catalog\x00",
]


def _sql_argument(call: ast.Call, name: str) -> ast.expr | None:
    index = 1 if name == "execute_values" else 0
    return call.args[index] if len(call.args) > index else None


def _parts(node: ast.expr) -> list[ast.expr]:
    """The pieces of ``a + b + ...``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _parts(node.left) + _parts(node.right)
    return [node]


def _sql_calls() -> list[tuple[Path, ast.FunctionDef | None, ast.Call, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name not in SQL_CALLS:
                continue
            owner = parents.get(node)
            while owner is not None and not isinstance(owner, ast.FunctionDef):
                owner = parents.get(owner)
            found.append((path, owner, node, name))
    return found


def test_sql_is_never_built_with_percent_or_format_and_fstrings_interpolate_only_safe_names():
    calls = _sql_calls()
    assert len(calls) > 20, "the scan found too few SQL calls: has the code moved?"
    problems = []
    for path, _function, call, name in calls:
        where = f"{path.relative_to(PROJECT_ROOT)}:{call.lineno} ({name})"
        argument = _sql_argument(call, name)
        if argument is None:
            continue
        for part in _parts(argument):
            if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod):
                problems.append(f"{where}: SQL built with '%' formatting: pass the values as parameters")
            if isinstance(part, ast.Call) and getattr(part.func, "attr", "") == "format":
                problems.append(f"{where}: SQL built with .format(): pass the values as parameters")
            if not isinstance(part, ast.JoinedStr):
                continue
            for value in part.values:
                if not isinstance(value, ast.FormattedValue):
                    continue
                expression = ast.unparse(value.value)
                constant = expression.lstrip("_").isupper()
                if expression == "schema" or constant or expression in REVIEWED_FRAGMENTS:
                    continue
                problems.append(f"{where}: f-string interpolates {expression!r}: bind it as a parameter")
    assert not problems, "\n".join(problems)


def test_public_functions_that_put_the_schema_into_sql_validate_it_themselves():
    unvalidated = []
    for path, function, call, name in _sql_calls():
        argument = _sql_argument(call, name)
        if function is None or function.name.startswith("_") or argument is None:
            continue
        interpolates_schema = any(
            isinstance(v, ast.FormattedValue) and ast.unparse(v.value) == "schema"
            for part in _parts(argument)
            if isinstance(part, ast.JoinedStr)
            for v in part.values
        ) or "schema" in ast.unparse(argument)
        if not interpolates_schema:
            continue
        source = ast.unparse(function)
        if "validate_identifier(schema" not in source:
            unvalidated.append(f"{path.relative_to(PROJECT_ROOT)}:{function.lineno} {function.name}")
    assert not sorted(set(unvalidated)), sorted(set(unvalidated))


def _functions_taking_schema() -> list[tuple[str, object]]:
    found = []
    for module_name in (
        "modelops.integrations.database",
        "modelops.integrations.postgres",
        "modelops.integrations.scoring_log",
        "modelops.integrations.performance_store",
    ):
        module = importlib.import_module(module_name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module_name or name.startswith("_"):
                continue
            if "schema" in inspect.signature(function).parameters:
                found.append((f"{module_name.rsplit('.', 1)[1]}.{name}", function))
    return found


SCHEMA_FUNCTIONS = _functions_taking_schema()


@pytest.mark.parametrize(("name", "function"), SCHEMA_FUNCTIONS, ids=[n for n, _ in SCHEMA_FUNCTIONS])
def test_every_function_taking_a_schema_refuses_an_injection_before_connecting(name, function):
    """Other arguments are dummies: a function that validated late would fail on them (or connect)."""
    closed = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    arguments = {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name == "schema" or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.name == "dsn":
            arguments[parameter.name] = closed
        elif parameter.name == "window":
            arguments[parameter.name] = WindowSettings()
        else:
            arguments[parameter.name] = None
    for injection in INJECTIONS:
        with pytest.raises(ValueError, match="not a safe SQL identifier"):
            function(**arguments, schema=injection)


@pytest.mark.parametrize("name", ["modelops", "scoring", "_private", "team_a_2026", "a" * 63])
def test_plain_lower_case_identifiers_are_accepted(name):
    assert validate_identifier(name) == name


def _schemas(dsn: str) -> set[str]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT nspname FROM pg_namespace")
        names = {row[0] for row in cursor.fetchall()}
    connection.close()
    return names


def test_hostile_values_are_bound_stored_and_matched_literally(postgres_url):
    from modelops.approval import ApprovalDecision
    from modelops.integrations import performance_store, scoring_log

    apply_migrations(postgres_url)
    hostile = "m'; DROP TABLE modelops.scoring_log; --"
    check = performance_store.store_ks_check(
        postgres_url,
        model_name=hostile,
        model_version="1' OR '1'='1",
        status="ok",
        ks=0.5,
        auc=0.8,
        threshold=0.3,
        n=10,
        n_events=3,
        window_start=None,
        window_end=None,
        details={"reason": "'); DELETE FROM modelops.ks_checks; --"},
    )
    assert check > 0
    performance_store.record_approval(
        postgres_url,
        ApprovalDecision(
            model_name=hostile,
            model_version="1",
            approved=True,
            reason="approved",
            reviewer="x'); DROP TABLE modelops.approvals; --",
            image_tag="v1",
            comment="$$; SELECT pg_sleep(10); $$",
        ),
    )
    trend = performance_store.read_recent_checks(postgres_url, hostile)
    assert [(r["model_version"], r["status"]) for r in trend] == [("1' OR '1'='1", "ok")]
    assert performance_store.read_recent_checks(postgres_url, "m' OR '1'='1") == []
    assert scoring_log.count_records(postgres_url, model_name="x' OR '1'='1") == 0
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT reviewer, comment FROM modelops.approvals WHERE model_name = %s", (hostile,))
        assert cursor.fetchall() == [
            ("x'); DROP TABLE modelops.approvals; --", "$$; SELECT pg_sleep(10); $$")
        ]
        cursor.execute("SELECT count(*) FROM modelops.scoring_log")  # still there
        assert cursor.fetchone() == (0,)
    connection.close()


def test_injected_schema_in_apply_migrations_touches_nothing(postgres_url):
    before = _schemas(postgres_url)
    for injection in INJECTIONS:
        with pytest.raises(ValueError, match="not a safe SQL identifier"):
            apply_migrations(postgres_url, schema=injection)
    assert _schemas(postgres_url) == before


def test_injected_schema_from_config_file_or_environment_stops_the_command(postgres_url, tmp_path):
    before = _schemas(postgres_url)
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": postgres_url, "schema": "x; DROP SCHEMA public"}}))
    with pytest.raises(ConfigError, match=r"database\.schema \(in .*evil\.yaml\).*\[a-z_\]"):
        load_config(path, environ={})
    command = [
        sys.executable,
        "-c",
        "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))",
    ]
    base_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
    for env in (
        {"MODELOPS_CONFIG": str(path)},
        {
            "MODELOPS_DATABASE_URL": postgres_url,
            "MODELOPS_DATABASE__SCHEMA": "public; DROP SCHEMA public CASCADE",
        },
    ):
        result = subprocess.run(
            [*command, "ks-check", "--model", "m"],
            env=base_env | env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "database.schema" in result.stderr and "[a-z_][a-z0-9_]{0,62}" in result.stderr
        if "MODELOPS_DATABASE__SCHEMA" in env:
            assert "(in MODELOPS_DATABASE__SCHEMA)" in result.stderr
    assert _schemas(postgres_url) == before
