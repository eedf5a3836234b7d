"""Grading: the batch. `grade(submissions, notebook, out)` runs the stages for every submission.

Results land in `out` as each submission finishes (`results/NAME.json`, signed, `notebooks/NAME.ipynb`, and the
rebuilt `report.csv`, `summary.csv`, `report.html`), all written atomically, so an interrupted batch loses nothing and
a rerun grades only what is missing, changed, failed by the grader, or no longer carries a valid signature. One
submission's failure, of whatever kind, becomes its own status: the rest of the batch goes on. Submissions run in
local processes (`jobs` at once), or on a Dask cluster (`scheduler`, see `distributed`); either way only this process
writes into `out`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from ...errors import ConfigError, GradingError
from ...files import atomic_write, cache_key
from ..notebooks import read_notebook
from .assemble import checks_source, code_of
from .execute import Job, Settings, expected_answers, failed_record, grade_one, submission_name
from .failures import StageFailed, stage
from .judge import new_seed
from .limits import FILES_LIMIT_GIB, OUTPUT_LIMIT_MIB, thread_env
from .reference import RefExercise, exercise_points, reference_exercises
from .report import load_records, write_reports
from .signing import batch_key, sign, verify
from .workdir import batch_workdir

__all__ = ["grade"]


def grade(submissions: list[str | Path], notebook: str | Path, out: str | Path = "grades", jobs: int = 1,
          timeout: float = 600.0, memory_gib: float | None = 4.0, parameters: dict | None = None,
          force: bool = False, progress: bool = True, syllabus: str | Path | None = None,
          output_mib: float | None = None, scheduler: str | None = None,
          files_gib: float = FILES_LIMIT_GIB) -> list[dict]:
    """Grade `submissions` of `notebook` (the instructor's reference) into `out`; return every record in `out`.

    Each submission runs in its own process and kernel with `timeout` seconds, `memory_gib` GiB of resident memory,
    `output_mib` MiB of output (default `OUTPUT_LIMIT_MIB`) and `files_gib` GiB of files. Submissions graded before
    with the same file, reference, parameters and limits, whose signed record is intact, are skipped unless `force`.
    With `scheduler` (a Dask scheduler's address, or ``local:N``) the submissions run on that cluster's workers
    instead, `jobs` unused.
    """
    if scheduler is not None:
        from .distributed import local_workers, require_dask

        local_workers(scheduler)  # a malformed local:N, and a missing Dask, are said before any work
        require_dask()
    reference = _find_reference(notebook)
    output_mib = OUTPUT_LIMIT_MIB if output_mib is None else output_mib
    if jobs < 1 or timeout <= 0 or (memory_gib is not None and memory_gib <= 0) or output_mib <= 0 or files_gib <= 0:
        raise GradingError(f"--jobs ({jobs}), --timeout ({timeout}), --memory ({memory_gib}), --output-limit "
                           f"({output_mib}) and --files ({files_gib}) must be positive. Fix: pass numbers above 0.")
    ref_nb = read_notebook(reference)
    refs = reference_exercises(ref_nb, exercise_points(reference, ref_nb, syllabus))
    out = Path(out)
    parameters = dict(parameters or {})
    limits = json.dumps([parameters, timeout, memory_gib, output_mib, files_gib], sort_keys=True, default=str).encode()
    ref_digest = cache_key([reference.read_bytes(), checks_source().encode(), limits], length=40)
    jobs_list = _jobs(submissions, reference, ref_digest)
    for record in load_records(out):
        if record.get("notebook") != reference.name:
            raise GradingError(f"{out} holds grades of {record.get('notebook')}, not {reference.name}: use one output "
                               f"folder per notebook.")
    key = batch_key(out)
    todo, unverified = [], 0
    for job in jobs_list:
        state = "regrade" if force else _state(out, job, key)
        unverified += state == "unverified"
        if state != "graded":
            todo.append(job)
    shutil.rmtree(out / ".work", ignore_errors=True)  # where kernels ran before they moved out of `out`
    if len(todo) < len(jobs_list):
        print(f"{len(jobs_list) - len(todo)} submission(s) already graded in {out}: skipped (use --force to regrade).")
    if unverified:
        print(f"{unverified} stored result(s) in {out} failed their signature check: graded again.")
    env = thread_env(jobs)
    store = _Store(out, reference.name, key)
    if not todo:
        return store.reports()
    judged = any(ex.answer is not None for ex in refs)
    if scheduler is None or judged:  # the runner's process server, started before the first submission's clock
        from ..sandbox import warm_up

        warm_up()
    limits_of = dict(timeout=timeout, parameters=parameters, output_bytes=int(output_mib * 2**20), seed=new_seed(),
                     memory_bytes=int(memory_gib * 2**30) if memory_gib else None, course_code=code_of(ref_nb),
                     files_bytes=int(files_gib * 2**30))
    expected = None
    if judged:  # the reference's own answers on this batch's secret seed
        with batch_workdir(out) as workdir:
            expected = expected_answers(ref_nb, refs, Settings(workdir=workdir, env=env, **limits_of))
    if scheduler is not None:
        _grade_on_cluster(scheduler, todo, refs, reference, store, progress,
                          Settings(workdir=Path(), expected=expected, **limits_of))  # each worker its own folder
        return store.reports()
    stop = threading.Event()
    with batch_workdir(out) as workdir:
        settings = Settings(workdir=workdir, env=env, expected=expected, **limits_of)
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            from tqdm.auto import tqdm

            futures = {pool.submit(grade_one, job, refs, reference, out, settings, stop): job for job in todo}
            with tqdm(total=len(todo), desc="grading", unit="notebook", disable=not progress) as bar:
                for future in as_completed(futures):
                    record = _result(future, futures[future], refs, reference)
                    if record["status"] != "interrupted":
                        record = store.save(record, futures[future], refs, reference)
                        store.reports()
                    bar.set_postfix_str(f"{record['submission']}: {record['status']}")
                    bar.update()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    return store.reports()


def _grade_on_cluster(scheduler: str, todo: list[Job], refs: list[RefExercise], reference: Path, store: _Store,
                      progress: bool, settings: Settings) -> None:
    """Grade `todo` on the Dask cluster at `scheduler`; store each result here as it comes back."""
    from tqdm.auto import tqdm

    from .distributed import Cluster

    with Cluster(scheduler) as cluster, tqdm(total=len(todo), desc="grading", unit="notebook",
                                             disable=not progress) as bar:
        for job, record, text, starts in cluster.results(todo, refs, reference, settings):
            if starts > 1:
                record["attempts"] = starts
                tqdm.write(f"{job.name}: started {starts} times on the cluster (a worker was lost or the task failed)")
            if text is not None:
                record = store.save_notebook(record, text, job, refs, reference)
            record = store.save(record, job, refs, reference)
            store.reports()
            bar.set_postfix_str(f"{record['submission']}: {record['status']}")
            bar.update()


def _find_reference(notebook: str | Path) -> Path:
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
    return reference


def _jobs(submissions: list[str | Path], reference: Path, ref_digest: str) -> list[Job]:
    jobs: list[Job] = []
    names: dict[str, Path] = {}
    for sub in map(Path, submissions):
        if not sub.is_file():
            raise GradingError(f"submission {sub} is not a file. Fix: give the paths of the students' .ipynb files.")
        name = submission_name(sub, reference)
        if name in names:
            raise GradingError(f"{names[name]} and {sub} would both be reported as {name!r}: rename one, or put each "
                               f"student's notebook in a folder named after the student.")
        names[name] = sub
        try:
            content: bytes | str = sub.read_bytes()
        except OSError as exc:  # graded as invalid, with this cause; a readable file later gets another key
            content = f"{type(exc).__name__}: {exc}"
        jobs.append(Job(name, sub, cache_key([content, ref_digest], length=40)))
    return jobs


def _state(out: Path, job: Job, key: bytes) -> str:
    """graded (an intact record of this very file and setup), unverified (a record that fails its signature check),
    or regrade (none, another file or setup, or the grader's own trouble last time)."""
    path = out / "results" / f"{job.name}.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "regrade"
    except (OSError, ValueError):
        return "unverified"
    if not verify(previous, key) or previous.get("submission") != job.name:
        return "unverified"
    if previous.get("key") != job.key or previous.get("retry"):
        return "regrade"
    digest = previous.get("notebook_sha256")
    if digest:
        try:
            stored = hashlib.sha256((out / "notebooks" / f"{job.name}.ipynb").read_bytes()).hexdigest()
        except OSError:
            stored = None
        if stored != digest:
            return "unverified"
    return "graded"


def _result(future, job: Job, refs: list[RefExercise], reference: Path) -> dict:
    """The record the future computed; a failure that escaped every stage becomes the submission's own status."""
    try:
        return future.result()
    except Exception as exc:
        return failed_record(job, refs, reference, StageFailed("grading this submission", exc))


class _Store:
    """The batch's output folder: signed records, the records that could not be stored, and the reports."""

    def __init__(self, out: Path, notebook: str, key: bytes):
        self.out, self.notebook, self.key = out, notebook, key
        self.unsaved: dict[str, dict] = {}  # shown in the reports and returned until a rerun stores them
        self.warned = False

    def save(self, record: dict, job: Job, refs: list[RefExercise], reference: Path) -> dict:
        """Store `record` signed; when that fails, keep it unsaved with status disk or error, and return that."""
        try:
            with stage("storing the result"):
                text = json.dumps(sign(record, self.key), indent=1)
                atomic_write(self.out / "results" / f"{record['submission']}.json", text)
        except StageFailed as failure:
            record = failed_record(job, refs, reference, failure, record)
            self.unsaved[record["submission"]] = record
            return record
        self.unsaved.pop(record["submission"], None)
        if "notebook_sha256" not in record:  # no notebook this time: an older one would not match the result
            with contextlib.suppress(OSError):
                (self.out / "notebooks" / f"{record['submission']}.ipynb").unlink(missing_ok=True)
        return record

    def save_notebook(self, record: dict, text: str, job: Job, refs: list[RefExercise], reference: Path) -> dict:
        """Store the executed notebook `text` of `record` (one graded elsewhere) and its hash in the record; when that
        fails, return the record of that failure (status disk or error)."""
        try:
            with stage("storing the executed notebook"):
                atomic_write(self.out / "notebooks" / f"{record['submission']}.ipynb", text)
        except StageFailed as failure:
            return failed_record(job, refs, reference, failure, record)
        return {**record, "notebook_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}

    def reports(self) -> list[dict]:
        """Every record (the stored ones, checked, then those not stored); the reports written when they can be (a
        failure to write them is said once, and the records are still returned)."""
        records = {r["submission"]: r for r in load_records(self.out, self.key)}
        records.update(self.unsaved)
        merged = sorted(records.values(), key=lambda r: r["submission"])
        try:
            write_reports(self.out, self.notebook, merged)
        except OSError as exc:
            if not self.warned:
                print(f"could not write the reports in {self.out} ({type(exc).__name__}: {exc}). Fix: free space on "
                      "that disk and run the same command again: finished results are kept.", file=sys.stderr)
            self.warned = True
        return merged
