"""Batch grading of student notebooks, one module per stage: `llmcourse grade SUBMISSION... --notebook NB --out DIR`.

Introduced with grading (`docs/grading.md`). For each submission:

1. `reference`: the reference notebook's exercises (check cells, the exercise cell above each, answer specs, points);
2. `submission`: the student's file, read into a notebook the later stages can rely on (else ``invalid``, with why);
   `assemble`: the notebook to run, the student's cells with the instructor's check cells, or answer cells, inserted;
3. `execute`: `teaching.sandbox` runs it with papermill in its own process, kernel and temporary folder (`workdir`,
   outside the output folder), in a sandbox where the machine allows one (`teaching.isolation`), with a timeout,
   memory and output limits (`limits`), hubs offline, parameters set;
4. `verdicts`: one verdict per exercise: the `judge`'s, from the answers the kernel recorded as data against the
   reference's on the batch's secret seed, else read only from the inserted check cells (found by a per-run nonce);
5. `report`: report.csv, summary.csv and report.html, from the records whose signature (`signing`) holds.

`batch.grade` runs them for a whole batch, in parallel, skipping what was already graded; a failure of the grader's
own steps on one submission is that submission's status (`failures`), never the batch's. With a scheduler, the same
per-submission work runs on a Dask cluster (`distributed`, imported only then), and results still land here.
"""

from __future__ import annotations

from .assemble import build_graded_notebook, suspicious
from .batch import grade
from .limits import OUTPUT_LIMIT_MIB
from .reference import RefExercise, exercise_points, reference_exercises
from .report import summary_rows, write_reports
from .submission import InvalidSubmission, parse_submission
from .verdicts import STATUSES, read_verdicts

__all__ = ["OUTPUT_LIMIT_MIB", "STATUSES", "InvalidSubmission", "RefExercise", "build_graded_notebook",
           "exercise_points", "grade", "parse_submission", "read_verdicts", "reference_exercises", "summary_rows",
           "suspicious", "write_reports"]
