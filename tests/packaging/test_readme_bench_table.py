"""The README's benchmark table is generated from a committed results file, never typed by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT_ROOT))  # bench/ is a top-level folder, not an installed package

from bench.readme_table import END, markdown, table_source  # noqa: E402


def test_the_readme_table_is_what_bench_readme_table_makes_of_its_results_file():
    readme = (PROJECT_ROOT / "README.md").read_text()
    source = table_source(readme)
    assert source, "the README has no bench-table begin marker naming its results file"
    results_file = PROJECT_ROOT / source
    assert results_file.is_file(), f"the README's table names {source}, which is not in the repository"
    results = json.loads(results_file.read_text())
    block = readme.split(f"python -m bench.readme_table {source}` -->\n", 1)[1].split(END, 1)[0]
    assert block == markdown(results) + "\n", (
        f"the README's table differs from its results file: run python -m bench.readme_table {source}"
    )
    goals = [row for row in results["rows"] if row.get("met") is not None]
    assert goals, "the results file holds no figure with a goal"
