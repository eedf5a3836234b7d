"""Grading, stage 3: one submission, run in the sandbox; its record (status, time, memory, one row per exercise)."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ...files import atomic_write
from .assemble import build_graded_notebook, suspicious
from .reference import RefExercise
from .verdicts import read_verdicts

__all__ = ["Job", "grade_one", "submission_name"]


def submission_name(path: Path, reference: Path) -> str:
    """The student's name in the report: the file name, or its folder's name when the file keeps the notebook's
    name (one folder per student: ``alice/02_attention.ipynb`` is ``alice``)."""
    stem = path.name[:-6] if path.name.endswith(".ipynb") else path.name
    if stem == reference.stem and path.resolve().parent.name:
        stem = path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


@dataclass
class Job:
    """One submission to grade: its report name, its file and its cache key."""

    name: str
    path: Path
    key: str


def grade_one(job: Job, refs: list[RefExercise], reference: Path, out: Path, parameters: dict, timeout: float,
               memory_bytes: int | None, env: dict, stop: threading.Event) -> dict:
    """Grade one submission into `out` (its executed notebook); return its record (not yet saved)."""
    import nbformat

    from ..sandbox import run_notebook

    nonce = secrets.token_hex(16)
    record = {"submission": job.name, "file": job.path.name, "key": job.key, "notebook": reference.name,
              "notes": [], "seconds": 0.0}
    raw = job.path.read_bytes()
    try:
        student = nbformat.reads(raw.decode("utf-8"), as_version=4)
        if not isinstance(student.get("cells"), list):
            raise ValueError("no list of cells")
    except Exception as exc:  # not JSON, not a notebook, not UTF-8...
        msg = f"not a notebook file ({type(exc).__name__}): resubmit the .ipynb file that Jupyter saved."
        record.update(status="invalid", rows=[{"exercise": ex.id, "status": "invalid", "points": 0.0,
                                               "max_points": ex.points, "message": msg} for ex in refs])
        return record
    graded, notes = build_graded_notebook(student, refs, nonce)
    record["notes"] = suspicious(student) + sorted({n for n in notes.values() if n and n != "missing"})
    if any(n == "missing" for n in notes.values()):
        record["notes"].append("exercise cells deleted: " + ", ".join(e for e, n in notes.items() if n == "missing"))
    (out / ".work").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=(out / ".work").resolve()))
    try:
        work = tmp / "work"
        work.mkdir()
        src, dst = tmp / "graded_input.ipynb", tmp / "graded_output.ipynb"
        nbformat.write(graded, src)
        for _attempt in range(3):  # a kernel that fails to start is the machine's fault, not the student's
            outcome = run_notebook(src, dst, work, parameters, timeout, memory_bytes, env, stop)
            if outcome.status != "failed to start":
                break
        if outcome.status == "failed to start":
            outcome.status, outcome.message = "crashed", f"the kernel did not start ({outcome.message})."
            record["retry"] = True  # the grader's trouble, not the student's: a rerun grades it again
        try:
            executed = nbformat.read(dst, as_version=4)
        except Exception:  # killed while papermill was writing, or before it wrote anything
            executed = None
        if executed is not None and outcome.status != "interrupted":
            atomic_write(out / "notebooks" / f"{job.name}.ipynb", nbformat.writes(executed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["status"] = outcome.status
    record["message"] = outcome.message
    record["seconds"] = round(outcome.seconds, 1)
    record["peak_memory_gib"] = round(outcome.peak_rss / 2**30, 2)
    record["rows"] = read_verdicts(executed, refs, notes, nonce, outcome.status, outcome.message)
    return record


