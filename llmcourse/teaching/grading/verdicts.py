"""Grading, stage 4: one verdict per exercise: the judge's, for an exercise with an answer spec (`judge`), else read
only from the outputs of the inserted check cell."""

from __future__ import annotations

from typing import Any

from ... import checks
from .assemble import GRADER_KEY
from .judge import judge
from .reference import RefExercise

__all__ = ["STATUSES", "read_verdicts", "stamp_verdicts"]

STATUSES = {
    "passed": "the check passed",
    "failed": "the check ran and rejected the answer",
    "not attempted": "the exercise still holds the stub",
    "missing": "the exercise cell was deleted",
    "error": "the notebook stopped with an error before the check, the check cell itself raised, or a step of the "
             "grader failed (the message says which)",
    "timeout": "the run passed its time limit before the check",
    "memory": "the run passed its memory limit before the check",
    "tasks": "the run started more processes and threads than the grader allows before the check",
    "files": "the run kept more files in its folders than the grader allows (--files) before the check",
    "crashed": "the kernel died before the check (os._exit, segfault)",
    "output-limit": "the notebook wrote more output than the grader keeps (--output-limit) before the check",
    "invalid": "the submission is not a notebook Jupyter can open (the message names the problem)",
    "disk": "the disk was full while grading it (not the student's doing: a rerun grades it again)",
    "tampered": "code that ran during the check emitted results of its own",
    "unverified": "its stored result failed its signature check (changed after grading): a rerun grades it again",
    "interrupted": "the batch was stopped before this submission finished (not saved; rerun to grade it)",
}


def _error_text(outputs) -> tuple[str, str] | None:
    for out in outputs:
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def read_verdicts(executed: Any | None, refs: list[RefExercise], notes: dict[str, str],
                  nonce: str, run_status: str, run_message: str, answers: dict[str, dict] | None = None,
                  expected: dict[str, dict] | None = None) -> list[dict]:
    """One row per exercise (student outputs are ignored): judged from the kernel's `answers` against the reference's
    `expected` ones where the exercise has an answer spec and `expected` is given, else from the inserted check
    cells of the executed notebook."""
    grader_cells: dict[tuple[str, str], Any] = {}
    for cell in (executed.cells if executed is not None else []):
        meta = cell.get("metadata", {}).get(GRADER_KEY)
        if isinstance(meta, dict) and meta.get("nonce") == nonce:
            grader_cells[(meta.get("role"), meta.get("exercise"))] = cell
    if run_status in ("error", "crashed"):
        run_message = f"the notebook stopped before this check: {run_message}"
    stopped = {"completed": "the notebook stopped before this check"}.get(run_status, run_message)
    rows = []
    for ex in refs:
        note = notes.get(ex.id, "")
        if ex.answer is not None and expected is not None:
            status, message = _judged(ex, (answers or {}).get(ex.id), expected[ex.id], note, run_status,
                                      run_message or stopped)
        else:
            status, message = _verdict(grader_cells.get(("check", ex.id)), grader_cells.get(("exercise", ex.id)),
                                       ex, note, run_status, run_message or stopped)
        if note and note != "missing" and message:
            message = f"[{note}] {message}"
        elif note and note != "missing":
            message = f"[{note}]"
        rows.append({"exercise": ex.id, "status": status, "points": ex.points if status == "passed" else 0.0,
                     "max_points": ex.points, "message": message})
    return rows


def _judged(ex: RefExercise, got: dict | None, expected: dict, note: str, run_status: str,
            run_message: str) -> tuple[str, str]:
    if note == "missing":
        return "missing", "the exercise cell was deleted (restore it from the student copy)."
    if got is None and run_status != "completed":
        return run_status, run_message  # the run stopped before the answer cell
    assert ex.answer is not None
    return judge(got, expected, ex.answer)


def stamp_verdicts(executed: Any, rows: list[dict], nonce: str) -> None:
    """Write each judged verdict into its answer cell of the executed notebook, in place of what the kernel printed
    there: reading the stored notebook tells what the grader decided."""
    by_exercise = {row["exercise"]: row for row in rows}
    for cell in executed.cells:
        meta = cell.get("metadata", {}).get(GRADER_KEY)
        if not (isinstance(meta, dict) and meta.get("nonce") == nonce and meta.get("role") == "answer"):
            continue
        row = by_exercise.get(meta.get("exercise"))
        if row is None:
            continue
        mark = "✓" if row["status"] == "passed" else "✗"
        text = f"{mark} Exercise {row['exercise']} {row['status']} (judged by the grader)"
        if row["message"]:
            text += f": {row['message']}"
        bundle = {"exercise": row["exercise"], "status": row["status"], "message": row["message"], "judged": True}
        cell["outputs"] = [{"output_type": "display_data", "metadata": {},
                            "data": {"text/plain": text, checks.RESULT_MIME: bundle}}]


def _verdict(cell, exercise_cell, ex: RefExercise, note: str, run_status: str, run_message: str) -> tuple[str, str]:
    if note == "missing":
        return "missing", "the exercise cell was deleted (restore it from the student copy)."
    if cell is None:
        return (run_status if run_status != "completed" else "error"), run_message
    outputs = cell.get("outputs", [])
    bundles = [o["data"][checks.RESULT_MIME] for o in outputs
               if o.get("output_type") in ("display_data", "execute_result")
               and checks.RESULT_MIME in o.get("data", {})]
    if len(bundles) > 1:
        return "tampered", f"the check cell recorded {len(bundles)} results; code run by the check emitted its own."
    if len(bundles) == 1:
        b = bundles[0]
        if not isinstance(b, dict) or b.get("exercise") != ex.id or b.get("status") not in STATUSES:
            return "tampered", "the check's result does not come from the course's check."
        if b["status"] == "not attempted" and exercise_cell is not None:
            err = _error_text(exercise_cell.get("outputs", []))
            if err and err[0] != "NotImplementedError":
                return "error", f"the exercise cell raised {err[0]}: {err[1]}"
        return b["status"], str(b.get("message", ""))
    err = _error_text(outputs)
    if err and err[0] == "KeyboardInterrupt" and run_status == "timeout":
        return "timeout", run_message  # the kernel was interrupted at the time limit while this cell ran
    if err:
        return ("memory" if err[0] == "MemoryError" else "error"), f"the check cell raised {err[0]}: {err[1]}"
    if run_status == "completed":
        return "error", "the check cell ran but recorded no result."
    return run_status, run_message


