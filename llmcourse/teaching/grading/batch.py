"""Grading: the batch. `grade(submissions, notebook, out)` runs the stages for every submission.

Results land in `out` as each submission finishes (`results/NAME.json`, `notebooks/NAME.ipynb`, and the rebuilt
`report.csv`, `summary.csv`, `report.html`), all written atomically, so an interrupted batch loses nothing and a
rerun grades only what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ...errors import ConfigError, GradingError
from ...files import atomic_write, cache_key
from ..notebooks import read_notebook
from .assemble import checks_source
from .execute import Job, grade_one, submission_name
from .reference import exercise_points, reference_exercises
from .report import load_records, write_reports

__all__ = ["grade"]


def grade(submissions: list[str | Path], notebook: str | Path, out: str | Path = "grades", jobs: int = 1,
          timeout: float = 600.0, memory_gib: float | None = 4.0, parameters: dict | None = None,
          force: bool = False, progress: bool = True, syllabus: str | Path | None = None) -> list[dict]:
    """Grade `submissions` of `notebook` (the instructor's reference) into `out`; return every record in `out`.

    Each submission runs in its own process and kernel with `timeout` seconds and `memory_gib` GiB of resident memory.
    Submissions graded before with the same file, reference, parameters and limits are skipped unless `force`.
    """
    reference = Path(notebook)
    if not reference.exists():
        from ..syllabus import project_root

        try:
            reference = project_root() / notebook
        except ConfigError:
            pass
    if not reference.exists():
        raise GradingError(f"reference notebook {notebook} not found. Fix: give its path, e.g. "
                           "--notebook week01/02_attention_from_scratch.ipynb.")
    if jobs < 1 or timeout <= 0 or (memory_gib is not None and memory_gib <= 0):
        raise GradingError(f"--jobs ({jobs}), --timeout ({timeout}) and --memory ({memory_gib}) must be positive. "
                           "Fix: pass numbers above 0.")
    ref_nb = read_notebook(reference)
    refs = reference_exercises(ref_nb, exercise_points(reference, ref_nb, syllabus))
    out = Path(out)
    parameters = dict(parameters or {})
    settings = json.dumps([parameters, timeout, memory_gib], sort_keys=True, default=str).encode()
    ref_digest = cache_key([reference.read_bytes(), checks_source().encode(), settings], length=40)
    jobs_list: list[Job] = []
    names: dict[str, Path] = {}
    for sub in map(Path, submissions):
        if not sub.is_file():
            raise GradingError(f"submission {sub} is not a file. Fix: give the paths of the students' .ipynb files.")
        name = submission_name(sub, reference)
        if name in names:
            raise GradingError(f"{names[name]} and {sub} would both be reported as {name!r}: rename one, or put each "
                               f"student's notebook in a folder named after the student.")
        names[name] = sub
        jobs_list.append(Job(name, sub, cache_key([sub.read_bytes(), ref_digest], length=40)))
    for record in load_records(out):
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
        from ..sandbox import warm_up

        warm_up()
    stop = threading.Event()
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        from tqdm.auto import tqdm

        futures = {pool.submit(grade_one, job, refs, reference, out, parameters, timeout, memory_bytes, env, stop): job
                   for job in todo}
        with tqdm(total=len(todo), desc="grading", unit="notebook", disable=not progress or not todo) as bar:
            for future in as_completed(futures):
                record = future.result()
                if record["status"] != "interrupted":
                    with lock:
                        atomic_write(out / "results" / f"{record['submission']}.json", json.dumps(record, indent=1))
                        write_reports(out, reference.name)
                bar.set_postfix_str(f"{record['submission']}: {record['status']}")
                bar.update()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return write_reports(out, reference.name)


