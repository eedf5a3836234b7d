"""The stored outputs of every notebook were executed at the speed its syllabus entry declares.

A notebook executed on an overloaded machine stores cell times that contradict its declared runtime, and a reader on
GitHub (or the course website) sees them. nbformat records when each cell started (`iopub.execute_input`) and when it
finished (`shell.execute_reply`) in the cell's metadata; their sum over the notebook must stay within RUNTIME_FACTOR
times the declared CPU runtime, the same factor CI applies when it runs the notebooks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from llmcourse.teaching.execute import RUNTIME_FACTOR, stored_seconds
from llmcourse.teaching.syllabus import load_syllabus

ROOT = Path(__file__).resolve().parents[1]


def _cell(start: str, end: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    cell.metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
    return cell


def test_stored_seconds_sums_recorded_cell_times():
    nb = nbformat.v4.new_notebook(cells=[
        _cell("2026-01-01T10:00:00.000000Z", "2026-01-01T10:00:30.500000Z"),
        _cell("2026-01-01T10:01:00Z", "2026-01-01T10:03:00Z"),
        nbformat.v4.new_code_cell("never run"),  # no execution count: not executed, not counted
        nbformat.v4.new_code_cell("y = 2", execution_count=3),  # executed, but no times recorded
    ])
    assert stored_seconds(nb) == (150.5, 1)


SYLLABUS = load_syllabus(ROOT / "curriculum" / "syllabus.yaml")["notebooks"]


@pytest.mark.parametrize("entry", SYLLABUS, ids=[nb.path for nb in SYLLABUS])
def test_stored_outputs_were_executed_within_the_declared_runtime(entry):
    nb = nbformat.read(ROOT / entry.path, as_version=4)
    seconds, untimed = stored_seconds(nb)
    assert untimed == 0, (f"{entry.path}: {untimed} executed cells have no recorded times: execute it with "
                          "nbclient or JupyterLab (which record them) on a quiet machine")
    assert seconds > 0, f"{entry.path} has no stored outputs: execute it on a quiet machine before committing it"
    ratio = seconds / 60 / entry.runtime_min
    assert ratio <= RUNTIME_FACTOR, (
        f"{entry.path}: its stored cells took {seconds / 60:.1f} min, {ratio:.1f}x the declared "
        f"{entry.runtime_min} min (limit {RUNTIME_FACTOR}x). Re-execute it alone on a quiet machine "
        f"(`llmcourse execute {entry.path}`), or declare the runtime it really needs.")
