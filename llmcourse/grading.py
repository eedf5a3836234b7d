"""Batch grading of student notebooks: `llmcourse grade SUBMISSION... --notebook weekNN/NN_name.ipynb --out DIR`.

Introduced with grading (`docs/grading.md`). For each submission:

1. the grader builds the notebook to run: the student's cells without their check cells, and after each of the
   student's exercise cells the instructor's check cell for that exercise, taken from the reference notebook and
   matched by exercise id (through the cell id that `llmcourse release` keeps, else the code around the solution);
2. each inserted check cell first rebuilds `llmcourse.checks` from the grader's copy of its source, undoing what the
   student's cells may have done to `check`, to the module, to the import system or to IPython's display;
3. `llmcourse.sandbox` runs it with papermill in its own process, kernel and temporary folder (timeout, memory
   limit, hubs offline, parameters injected);
4. verdicts are read only from the outputs of the inserted check cells, found by a random per-run nonce in their
   metadata, which code running in the kernel cannot change. Anything a student's cell prints is ignored.

Results land in DIR as each submission finishes (`results/NAME.json`, `notebooks/NAME.ipynb`, and the rebuilt
`report.csv`, `summary.csv`, `report.html`), all written atomically, so an interrupted batch loses nothing and a
rerun grades only what is missing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

try:
    import nbformat
except ImportError:  # the course extras are not installed: the commands say so when run
    nbformat = None

from llmcourse import checks
from llmcourse.errors import GradingError
from llmcourse.release import BEGIN, END

__all__ = ["STATUSES", "build_graded_notebook", "exercise_points", "grade"]

STATUSES = {
    "passed": "the check passed",
    "failed": "the check ran and rejected the answer",
    "not attempted": "the exercise still holds the stub",
    "missing": "the exercise cell was deleted",
    "error": "the notebook stopped with an error before the check, or the check cell itself raised",
    "timeout": "the run passed its time limit before the check",
    "memory": "the run passed its memory limit before the check",
    "crashed": "the kernel died before the check (os._exit, segfault)",
    "invalid": "the submission is not a notebook",
    "tampered": "code that ran during the check emitted results of its own",
    "interrupted": "the batch was stopped before this submission finished (not saved; rerun to grade it)",
}
CHECK_CALL = re.compile(r"""\bcheck\(\s*['"](\d+\.\d+)['"]""")
GRADER_KEY = "llmcourse_grader"
REPORT_FIELDS = ["submission", "exercise", "status", "points", "max_points", "message"]
SUMMARY_FIELDS = ["submission", "status", "score", "max_score", "seconds", "notes"]
SUSPICIOUS = [  # (pattern over the student's own code cells, note for the instructor)
    (r"llmcourse\s*\.\s*checks|from\s+llmcourse\s+import\s+[^\n]*\bchecks\b", "uses llmcourse.checks"),
    (r"^\s*def\s+(check|expect\w*|_emit|_run)\s*\(|^\s*(check|expect\w*|_emit|_run)\s*=", "redefines a check helper"),
    (r"vnd\.llmcourse|RESULT_MIME|CheckResult", "writes check results"),
    (r"sys\s*\.\s*modules|__import__|importlib|\bbuiltins\b|__builtins__", "touches the import system or builtins"),
    (r"display_pub|display_functions|\.events\s*\.\s*register|displayhook", "touches IPython's display or events"),
    (r"_llmcourse_grader|llmcourse_grader", "touches the grader"),
]


# ---------------------------------------------------------------- the syllabus and the reference notebook
def exercise_points(notebook: str | Path, nb: nbformat.NotebookNode | None = None,
                    syllabus: str | Path | None = None) -> dict[str, float]:
    """Points of each exercise of `notebook`: from its entry in curriculum/syllabus.yaml, else from the notebook's
    metadata ``llmcourse.points`` ({"1.1": 2, ...}), else one point per check cell."""
    from llmcourse.errors import ConfigError
    from llmcourse.syllabus import load_syllabus, notebook_entry

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


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _skeleton(source: str) -> list[str]:
    """The lines of an exercise cell outside its solution region: what the student copy still shows."""
    lines, inside = [], False
    for line in source.splitlines():
        s = line.strip()
        if s == BEGIN:
            inside = True
        elif s == END:
            inside = False
        elif not inside and s and not s.startswith("#"):
            lines.append(s)
    return lines


@dataclass
class RefExercise:
    """One exercise of the reference notebook."""

    id: str
    points: float
    exercise_cell: nbformat.NotebookNode
    check_cell: nbformat.NotebookNode
    skeleton: list[str] = field(default_factory=list)


def reference_exercises(nb: nbformat.NotebookNode, points: dict[str, float]) -> list[RefExercise]:
    """The exercises of the reference notebook: each check cell and the nearest exercise cell above it."""
    found: list[RefExercise] = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "check" not in _tags(cell):
            continue
        ids = CHECK_CALL.findall(_source(cell))
        if len(ids) != 1:
            raise GradingError(f"reference check cell {i} calls check() for {len(ids)} exercises; exactly one is "
                               f"needed (write one check cell per exercise).")
        above = [c for c in nb.cells[:i] if c.cell_type == "code" and "exercise" in _tags(c)]
        if not above:
            raise GradingError(f"reference check cell of exercise {ids[0]} has no cell tagged 'exercise' above it.")
        found.append(RefExercise(ids[0], float(points.get(ids[0], 1.0)), above[-1], cell,
                                 _skeleton(_source(above[-1]))))
    if len({e.id for e in found}) != len(found):
        raise GradingError("the reference notebook checks the same exercise id twice.")
    if not found:
        raise GradingError("the reference notebook has no check cell (a cell tagged 'check' calling "
                           "check(\"N.M\", ...)).")
    return found


# ---------------------------------------------------------------- building the notebook to run
def _checks_source() -> str:
    return Path(checks.__file__).read_text(encoding="utf-8")


def _init_cell(nonce: str) -> nbformat.NotebookNode:
    src = f'''# Added by llmcourse grade: keep what the checks rely on, before any of the student's code runs.
def _llmcourse_grader_setup(source):
    import builtins, sys, types
    import IPython.display, IPython.core.display_functions as df
    shell = get_ipython()
    keep = dict(importer=builtins.__import__, display=df.display, pub=shell.display_pub)
    def restore():
        builtins.__import__ = keep["importer"]
        IPython.display.display = df.display = keep["display"]
        shell.display_pub = keep["pub"]
        vars(keep["pub"]).pop("publish", None)
        fresh = types.ModuleType("llmcourse.checks")
        fresh.__file__ = "llmcourse/checks.py"
        sys.modules["llmcourse.checks"] = fresh
        exec(compile(source, fresh.__file__, "exec"), fresh.__dict__)
        import llmcourse
        llmcourse.checks = fresh
    grader = types.ModuleType("_llmcourse_grader_{nonce}")
    grader.restore = restore
    sys.modules[grader.__name__] = grader
_llmcourse_grader_setup({_checks_source()!r})
del _llmcourse_grader_setup'''
    return _grader_cell(src, nonce, "init", "")


def _grader_cell(source: str, nonce: str, role: str, exercise: str, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata[GRADER_KEY] = {"nonce": nonce, "role": role, "exercise": exercise}
    if tags:
        cell.metadata["tags"] = list(tags)
    if role == "init":
        cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def _check_cell(ex: RefExercise, nonce: str) -> nbformat.NotebookNode:
    restore = f'import sys; sys.modules["_llmcourse_grader_{nonce}"].restore()  # added by llmcourse grade\n'
    return _grader_cell(restore + _source(ex.check_cell), nonce, "check", ex.id, tags=("raises-exception",))


def _match(cells: list, refs: list[RefExercise]) -> dict[str, list[int]]:
    """Indices of the student's cells that hold each exercise: same cell id, else an exercise cell with its code."""
    by_id = {ex.exercise_cell.get("id"): ex.id for ex in refs if ex.exercise_cell.get("id")}
    matches: dict[str, list[int]] = {ex.id: [] for ex in refs}
    for i, cell in enumerate(cells):
        if cell.get("id") in by_id:
            matches[by_id[cell["id"]]].append(i)
    for ex in refs:
        if not ex.skeleton:
            continue
        for i, cell in enumerate(cells):
            if i in matches[ex.id] or cell.get("id") in by_id and by_id[cell["id"]] != ex.id:
                continue
            lines = {line.strip() for line in _source(cell).splitlines()}
            is_exercise = "exercise" in _tags(cell) or "# YOUR CODE HERE" in lines or BEGIN in lines
            if is_exercise and ex.skeleton[0] in lines:
                matches[ex.id].append(i)
        matches[ex.id].sort()
    return matches


def build_graded_notebook(student: nbformat.NotebookNode, refs: list[RefExercise], nonce: str
                          ) -> tuple[nbformat.NotebookNode, dict[str, str]]:
    """The notebook to run, and a note per exercise on how its cell was found ("" when all is as released)."""
    known = {ex.id for ex in refs}
    kept = [c for c in student.cells if not (c.cell_type == "code" and "check" in _tags(c))]
    matches = _match(kept, refs)
    matched = {i for found in matches.values() for i in found}
    kept_cells = [(i, c) for i, c in enumerate(kept)
                  if i in matched or not (c.cell_type == "code" and set(CHECK_CALL.findall(_source(c))) & known)]
    notes: dict[str, str] = {}
    last = {ex.id: matches[ex.id][-1] for ex in refs if matches[ex.id]}
    order = [ex.id for ex in refs if ex.id in last]
    in_order = sorted(order, key=lambda e: last[e])
    for ex in refs:
        found = matches[ex.id]
        if not found:
            notes[ex.id] = "missing"
        elif len(found) > 1:
            notes[ex.id] = f"duplicated exercise cell ({len(found)} copies): graded the last one"
        elif order.index(ex.id) != in_order.index(ex.id):
            notes[ex.id] = "exercise cells reordered: checked right after this one"
        else:
            notes[ex.id] = ""
    after = {i: ex for ex in refs for i in [last.get(ex.id)] if i is not None}
    cells = [_init_cell(nonce)]
    for i, cell in kept_cells:
        cell = nbformat.from_dict(cell)
        cell.metadata.pop(GRADER_KEY, None)  # only the grader marks cells
        if i in matched:
            cell.metadata["tags"] = sorted(_tags(cell) | {"raises-exception"})
        if i in after:
            cell.metadata[GRADER_KEY] = {"nonce": nonce, "role": "exercise", "exercise": after[i].id}
        cells.append(cell)
        if i in after:
            cells.append(_check_cell(after[i], nonce))
    graded = nbformat.v4.new_notebook(cells=cells, metadata=dict(student.metadata))
    graded.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return graded, notes


def suspicious(student: nbformat.NotebookNode) -> list[str]:
    """Notes on the student's own code that touches the checking machinery (for the instructor to review)."""
    code = "\n".join(_source(c) for c in student.cells if c.cell_type == "code" and "check" not in _tags(c))
    return [note for pattern, note in SUSPICIOUS if re.search(pattern, code, re.MULTILINE)]


# ---------------------------------------------------------------- reading the verdicts back
def _error_text(outputs) -> tuple[str, str] | None:
    for out in outputs:
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def read_verdicts(executed: nbformat.NotebookNode | None, refs: list[RefExercise], notes: dict[str, str],
                  nonce: str, run_status: str, run_message: str) -> list[dict]:
    """One row per exercise from the inserted check cells of the executed notebook (student outputs are ignored)."""
    grader_cells: dict[tuple[str, str], nbformat.NotebookNode] = {}
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
        status, message = _verdict(grader_cells.get(("check", ex.id)), grader_cells.get(("exercise", ex.id)),
                                   ex, note, run_status, run_message or stopped)
        if note and note != "missing" and message:
            message = f"[{note}] {message}"
        elif note and note != "missing":
            message = f"[{note}]"
        rows.append({"exercise": ex.id, "status": status, "points": ex.points if status == "passed" else 0.0,
                     "max_points": ex.points, "message": message})
    return rows


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
    if err:
        return ("memory" if err[0] == "MemoryError" else "error"), f"the check cell raised {err[0]}: {err[1]}"
    if run_status == "completed":
        return "error", "the check cell ran but recorded no result."
    return run_status, run_message


# ---------------------------------------------------------------- one submission
def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def submission_name(path: Path, reference: Path) -> str:
    """The student's name in the report: the file name, or its folder's name when the file keeps the notebook's
    name (one folder per student: ``alice/02_attention.ipynb`` is ``alice``)."""
    stem = path.name[:-6] if path.name.endswith(".ipynb") else path.name
    if stem == reference.stem and path.resolve().parent.name:
        stem = path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)


@dataclass
class _Job:
    name: str
    path: Path
    key: str


def _atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)


def _grade_one(job: _Job, refs: list[RefExercise], reference: Path, out: Path, parameters: dict, timeout: float,
               memory_bytes: int | None, env: dict, stop: threading.Event) -> dict:
    from llmcourse.sandbox import run_notebook

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
            _atomic_write(out / "notebooks" / f"{job.name}.ipynb", nbformat.writes(executed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["status"] = outcome.status
    record["message"] = outcome.message
    record["seconds"] = round(outcome.seconds, 1)
    record["peak_memory_gib"] = round(outcome.peak_rss / 2**30, 2)
    record["rows"] = read_verdicts(executed, refs, notes, nonce, outcome.status, outcome.message)
    return record


# ---------------------------------------------------------------- reports
def _load_records(out: Path) -> list[dict]:
    records = []
    for path in sorted((out / "results").glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return sorted(records, key=lambda r: r["submission"])


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(x: float) -> str:
    return f"{x:g}"


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per submission: submission, status, score, max_score, seconds, notes."""
    return [{"submission": r["submission"], "status": r["status"],
             "score": _fmt(sum(row["points"] for row in r["rows"])),
             "max_score": _fmt(sum(row["max_points"] for row in r["rows"])), "seconds": r["seconds"],
             "notes": "; ".join(r.get("notes", []))} for r in records]


def report_rows(records: list[dict]) -> list[dict]:
    """One row per submission and exercise."""
    return [{"submission": r["submission"], **row, "points": _fmt(row["points"]), "max_points": _fmt(row["max_points"])}
            for r in records for row in r["rows"]]


_COLORS = {"passed": "#d8f3dc", "failed": "#ffe5d9", "not attempted": "#eeeeee", "completed": "#d8f3dc"}


def _html(records: list[dict], notebook: str) -> str:
    def cell(value, status=None) -> str:
        style = f' style="background:{_COLORS.get(status, "#ffd6d6")}"' if status else ""
        return f"<td{style}>{html.escape(str(value))}</td>"

    summary = summary_rows(records)
    parts = ["<!doctype html><meta charset='utf-8'><title>Grades</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style>",
             f"<h1>Grades: {html.escape(notebook)}</h1>",
             "<table><tr>" + "".join(f"<th>{f}</th>" for f in ["submission", "status", "score", "seconds", "notes"])
             + "</tr>"]
    for s in summary:
        link = f"<a href='notebooks/{html.escape(s['submission'])}.ipynb'>{html.escape(s['submission'])}</a>"
        parts.append(f"<tr><td>{link}</td>{cell(s['status'], s['status'])}{cell(s['score'] + ' / ' + s['max_score'])}"
                     f"{cell(s['seconds'])}{cell(s['notes'])}</tr>")
    heads = ["submission", "exercise", "status", "points", "message"]
    parts.append("</table><h2>Exercises</h2><table><tr>" + "".join(f"<th>{f}</th>" for f in heads) + "</tr>")
    for row in report_rows(records):
        parts.append(f"<tr>{cell(row['submission'])}{cell(row['exercise'])}{cell(row['status'], row['status'])}"
                     f"{cell(row['points'] + ' / ' + row['max_points'])}{cell(row['message'])}</tr>")
    parts.append("</table><p>Statuses: " + "; ".join(f"<b>{k}</b>: {v}" for k, v in STATUSES.items()) + ".</p>")
    return "\n".join(parts) + "\n"


def write_reports(out: Path, notebook: str) -> list[dict]:
    """Rebuild report.csv, summary.csv and report.html in `out` from its results folder."""
    records = _load_records(out)
    _atomic_write(out / "report.csv", _csv(report_rows(records), REPORT_FIELDS))
    _atomic_write(out / "summary.csv", _csv(summary_rows(records), SUMMARY_FIELDS))
    _atomic_write(out / "report.html", _html(records, notebook))
    return records


# ---------------------------------------------------------------- the batch
def grade(submissions: list[str | Path], notebook: str | Path, out: str | Path = "grades", jobs: int = 1,
          timeout: float = 600.0, memory_gib: float | None = 4.0, parameters: dict | None = None,
          force: bool = False, progress: bool = True, syllabus: str | Path | None = None) -> list[dict]:
    """Grade `submissions` of `notebook` (the instructor's reference) into `out`; return every record in `out`.

    Each submission runs in its own process and kernel with `timeout` seconds and `memory_gib` GiB of resident memory.
    Submissions graded before with the same file, reference, parameters and limits are skipped unless `force`.
    """
    if nbformat is None:
        raise GradingError("grading needs nbformat and papermill: pip install 'llmcourse[course]'.")
    reference = Path(notebook)
    if not reference.exists():
        from llmcourse.errors import ConfigError
        from llmcourse.syllabus import project_root

        try:
            reference = project_root() / notebook
        except ConfigError:
            pass
    if not reference.exists():
        raise GradingError(f"reference notebook {notebook} not found (give its path, e.g. week01/02_attention.ipynb).")
    if jobs < 1 or timeout <= 0 or (memory_gib is not None and memory_gib <= 0):
        raise GradingError(f"--jobs ({jobs}), --timeout ({timeout}) and --memory ({memory_gib}) must be positive.")
    ref_nb = nbformat.read(reference, as_version=4)
    refs = reference_exercises(ref_nb, exercise_points(reference, ref_nb, syllabus))
    out = Path(out)
    parameters = dict(parameters or {})
    settings = json.dumps([parameters, timeout, memory_gib], sort_keys=True, default=str).encode()
    ref_digest = _digest(reference.read_bytes(), _checks_source().encode(), settings)
    jobs_list: list[_Job] = []
    names: dict[str, Path] = {}
    for sub in map(Path, submissions):
        if not sub.is_file():
            raise GradingError(f"submission {sub} is not a file.")
        name = submission_name(sub, reference)
        if name in names:
            raise GradingError(f"{names[name]} and {sub} would both be reported as {name!r}: rename one, or put each "
                               f"student's notebook in a folder named after the student.")
        names[name] = sub
        jobs_list.append(_Job(name, sub, _digest(sub.read_bytes(), ref_digest.encode())))
    for record in _load_records(out):
        if record.get("notebook") != reference.name:
            raise GradingError(f"{out} holds grades of {record.get('notebook')}, not {reference.name}: use one output "
                               f"folder per notebook.")
    todo = []
    for job in jobs_list:
        done = out / "results" / f"{job.name}.json"
        if not force and done.exists():
            try:
                previous = json.loads(done.read_text(encoding="utf-8"))
                if previous.get("key") == job.key and not previous.get("retry"):
                    continue
            except ValueError:
                pass
        todo.append(job)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / ".work", ignore_errors=True)  # left by a batch that was killed
    if len(todo) < len(jobs_list):
        print(f"{len(jobs_list) - len(todo)} submission(s) already graded in {out}: skipped (use --force to regrade).")
    env = {}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = os.environ.get(var, str(threads))
    memory_bytes = int(memory_gib * 2**30) if memory_gib else None
    if todo:
        from llmcourse.sandbox import warm_up

        warm_up()
    stop = threading.Event()
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        from tqdm.auto import tqdm

        futures = {pool.submit(_grade_one, job, refs, reference, out, parameters, timeout, memory_bytes, env, stop): job
                   for job in todo}
        with tqdm(total=len(todo), desc="grading", unit="notebook", disable=not progress or not todo) as bar:
            for future in as_completed(futures):
                record = future.result()
                if record["status"] != "interrupted":
                    with lock:
                        _atomic_write(out / "results" / f"{record['submission']}.json", json.dumps(record, indent=1))
                        write_reports(out, reference.name)
                bar.set_postfix_str(f"{record['submission']}: {record['status']}")
                bar.update()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return write_reports(out, reference.name)


# ---------------------------------------------------------------- command line
def _parse_value(text: str):
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, type(None))) else text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `llmcourse grade`."""
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="the students' notebooks (.ipynb)")
    parser.add_argument("--notebook", required=True, help="the reference notebook, e.g. week01/02_attention.ipynb")
    parser.add_argument("--out", default="grades", metavar="DIR", help="output folder (default: grades)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded at once (default: 1)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="wall-clock seconds per submission (default: 600)")
    parser.add_argument("--memory", type=float, default=4.0, metavar="GiB",
                        help="resident memory per submission (default: 4)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a value of the parameters cell, e.g. -p NUM_STEPS 20 (repeatable)")
    parser.add_argument("--force", action="store_true", help="regrade submissions already graded in DIR")


def main(args: argparse.Namespace) -> int:
    """Run `llmcourse grade`; print the summary. Exit code 0, or 130 when interrupted."""
    params = {name: _parse_value(value) for name, value in args.parameter}
    try:
        records = grade(args.submissions, args.notebook, out=args.out, jobs=args.jobs, timeout=args.timeout,
                        memory_gib=args.memory, parameters=params, force=args.force)
    except KeyboardInterrupt:
        print(f"interrupted: finished submissions are saved in {args.out}; run the same command again to grade the "
              "rest.")
        return 130
    width = max([len(r["submission"]) for r in records] + [10])
    for s in summary_rows(records):
        print(f"{s['submission']:<{width}}  {s['status']:<12} {s['score']:>5} / {s['max_score']:<5} "
              f"{s['seconds']:>6} s  {s['notes']}")
    print(f"wrote {Path(args.out) / 'report.csv'}, summary.csv, report.html and notebooks/")
    return 0

