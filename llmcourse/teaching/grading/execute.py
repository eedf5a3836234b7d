"""Grading, stage 3: one submission, run in the sandbox; its record (status, time, memory, one row per exercise).

Whatever goes wrong with one submission ends in its record, never in the batch: a file that is not a notebook is
``invalid`` (`submission`), a notebook that prints past the output limit is ``output-limit`` (`limits`), and a step
of the grader's own that fails is ``disk`` or ``error`` (`failures`), each with its cause.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ...files import atomic_write
from ..notebooks import notebook_text
from .assemble import build_graded_notebook, continued_error, suspicious
from .failures import StageFailed, failed_rows, stage
from .judge import read_answers
from .limits import MESSAGE_CHARS, OutputWatch, cap_outputs, clean, mib
from .reference import RefExercise
from .submission import InvalidSubmission, parse_submission
from .verdicts import read_verdicts, stamp_verdicts

__all__ = ["Job", "Settings", "expected_answers", "failed_record", "grade_one", "submission_name"]

READ_BYTES = 256 * 2**20  # an executed notebook over this (or 16x the output limit) is not read back


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


@dataclass
class Settings:
    """What every submission of a batch runs with."""

    workdir: Path  # the batch's temporary folder, outside the output folder (`workdir.batch_workdir`)
    timeout: float = 600.0  # wall-clock seconds per submission
    memory_bytes: int | None = None  # resident memory of the whole process tree
    files_bytes: int | None = None  # files in its working folder, its temporary folder there included
    output_bytes: int = 20 * 2**20  # output the notebook may write, and the grader stores
    parameters: dict = field(default_factory=dict)  # injected into the notebook's parameters cell
    env: dict = field(default_factory=dict)  # extra environment variables of the kernel
    seed: int | None = None  # the batch's secret seed, for the answer cells (`judge`)
    expected: dict | None = None  # the reference's answers on that seed, by exercise (None: no exercise is judged)
    course_code: str = ""  # the reference notebook's own code, which notes on a submission's code leave out


def grade_one(job: Job, refs: list[RefExercise], reference: Path, out: Path, settings: Settings,
              stop: threading.Event | None = None) -> dict:
    """Grade one submission (its executed notebook goes into `out`); return its record, not yet saved."""
    record = _new_record(job, reference)
    try:
        _grade(job, refs, out, settings, stop, record)
    except InvalidSubmission as exc:
        record.update(status="invalid", message=str(exc), rows=failed_rows(refs, "invalid", str(exc)))
    except StageFailed as exc:
        return failed_record(job, refs, reference, exc, record)
    return clean(record, MESSAGE_CHARS)


def _new_record(job: Job, reference: Path) -> dict:
    return {"submission": job.name, "file": job.path.name, "key": job.key, "notebook": reference.name, "notes": [],
            "seconds": 0.0}


def failed_record(job: Job, refs: list[RefExercise], reference: Path, failure: StageFailed,
                  record: dict | None = None) -> dict:
    """The record of a submission whose grading failed at a step of the grader's own (status disk or error)."""
    record = dict(record or _new_record(job, reference))
    record.update(status=failure.status, message=failure.message,
                  rows=failed_rows(refs, failure.status, failure.message),
                  retry=True)  # the grader's trouble, not the student's: a rerun grades it again
    return clean(record, MESSAGE_CHARS)


def _grade(job: Job, refs: list[RefExercise], out: Path, settings: Settings, stop: threading.Event | None,
           record: dict) -> None:
    import nbformat

    nonce = secrets.token_hex(16)
    try:
        raw = job.path.read_bytes()
    except OSError as exc:
        raise InvalidSubmission(f"the file cannot be read ({type(exc).__name__}: {exc})") from None
    student = parse_submission(raw)
    with stage("building the notebook to run"):
        graded, notes = build_graded_notebook(student, refs, nonce,
                                              settings.seed if settings.expected is not None else None)
        record["notes"] = suspicious(student, settings.course_code)
        record["notes"] += sorted({n for n in notes.values() if n and n != "missing"})
        deleted = [e for e, n in notes.items() if n == "missing"]
        if deleted:
            record["notes"].append("exercise cells deleted: " + ", ".join(deleted))
    with stage("preparing the run"):
        tmp = Path(tempfile.mkdtemp(prefix=f"{job.name}-", dir=settings.workdir))
    try:
        work, src, dst = tmp / "work", tmp / "graded_input.ipynb", tmp / "graded_output.ipynb"
        with stage("preparing the run"):
            work.mkdir()
            nbformat.write(graded, src)
        with stage("running the notebook"), OutputWatch(dst, settings.output_bytes, stop) as watch:
            outcome = _run(src, dst, work, settings, watch.halt, record)
        with stage("reading the executed notebook"):
            size = max(watch.size, dst.stat().st_size if dst.exists() else 0)
            executed = _read_back(dst, size, settings.output_bytes)
            answers = read_answers(work)
        outcome = _blame_output(outcome, watch.tripped, size, settings)
        with stage("reading the verdicts"):
            record["rows"] = read_verdicts(executed, refs, notes, nonce, outcome.status, outcome.message, answers,
                                           settings.expected)
            # the run completed, past a cell that failed: each exercise was judged as the run left it, and the
            # submission's status says which cell failed
            failed = continued_error(executed, nonce) if outcome.status == "completed" and executed is not None else ""
            if failed:
                outcome.status, outcome.message = "error", failed
        if executed is not None and outcome.status != "interrupted":
            with stage("storing the executed notebook"):
                stamp_verdicts(executed, record["rows"], nonce)
                cap_outputs(executed, settings.output_bytes)
                text = notebook_text(nbformat.from_dict(clean(executed)))
                atomic_write(out / "notebooks" / f"{job.name}.ipynb", text)
                record["notebook_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["status"] = outcome.status
    record["message"] = outcome.message
    record["seconds"] = round(outcome.seconds, 1)
    record["peak_memory_gib"] = round(outcome.peak_rss / 2**30, 2)
    record["isolation"] = outcome.isolation


LIMIT_FLAGS = {"memory": "--memory", "timeout": "--timeout", "files": "--files", "output-limit": "--output-limit"}


def expected_answers(reference_nb, refs: list[RefExercise], settings: Settings) -> dict[str, dict]:
    """The reference's own answers on the batch's seed, by exercise: the reference notebook, solutions and all, run
    once as a submission would be (`settings.seed`, its limits, the sandbox), but for the course's cache, which this
    trusted run may write: what it trains once, every submission then reads instead of training it again."""
    import nbformat

    from ...errors import GradingError

    judged = [ex.id for ex in refs if ex.answer is not None]
    graded, _ = build_graded_notebook(reference_nb, refs, secrets.token_hex(16), settings.seed, go_on=False)
    tmp = Path(tempfile.mkdtemp(prefix="reference-", dir=settings.workdir))
    try:
        work, src, dst = tmp / "work", tmp / "reference_input.ipynb", tmp / "reference_output.ipynb"
        work.mkdir()
        nbformat.write(graded, src)
        outcome = _run(src, dst, work, settings, threading.Event(), {}, writable_cache=True)
        answers = read_answers(work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bad = {ex: answers.get(ex) for ex in judged if "answer" not in answers.get(ex, {})}
    if bad and outcome.status in LIMIT_FLAGS:  # the reference itself needs more than the batch allows
        raise GradingError(f"the reference notebook passed a limit of this batch before its answers: "
                           f"{outcome.message} Fix: raise {LIMIT_FLAGS[outcome.status]} (every submission needs at "
                           f"least what the reference needs), e.g. to 1.5 times what it used.")
    if bad:
        raise GradingError(f"the reference notebook gave no answer to exercise(s) {', '.join(bad)} (its run: "
                           f"{outcome.status} {outcome.message}; what it recorded: {list(bad.values())}). Fix: run the "
                           f"reference notebook, then each answer spec's code after its exercise cell, with "
                           f"rng = numpy.random.default_rng(0), and mend what fails.")
    return {ex: answers[ex] for ex in judged}


def _run(src: Path, dst: Path, work: Path, settings: Settings, halt: threading.Event, record: dict,
         writable_cache: bool = False):
    from ..sandbox import run_notebook

    extra = {"writable_cache": True} if writable_cache else {}  # the reference run only
    for _attempt in range(3):  # a kernel that fails to start is the machine's fault, not the student's
        outcome = run_notebook(src, dst, work, settings.parameters, settings.timeout, settings.memory_bytes,
                               settings.env, halt, sandboxed=True, files_bytes=settings.files_bytes, **extra)
        if outcome.status != "failed to start":
            break
    if outcome.status == "failed to start":
        outcome.status, outcome.message = "crashed", f"the kernel did not start ({outcome.message})."
        record["retry"] = True  # the grader's trouble, not the student's: a rerun grades it again
    return outcome


def _read_back(dst: Path, size: int, output_bytes: int):
    """The executed notebook, or None when there is none, it was cut short, or it is too large to read."""
    import nbformat

    if not dst.exists() or size > max(READ_BYTES, 16 * output_bytes):
        return None
    try:
        return nbformat.read(dst, as_version=4)
    except Exception:  # killed while papermill was writing, or before it wrote anything
        return None


def _blame_output(outcome, tripped: bool, size: int, settings: Settings):
    """The run's outcome, as ``output-limit`` when output was the true cause of how it ended.

    That is when the watch stopped it, when its notebook passed the limit and the run then failed, or when it "timed
    out" before its time limit: the runner gave up waiting for output that came faster than it could take it.
    """
    limit, seconds = settings.output_bytes, outcome.seconds
    fix = "Fix: print less (a summary every few steps, not every step; no large arrays)."
    if tripped and outcome.status == "interrupted":
        outcome.message = (f"the notebook's output passed the limit of {mib(limit)} ({mib(size)} after {seconds:.0f} "
                           f"s): the run was stopped. {fix}")
    elif size > limit and outcome.status not in ("completed", "interrupted"):
        outcome.message = (f"the notebook wrote {mib(size)} of output, over the limit of {mib(limit)}; the run ended "
                           f"after {seconds:.0f} s, reported as {outcome.status}: {outcome.message} {fix}")
    elif outcome.status == "timeout" and seconds < settings.timeout:
        outcome.message = (f"the notebook's output ({mib(size)} saved) came faster than the grader could take it: "
                           f"the runner gave up after {seconds:.0f} s, before the time limit of "
                           f"{settings.timeout:g} s, and reported: {outcome.message} {fix}")
    else:
        return outcome
    outcome.status = "output-limit"
    return outcome
