"""Which processes a Python program starts, recorded from inside it by an audit hook.

Sampling a program's children from outside races with them: a child caught between ``fork`` and ``exec``
shows its parent's command line, and a short-lived one (``uname -p`` run by ``platform.processor()``)
may or may not be caught. An audit hook (PEP 578) sees every ``subprocess.Popen``, ``os.posix_spawn``,
``os.spawn*`` and ``os.fork`` the program itself makes, with the command it asked for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_SITECUSTOMIZE = """\
import json, os, sys

_LOG = os.environ["MODELOPS_TEST_PROCESS_AUDIT"]
_EVENTS = {"subprocess.Popen": 1, "os.posix_spawn": 1, "os.spawn": 2, "os.fork": None, "os.forkpty": None}


def _write(event, command):
    with open(_LOG, "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "event": event, "command": command}) + "\\n")


def _record(event, args):
    if event in _EVENTS:
        index = _EVENTS[event]
        command = [event] if index is None else args[index]
        if isinstance(command, (str, bytes, os.PathLike)):
            command = [command]
        _write(event, [os.fsdecode(p) if isinstance(p, (bytes, os.PathLike)) else str(p) for p in command])


sys.addaudithook(_record)
_write("audit-hook-installed", sys.orig_argv)
"""


def audited(env: dict[str, str], workdir: Path) -> tuple[dict[str, str], Path]:
    """``env`` for a Python program whose process starts are logged; returns it and the log's path.

    The hook is installed by a ``sitecustomize`` module put first on ``PYTHONPATH``; children inherit
    both variables, so the program's Python children are audited too.
    """
    hook_dir = workdir / "process-audit"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    log = hook_dir / "starts.jsonl"
    log.touch()
    python_path = os.pathsep.join(p for p in (str(hook_dir), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": python_path, "MODELOPS_TEST_PROCESS_AUDIT": str(log)}, log


def started(log: Path) -> tuple[list[list[str]], list[dict]]:
    """The audited programs (their command lines) and every process start they made, in order, as
    ``{"pid", "event", "command"}``. An empty first list means the hook never ran: nothing was audited."""
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    programs = [e["command"] for e in entries if e["event"] == "audit-hook-installed"]
    return programs, [e for e in entries if e["event"] != "audit-hook-installed"]
