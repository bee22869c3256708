"""The README's `modelops …` commands: every documented line parses, and the cheap ones run for real.

Run for real, with the installed console script from a directory outside the checkout (it must work
from anywhere): ``modelops --help`` and every sub-command's ``--help``, ``modelops generate`` as the
README shows it, and the README's example of a wrong ``MODELOPS_*`` override with its message. The
expensive commands run in their own tests (the e2e loop runs ``modelops demo``, CI runs ``make test``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelops.cli import build_parser, command_in

README = Path(__file__).resolve().parents[2] / "README.md"
MODELOPS = str(Path(sys.executable).parent / "modelops")
_ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
TIMEOUT_S = 300  # a generous bound for one command on a loaded machine; only reached when it hangs


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


@pytest.mark.parametrize(
    ("argv", "config", "verbose"),
    [
        (["up", "--config", "docker"], "docker", False),
        (["--config", "docker", "up"], "docker", False),
        (["--config", "local", "status", "--config", "docker"], "docker", False),  # the later one
        (["--config", "docker", "-v", "status"], "docker", True),
        (["status", "-v"], None, True),
        (["status"], None, False),
    ],
)
def test_global_options_go_before_or_after_the_command(argv, config, verbose):
    args = build_parser([command_in(argv)]).parse_args(argv)
    assert (args.config, args.verbose) == (config, verbose)


# ---------------------------------------------------------------- run for real


def modelops(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, in ``cwd``, without the developer's own MODELOPS_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELOPS_")}
    return subprocess.run(
        [MODELOPS, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=TIMEOUT_S
    )


def subcommands(help_text: str) -> list[str]:
    """The sub-commands ``modelops --help`` lists (one per line, indented under ``COMMAND``)."""
    return re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", help_text, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A working directory outside the checkout: the script must not depend on where it runs."""
    return tmp_path_factory.mktemp("anywhere")


def test_help_lists_every_command_and_each_command_has_help(elsewhere):
    main = modelops("--help", cwd=elsewhere)
    assert main.returncode == 0, main.stderr
    assert main.stdout.startswith("usage: modelops")
    commands = subcommands(main.stdout)
    documented = {
        command_in(line.split()[1:]) or line.split()[1]
        for line in readme_command_lines()
        if len(line.split()) > 1
    }
    assert documented <= set(commands), f"README commands missing from --help: {documented - set(commands)}"
    with ThreadPoolExecutor(max_workers=4) as pool:  # each is a fresh interpreter: run a few at once
        results = dict(
            zip(commands, pool.map(lambda c: modelops(c, "--help", cwd=elsewhere), commands), strict=True)
        )
    for command, result in results.items():
        assert result.returncode == 0, f"modelops {command} --help: {result.stderr}"
        assert result.stdout.startswith(f"usage: modelops {command}"), result.stdout[:200]
        assert "Traceback" not in result.stderr


def readme_generate_command(out: Path) -> list[str]:
    """The README's ``modelops generate --out DIR [--rows 20000] …`` with DIR and its defaults filled in."""
    (line,) = re.findall(r"^`(modelops generate [^`]+)`", README.read_text(), flags=re.MULTILINE)
    words = shlex.split(line.replace("[", "").replace("]", "").replace("DIR", str(out)))
    assert words[:2] == ["modelops", "generate"], line
    return words[2:]


def test_generate_as_the_readme_shows_it(elsewhere):
    out = elsewhere / "data"
    args = readme_generate_command(out)
    result = modelops("generate", *args, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    periods = int(args[args.index("--periods") + 1])
    expected = {"train.csv", "schema.yaml", *(f"period_{i}.csv" for i in range(1, periods + 1))}
    assert {p.name for p in out.iterdir()} == expected
    rows = int(args[args.index("--rows") + 1])
    assert len((out / "train.csv").read_text().splitlines()) == rows + 1  # with its header
    assert "target: BAD" in (out / "schema.yaml").read_text()


def readme_override_error() -> tuple[str, str, str]:
    """The README's example of a wrong override: (variable, value, the message line it shows)."""
    text = README.read_text()
    match = re.search(r"^  (\S+ \(in (MODELOPS_[A-Z_]+)\): .*; got '([^']*)')$", text, flags=re.MULTILINE)
    assert match, "the README's example of a wrong MODELOPS_* override is gone"
    line, variable, value = match.groups()
    return variable, value, line


def test_a_wrong_override_is_one_clear_error_naming_the_variable(elsewhere):
    variable, value, line = readme_override_error()
    result = modelops("status", cwd=elsewhere, **{variable: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    first, *details = result.stderr.strip().splitlines()
    assert first.startswith("modelops status: error: ") and first.endswith("invalid configuration"), first
    assert details == [f"  {line}"], "exactly the README's line: the key, the variable, what is allowed"
