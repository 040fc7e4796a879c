"""Sizes that keep the repository walkable: the serving layer in short functions, each job script a
thin call of the CLI, a README that stays an entry point (the manual is the docs site)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_SERVE_FUNCTION_LINES = 80
MAX_JOB_LINES = 20
MAX_README_LINES = 250


def test_no_function_in_serve_runs_over_80_lines() -> None:
    long: list[str] = []
    for path in sorted((ROOT / "kolray" / "serve").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_SERVE_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_every_job_is_a_short_call_of_the_cli() -> None:
    jobs = sorted((ROOT / "jobs").glob("*.py"))
    assert jobs
    for job in jobs:
        text = job.read_text()
        assert len(text.splitlines()) <= MAX_JOB_LINES, job.name
        assert "from kolray.cli import main" in text and "sys.exit(main(" in text, job.name


def test_the_readme_stays_an_entry_point() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= MAX_README_LINES
