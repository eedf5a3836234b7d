"""Grading, stage 1: the reference notebook's exercises (check cells, their exercise cells, points)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError, GradingError
from ..notebooks import cell_source, check_cells, exercise_cell_before, skeleton
from .judge import AnswerSpec, answer_spec

__all__ = ["RefExercise", "exercise_points", "reference_exercises"]


def exercise_points(notebook: str | Path, nb: Any = None,
                    syllabus: str | Path | None = None) -> dict[str, float]:
    """Points of each exercise of `notebook`: from its entry in curriculum/syllabus.yaml, else from the notebook's
    metadata ``llmcourse.points`` ({"1.1": 2, ...}), else one point per check cell."""
    from ..syllabus import load_syllabus, notebook_entry

    try:
        entry = notebook_entry(notebook, load_syllabus(syllabus))
        if entry.exercises:
            return {e.id: float(e.points) for e in entry.exercises}
    except (ConfigError, OSError):
        pass
    if nb is not None:
        meta = nb.metadata.get("llmcourse", {}).get("points")
        if meta:
            return {str(k): float(v) for k, v in meta.items()}
        return {ex.id: 1.0 for ex in reference_exercises(nb, {})}
    return {}



@dataclass
class RefExercise:
    """One exercise of the reference notebook."""

    id: str
    points: float
    exercise_cell: Any
    check_cell: Any
    skeleton: list[str] = field(default_factory=list)
    answer: AnswerSpec | None = None  # judged outside the kernel when set (`judge`)


def reference_exercises(nb: Any, points: dict[str, float]) -> list[RefExercise]:
    """The exercises of the reference notebook: each check cell and the nearest exercise cell above it."""
    found: list[RefExercise] = []
    for i, ids in check_cells(nb.cells):
        if len(ids) != 1:
            raise GradingError(f"reference check cell {i} calls check() for {len(ids)} exercises; exactly one is "
                               f"needed (write one check cell per exercise).")
        j = exercise_cell_before(nb.cells, i)
        if j is None:
            raise GradingError(f"reference check cell of exercise {ids[0]} has no cell tagged 'exercise' above it.")
        found.append(RefExercise(ids[0], float(points.get(ids[0], 1.0)), nb.cells[j], nb.cells[i],
                                 skeleton(cell_source(nb.cells[j])), answer_spec(nb.cells[i])))
    if len({e.id for e in found}) != len(found):
        raise GradingError("the reference notebook checks the same exercise id twice.")
    if not found:
        raise GradingError("the reference notebook has no check cell (a cell tagged 'check' calling "
                           "check(\"N.M\", ...)).")
    return found


