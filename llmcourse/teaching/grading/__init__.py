"""Batch grading of student notebooks, one module per stage: `llmcourse grade SUBMISSION... --notebook NB --out DIR`.

Introduced with grading (`docs/grading.md`). For each submission:

1. `reference`: the reference notebook's exercises (check cells, the exercise cell above each, points);
2. `assemble`: the notebook to run, the student's cells with the instructor's check cells inserted;
3. `execute`: `teaching.sandbox` runs it with papermill in its own process, kernel and temporary folder (timeout,
   memory limit, hubs offline, parameters injected);
4. `verdicts`: one verdict per exercise, read only from the inserted check cells (found by a per-run nonce);
5. `report`: report.csv, summary.csv and report.html.

`batch.grade` runs them for a whole batch, in parallel, skipping what was already graded.
"""

from __future__ import annotations

from .assemble import build_graded_notebook, suspicious
from .batch import grade
from .reference import RefExercise, exercise_points, reference_exercises
from .report import summary_rows, write_reports
from .verdicts import STATUSES, read_verdicts

__all__ = ["STATUSES", "RefExercise", "build_graded_notebook", "exercise_points", "grade", "read_verdicts",
           "reference_exercises", "summary_rows", "suspicious", "write_reports"]
