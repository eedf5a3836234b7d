"""Grading on a Dask cluster: `llmcourse grade ... --scheduler ADDRESS`, or ``--scheduler local:N``.

Introduced with grading at scale (`docs/grading.md`, "Scale-out"). Dask does the scheduling; this module only hands it
the same per-submission work as a local batch (`execute.grade_one`) and takes the results back as they finish:

- the grader keeps the key, reads the submissions and writes every result (signed, atomically) and report, as in a
  local batch; a worker gets one submission's bytes and the batch's settings, grades it in its own temporary folders,
  and sends back the record (unsigned) and the executed notebook as text. Workers need the same ``llmcourse`` as the
  grader (checked per submission), not the grader's files;
- a worker that dies mid-task (killed, out of memory, its node gone) loses nothing: the scheduler gives its task to
  another worker, until the task has seen more worker deaths than the scheduler's
  ``distributed.scheduler.allowed-failures`` (``ALLOWED_FAILURES`` on a ``local:N`` cluster; set it on your own
  scheduler). Such a submission is then reported ``error`` and graded again by the next run. A task that raises (the
  grader's own trouble on that worker) is tried ``RETRIES`` more times. Each start of a task is logged as a Dask event
  (topic ``EVENT_TOPIC``), so the grader knows which submission ran more than once;
- Dask counts a worker's death against every task the worker held, those waiting in its queue behind the one that ran
  included. A submission given up for deaths it was not running for (it started fewer times than it was blamed) is
  submitted again under a new key, ``RESUBMITS`` times at most, so that a submission that kills its workers does not
  take the innocent ones queued behind it down with it.

Dask is an optional dependency (the ``grading`` extra), imported only here and only when ``--scheduler`` is given.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

from ...errors import GradingError
from ...files import cache_key
from .assemble import checks_source
from .execute import Job, Settings, failed_record, grade_one
from .failures import StageFailed
from .limits import thread_env
from .reference import RefExercise
from .workdir import batch_workdir

__all__ = ["ALLOWED_FAILURES", "EVENT_TOPIC", "RESUBMITS", "RETRIES", "Cluster", "connect", "grade_remote",
           "local_workers", "require_dask"]

ALLOWED_FAILURES = 2  # worker deaths one submission survives on a local:N cluster (the scheduler's allowed-failures)
RESUBMITS = 2  # further submissions of one given up for worker deaths it was not running for (see above)
RETRIES = 1  # further tries of a task that raised on its worker (never the student's doing: grade_one catches that)
EVENT_TOPIC = "llmcourse-grading"  # one event per start of a task: {"task" (its key), "submission", "worker"}
_LOCAL = re.compile(r"local:(\d+)")


def require_dask():
    """The `distributed` module, or a GradingError that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise GradingError('--scheduler needs Dask (dask[distributed]), which is not installed. Fix: pip install '
                           '"llmcourse[grading]" (make setup installs it), or grade without --scheduler.') from None
    return distributed


def local_workers(scheduler: str) -> int | None:
    """N for ``local:N`` (a local cluster of N worker processes), None for the address of a running scheduler."""
    if not scheduler.startswith("local"):
        return None
    match = _LOCAL.fullmatch(scheduler)
    if not match or int(match.group(1)) < 1:
        raise GradingError(f"--scheduler {scheduler}: expected local:N with N the number of worker processes, e.g. "
                           "local:4, or a scheduler's address such as tcp://HOST:8786.")
    return int(match.group(1))


def connect(scheduler: str):
    """(client, cluster): a client of the scheduler at `scheduler`, or of a LocalCluster started for ``local:N``.

    The local cluster has N single-threaded worker processes, no memory limit of Dask's own (the sandbox limits each
    submission) and ``ALLOWED_FAILURES``; cluster is None for a running scheduler. Its workers, and the kernels they
    start, get this process's environment as it is: none of the variables Dask's nanny sets by default
    (``distributed.nanny.pre-spawn-environ``: one OpenMP/MKL/OpenBLAS thread, glibc trimming every 64 KiB freed),
    which would make a kernel on a worker slower than the same kernel in a local batch (`Cluster` undoes what the
    nanny still writes into this process's environment).
    """
    distributed = require_dask()
    workers = local_workers(scheduler)
    if workers is None:
        try:
            return distributed.Client(scheduler, timeout="30s"), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise GradingError(f"cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}: {exc}). Fix: "
                               "start it (dask scheduler) and give its address as printed, e.g. tcp://HOST:8786, or "
                               "use --scheduler local:N.") from None
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                          "distributed.nanny.pre-spawn-environ": {}}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                                           dashboard_address=None)
    return distributed.Client(cluster), cluster


class Cluster:
    """A connection to the cluster at `scheduler` (or the ``local:N`` one it starts), for one batch.

    Used as a context manager: leaving the block cancels what has not finished and closes the client, and the cluster
    of ``local:N`` (its worker processes end, and the runners with them: `sandbox._die_with_grader`). It also puts
    back this process's environment: the nanny of a ``local:N`` worker runs in this process and writes its worker's
    variables into it before each start (``PYTHONHASHSEED`` and a parent pid even when told to set none), and every
    process started here later (a local batch's kernels, a notebook run) would inherit them.
    """

    def __init__(self, scheduler: str):
        self.environ = dict(os.environ)
        try:
            self.client, self.cluster = connect(scheduler)
        except BaseException:
            _restore(self.environ)
            raise
        self.futures: dict = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.futures:
                self.client.cancel(list(self.futures), force=True)
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            _restore(self.environ)

    def results(self, jobs: list[Job], refs: list[RefExercise], reference: Path,
                settings: Settings) -> Iterator[tuple[Job, dict, str | None, int]]:
        """Grade `jobs` on the workers; yield (job, record, executed notebook text or None, times started) as each
        ends. Nothing is written here. A task that failed on the cluster (its workers kept dying, or it raised)
        yields a ``failed_record`` (status error, graded again by the next run)."""
        from distributed import KilledWorker, as_completed

        digest = cache_key([checks_source().encode()], length=40)
        batch = secrets.token_hex(4)
        keys: dict[str, list[str]] = {}  # submission -> the keys it was submitted under, the latest last

        def submit(job: Job, content: bytes):
            tried = keys.setdefault(job.name, [])
            tried.append(f"llmcourse-grade-{batch}-{job.name}-{len(tried)}")
            future = self.client.submit(grade_remote, job, content, refs, reference, settings, digest, pure=False,
                                        retries=RETRIES, key=tried[-1])
            self.futures[future] = job, content
            return future

        for job in jobs:
            try:
                content = job.path.read_bytes()
            except OSError:  # graded here as invalid, with the cause: grade_one stops at reading the file
                yield job, grade_one(job, refs, reference, Path(), settings), None, 0
                continue
            submit(job, content)
        pending = as_completed(list(self.futures))
        for future in pending:
            job, content = self.futures.pop(future)
            try:
                record, text = future.result()
            except CancelledError as exc:  # the scheduler dropped the batch: not one submission's trouble
                raise GradingError(f"the Dask cluster cancelled the batch ({type(exc).__name__}: {exc}); the results "
                                   "that came back are saved. Fix: check that the scheduler is still running, then "
                                   "run the same command again to grade the rest.") from None
            except KilledWorker as exc:  # its workers kept dying: while it ran, or while it only waited behind
                blamed = exc.allowed_failures + 1  # the deaths counted against it (the scheduler's own setting)
                if _starts(self.client)[future.key] < blamed and len(keys[job.name]) <= RESUBMITS:
                    pending.add(submit(job, content))  # some of them happened while it waited: once more
                    continue
                record, text = failed_record(job, refs, reference, StageFailed("grading it on the cluster", exc)), None
            except Exception as exc:  # an exception raised on the worker (after RETRIES more tries)
                record, text = failed_record(job, refs, reference, StageFailed("grading it on the cluster", exc)), None
            finally:
                future.release()  # its result leaves the worker: a worker lost now costs no recomputation
            starts = _starts(self.client)
            yield job, record, text, sum(starts[key] for key in keys[job.name])


def _restore(environ: dict[str, str]) -> None:
    """Make this process's environment `environ` again, exactly."""
    for name in set(os.environ) - set(environ):
        del os.environ[name]
    os.environ.update(environ)


def _starts(client) -> Counter:
    """How many times each task has started, by task key, from the workers' events."""
    try:
        events = client.get_events(EVENT_TOPIC)
    except Exception:  # the count is informative only
        return Counter()
    return Counter(msg.get("task") for _, msg in events if isinstance(msg, dict))


# ---------------------------------------------------------------- on the worker
def grade_remote(job: Job, content: bytes, refs: list[RefExercise], reference: Path, settings: Settings,
                 checks_digest: str) -> tuple[dict, str | None]:
    """On a worker: grade one submission from its bytes; return its record (unsigned) and executed notebook text."""
    from distributed import get_worker

    from .. import sandbox

    worker = get_worker()
    worker.log_event(EVENT_TOPIC, {"task": worker.get_current_task(), "submission": job.name,
                                   "worker": worker.address})
    if cache_key([checks_source().encode()], length=40) != checks_digest:
        raise GradingError(f"the llmcourse on worker {worker.address} checks differently from the grader's. Fix: "
                           "install the grader's version of llmcourse on every worker.")
    _allow_children()
    env = {**thread_env(worker.state.nthreads), **settings.env}
    sandbox.warm_up()
    # The results folder lies in the batch folder: it holds only this submission's own notebook, written after its
    # kernel has ended, and goes with the folder (a worker that dies leaves it to the next batch's sweep).
    with batch_workdir(Path(os.devnull)) as workdir:  # no output folder on a worker: nothing for the kernels to find
        path = workdir / "submission" / job.path.name
        path.parent.mkdir()
        path.write_bytes(content)
        out = workdir / "result"
        record = grade_one(Job(job.name, path, job.key), refs, reference, out,
                           Settings(workdir=workdir, timeout=settings.timeout, memory_bytes=settings.memory_bytes,
                                    files_bytes=settings.files_bytes,
                                    output_bytes=settings.output_bytes, parameters=settings.parameters, env=env,
                                    seed=settings.seed, expected=settings.expected, course_code=settings.course_code))
        executed = out / "notebooks" / f"{job.name}.ipynb"
        text = executed.read_text(encoding="utf-8") if executed.exists() else None
    record.pop("notebook_sha256", None)  # the grader hashes the notebook it stores
    return record, text


def _allow_children() -> None:
    """Let this worker start the sandbox's runner process. Dask's nanny starts workers as daemon processes
    (``distributed.worker.daemon``), and multiprocessing refuses children to a daemon; the runner still ends with
    the worker, by its own watch on this process."""
    process = multiprocessing.current_process()
    if process.daemon:
        process.daemon = False
