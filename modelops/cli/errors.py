"""Errors the command line prints as one line (problem and fix) instead of a traceback.

:class:`UserError` is raised by the commands for what the user can fix. :func:`explain` turns an
exception that comes from the environment (a port taken, a path not writable or not executable, a
full disk, PostgreSQL, MLflow, Prefect or Docker unreachable) into one line naming the component,
the cause and the fix; anything else becomes one "unexpected" line. ``modelops -v`` prints the
traceback as well. Exception types of optional, heavy libraries (MLflow, Docker) are recognised by
their module and class names, so this module imports none of them.
"""

from __future__ import annotations

import errno

_VERBOSE_HINT = "run with -v for the traceback"


class UserError(RuntimeError):
    """Something the user can fix: the message names the problem and the fix."""


def _is(exc: BaseException, module: str, name: str) -> bool:
    """Is ``exc`` an instance of ``module.name`` (or a subclass), without importing ``module``?"""
    return any(
        cls.__name__ == name and (cls.__module__ or "").split(".")[0] == module for cls in type(exc).__mro__
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error(exc: OSError) -> str | None:
    path = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or _first_line(exc)
    if exc.errno == errno.EADDRINUSE:
        return (
            f"network: a port is already in use ({reason}); stop the process that holds it "
            "(ss -ltnp) or choose another port in the config"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"filesystem: permission denied on{path} ({reason}); give this user access to it "
            "(read/write for data, execute for a program) or choose another location"
        )
    if exc.errno == errno.ENOSPC:
        return (
            f"filesystem: no space left on the device of{path or ' a file being written'}; free space there"
        )
    if exc.errno in (errno.ENOTDIR, errno.EROFS, errno.EEXIST, errno.EISDIR):
        return (
            f"filesystem: cannot create or write{path} ({reason}); choose a writable directory "
            "(e.g. MODELOPS_STACK__HOME) or remove what is in the way"
        )
    if exc.errno == errno.ENOENT and exc.filename:
        return f"filesystem:{path} does not exist ({reason}); create it or fix the path"
    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ETIMEDOUT):
        return (
            f"network: connection failed ({reason}); start the server it talks to (modelops up) "
            "or fix its URL"
        )
    return None


def _explain_one(exc: BaseException) -> str | None:
    if _is(exc, "psycopg2", "OperationalError"):
        return (
            f"PostgreSQL: cannot connect ({_first_line(exc)}); start it (modelops up) or fix "
            "MODELOPS_DATABASE_URL / database.url / --database-url"
        )
    if _is(exc, "docker", "DockerException"):
        return (
            f"Docker: no engine answers ({_first_line(exc)}); start one (./scripts/docker-engine.sh start "
            "or your Docker service) or set DOCKER_HOST"
        )
    if _is(exc, "mlflow", "MlflowException") and "connect" in str(exc).lower():
        return (
            f"MLflow: the tracking server is unreachable ({_first_line(exc)[:200]}); start it "
            "(modelops up) or fix MLFLOW_TRACKING_URI / mlflow.tracking_uri"
        )
    if _is(exc, "requests", "ConnectionError"):
        return (
            f"MLflow: cannot connect ({_first_line(exc)[:200]}); start the tracking server (modelops up) "
            "or fix MLFLOW_TRACKING_URI / mlflow.tracking_uri"
        )
    if _is(exc, "httpx", "ConnectError") or _is(exc, "httpx", "ConnectTimeout"):
        try:
            url = f" {exc.request.url}"  # type: ignore[attr-defined]
        except RuntimeError:  # httpx: no request attached
            url = ""
        return (
            f"HTTP: cannot connect to{url or ' a server'} ({_first_line(exc)}); start it (modelops up "
            "for Prefect and MLflow) or fix PREFECT_API_URL / the configured URL"
        )
    if isinstance(exc, OSError):
        return _os_error(exc)
    return None


def explain(exc: BaseException) -> str | None:
    """One line (component: cause; fix) for an environment failure anywhere in ``exc``'s chain."""
    for link in _chain(exc):
        line = _explain_one(link)
        if line is not None:
            return line
    return None


def one_line(command: str, exc: BaseException, *, verbose: bool = False) -> str:
    """What ``modelops <command>`` prints for ``exc`` when it is not a :class:`UserError`."""
    hint = "" if verbose else f" ({_VERBOSE_HINT})"
    line = explain(exc)
    if line is not None:
        return f"modelops {command}: error: {line}{hint}"
    return f"modelops {command}: unexpected {type(exc).__name__}: {_first_line(exc)[:300]}{hint}"
