"""Run one exercise of a notebook outside the notebook: its exercise cell (the solution, or a replacement for the
solution region), then its check cell, in a namespace the test prepares. Used by tests/test_exercises_*.py to prove
that every check accepts the right answer and rejects plausible wrong ones without executing the whole notebook.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

from llmcourse import checks

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def exercise_cells(notebook: str | Path, exercise: str) -> tuple[str, str]:
    """(exercise cell source, check cell source) for exercise id `exercise` in `notebook` (path from the repo root)."""
    nb = json.loads((ROOT / notebook).read_text(encoding="utf-8"))
    cells = nb["cells"]
    pattern = re.compile(r"check\(\s*['\"]" + re.escape(exercise) + r"['\"]")
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "check" in tags and pattern.search(_source(cell)):
            for j in range(i - 1, -1, -1):
                if "exercise" in cells[j].get("metadata", {}).get("tags", []):
                    return _source(cells[j]), _source(cell)
            raise AssertionError(f"{notebook}: check cell of {exercise} has no exercise cell before it")
    raise AssertionError(f"{notebook}: no check cell for exercise {exercise}")


def replace_solution(source: str, replacement: str) -> str:
    """The exercise cell with the code between the markers replaced by `replacement` (re-indented to the markers)."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
    stop = next(i for i, line in enumerate(lines) if line.strip() == END)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    body = textwrap.indent(textwrap.dedent(replacement).strip("\n"), indent).splitlines()
    return "\n".join(lines[:start] + body + lines[stop + 1 :])


def run_exercise(notebook: str | Path, exercise: str, context: dict | None = None,
                 solution: str | None = None) -> checks.CheckResult:
    """Run the exercise (with `solution` in place of the reference one, if given) and its check; return the result."""
    ex_src, check_src = exercise_cells(notebook, exercise)
    if solution is not None:
        ex_src = replace_solution(ex_src, solution)
    namespace = dict(context or {})
    results: list[checks.CheckResult] = []
    original = checks._emit
    checks._emit = results.append
    try:
        try:
            exec(compile(_strip_magics(ex_src), f"<{exercise} exercise>", "exec"), namespace)
        except NotImplementedError:
            pass
        exec(compile(_strip_magics(check_src), f"<{exercise} check>", "exec"), namespace)
    finally:
        checks._emit = original
    assert len(results) == 1, f"the check cell of {exercise} ran {len(results)} checks, expected 1"
    return results[0]


def _strip_magics(src: str) -> str:
    return "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
