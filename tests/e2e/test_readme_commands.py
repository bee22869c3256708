"""The README's `modelops …` command lines must parse: documented sub-commands and flags exist.

Running them is the job of other tests (the e2e loop runs `modelops demo`, CI runs `make test`);
this keeps the documentation from drifting away from the command line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from modelops.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def readme_command_lines() -> list[str]:
    """``modelops …`` lines of the README's ```bash blocks, without env assignments and comments."""
    lines, in_shell_block = [], False
    for raw in README.read_text().splitlines():
        if raw.strip().startswith("```"):
            in_shell_block = raw.strip() == "```bash"
            continue
        if not in_shell_block:
            continue
        line = raw.split(" #", 1)[0].strip()
        words = line.split()
        while words and _ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words[:1] == ["modelops"]:
            lines.append(" ".join(words))
    return lines


def test_the_readme_documents_commands():
    assert len(readme_command_lines()) >= 20


@pytest.mark.parametrize("line", readme_command_lines())
def test_documented_command_parses(line: str):
    argv = shlex.split(line.replace("<", "").replace(">", "").replace("...", "x"))[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"README command does not parse ({exc.code}): {line}")
    assert args.command in line
