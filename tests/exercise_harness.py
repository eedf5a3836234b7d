"""Run one exercise of a notebook outside the notebook: its exercise cell (the solution, or a replacement for the
solution region), then its check cell, in a namespace the test prepares. Used by tests/test_exercises_*.py to prove
that every check accepts the right answer and rejects plausible wrong ones without executing the whole notebook.
"""

from __future__ import annotations

from pathlib import Path

from llmcourse import checks
from llmcourse.teaching import notebooks
from llmcourse.teaching.notebooks import cell_source, find_exercise, read_notebook, replace_solution

ROOT = Path(__file__).resolve().parents[1]
STUB = "\n".join(notebooks.STUB)  # what the student copy holds in place of a solution


def exercise_cells(notebook: str | Path, exercise: str) -> tuple[str, str]:
    """(exercise cell source, check cell source) for exercise id `exercise` in `notebook` (path from the repo root)."""
    cells = read_notebook(ROOT / notebook).cells
    i, j = find_exercise(cells, exercise)
    return cell_source(cells[i]), cell_source(cells[j])


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
