"""The audit hook that the deployment-step test relies on records what a program starts, and who."""

from __future__ import annotations

import os
import subprocess
import sys

from support.process_audit import audited, started

PROGRAM = """
import platform, subprocess, sys
platform.processor()
subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_the_hook_records_each_start_with_its_command_in_the_program_and_its_python_children(tmp_path):
    env, log = audited(dict(os.environ), tmp_path)
    subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True, timeout=120)
    programs, starts = started(log)
    assert [program[1:] for program in programs] == [["-c", PROGRAM], ["-c", "pass"]]
    commands = [start["command"] for start in starts]
    assert ["uname", "-p"] in commands and [sys.executable, "-c", "pass"] in commands, commands


def test_without_the_hook_nothing_is_recorded(tmp_path):
    _, log = audited(dict(os.environ), tmp_path)
    subprocess.run([sys.executable, "-c", PROGRAM], check=True, timeout=120)
    assert started(log) == ([], [])
