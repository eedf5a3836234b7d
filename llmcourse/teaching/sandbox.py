"""Run one notebook with papermill in a child process, with a wall-clock timeout and a memory limit.

Introduced with grading (`docs/grading.md`); `llmcourse.teaching.grading` runs every submission through
`run_notebook`. The child (a forkserver process) executes the notebook with papermill in its own kernel
(``python3``) and its own working folder, with the hubs switched offline. The parent watches the child's process
tree: past the timeout, or when the tree's resident memory passes the limit, it kills the whole tree. A
resident-memory watchdog is used rather than ``RLIMIT_AS`` because address-space limits break CUDA and memory-mapped
weights, which reserve far more virtual memory than they use. The child also dies with its parent, so an interrupted
batch leaves no kernel spinning.

With `sandboxed` (what grading asks for) the kernel itself runs in the sandbox of `isolation` where the platform
allows one (bubblewrap: its own namespaces, a read-only view of what it needs, a size-limited /tmp, a task limit);
the notebook's runner, its output and its log stay outside. Where it does not, the watchdog above is all there is,
and the outcome says so (`RunOutcome.isolation`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["RunOutcome", "run_notebook", "warm_up"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
               "PYDEVD_DISABLE_FILE_VALIDATION": "1", "TQDM_DISABLE": "1"}
POLL_S = 0.2
MAX_TASKS = 2048  # processes and threads of one run's whole tree (the sandbox's control group, where made, is tighter)
_EXIT = {"completed": 0, "error": 3, "crashed": 4, "failed to start": 5}


@dataclass
class RunOutcome:
    """How a run ended: status is completed, error, timeout, memory, crashed or failed to start."""

    status: str
    message: str
    seconds: float
    peak_rss: int  # bytes, the largest resident size of the process tree seen
    isolation: str = "process"  # what the kernel ran in (`isolation.Isolation.describe`)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _tasks(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.num_threads()
        except psutil.Error:
            pass
    return total


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def run_notebook(input_path: Path, output_path: Path, cwd: Path, parameters: dict | None = None,
                 timeout: float = 600.0, memory_bytes: int | None = None, env: dict | None = None,
                 stop: threading.Event | None = None, sandboxed: bool = False,
                 writable_cache: bool = False, files_bytes: int | None = None) -> RunOutcome:
    """Execute `input_path` into `output_path` in a child process; kill it past `timeout` s, `memory_bytes` RSS, or
    `files_bytes` of files in its working folder `cwd` (its temporary folder, sandboxed, lies there too).

    `stop`, when set by another thread, kills the run at once (an interrupted batch); its status is "interrupted".
    With `sandboxed`, the kernel runs in the best sandbox this machine allows (`isolation.detect`); with
    `writable_cache` too, it may write the course's cache (the reference notebook only: `isolation.kernel_prefix`).
    """
    from . import isolation

    private = Path(tempfile.mkdtemp(prefix="runner-", dir=Path(cwd).parent))  # outside what the kernel sees
    runtime = private / "runtime"
    runtime.mkdir()
    level = isolation.detect() if sandboxed else isolation.Isolation("process", "not sandboxed")
    if level.level == "bubblewrap":
        (Path(cwd) / isolation.TMP_FOLDER).mkdir(exist_ok=True)
    group = isolation.cgroup_create(memory_bytes=memory_bytes) if level.level == "bubblewrap" else None
    outcome_file = private / "outcome.json"
    spec = {"input": str(input_path), "output": str(output_path), "cwd": str(cwd), "outcome": str(outcome_file),
            "parameters": parameters or {}, "cell_timeout": timeout, "log": str(private / "runner.log"),
            "grader_pid": os.getpid(), "grader_started": psutil.Process().create_time(), "runtime": str(runtime),
            "prefix": isolation.kernel_prefix(level, Path(cwd), runtime, group, writable_cache)}
    child_env = {**OFFLINE_ENV, **(env or {})}
    package_root = str(Path(__file__).resolve().parents[2])  # the grader's llmcourse, wherever the kernel starts
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    try:
        outcome = _watch(spec, child_env, timeout, memory_bytes, stop, files_bytes)
        if group is not None and group.oom_killed() and outcome.status != "memory":
            outcome = RunOutcome("memory", f"was killed by the system at its control group's hard memory limit of "
                                 f"{group.memory_bytes / 2**30:.2f} GiB (the limit is {memory_bytes / 2**30:.2f} GiB "
                                 f"of resident memory; the group also counts the page cache and the temporary "
                                 f"folder in memory): the run was stopped.", outcome.seconds, outcome.peak_rss)
    finally:
        isolation.cgroup_cleanup(group)
        shutil.rmtree(private, ignore_errors=True)
    outcome.isolation = level.describe() + (f", {group.describe()}" if group else "")
    return outcome


def _folder_bytes(folder: Path) -> int:
    """The bytes the files under `folder` hold (links not followed; files that vanish meanwhile not counted)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _watch(spec: dict, child_env: dict, timeout: float, memory_bytes: int | None,
           stop: threading.Event | None, files_bytes: int | None = None) -> RunOutcome:
    """Start the runner and watch its process tree until it ends or is killed."""
    outcome_file = Path(spec["outcome"])
    start = time.monotonic()
    proc = _context().Process(target=_child_main, args=(spec, child_env), daemon=False)
    proc.start()
    watched = psutil.Process(proc.pid)
    peak, killed, polls, procs, tasks, files = 0, None, 0, [watched], 0, 0
    try:
        while proc.is_alive():
            if polls % 5 == 0:  # listing the tree scans /proc: once a second is enough to see the kernel appear
                procs = _tree(watched)
                tasks = _tasks(procs)
                files = _folder_bytes(Path(spec["cwd"])) if files_bytes else 0
            polls += 1
            rss = _rss(procs)
            peak = max(peak, rss)
            elapsed = time.monotonic() - start
            if tasks > MAX_TASKS:
                killed = ("tasks", f"started {tasks} processes and threads, over the limit of {MAX_TASKS}: the run "
                          f"was stopped.")
            elif memory_bytes and rss > memory_bytes:
                killed = ("memory", f"used {rss / 2**30:.2f} GiB of memory, over the limit of "
                          f"{memory_bytes / 2**30:.2f} GiB: the run was stopped.")
            elif files_bytes and files > files_bytes:
                killed = ("files", f"wrote {files / 2**30:.2f} GiB of files (its folder and its temporary folder), "
                          f"over the limit of {files_bytes / 2**30:.2f} GiB: the run was stopped.")
            elif elapsed > timeout + 5:  # the child's own per-cell timeout normally fires first
                killed = ("timeout", f"still running after {timeout:g} s: the run was stopped.")
            elif stop is not None and stop.is_set():
                killed = ("interrupted", "the batch was interrupted before this submission finished.")
            if killed:
                _kill(_tree(watched))
                break
            time.sleep(POLL_S)
        proc.join()
    finally:
        if proc.is_alive():
            _kill(_tree(watched))
            proc.join()
    seconds = time.monotonic() - start
    if killed:
        return RunOutcome(killed[0], killed[1], seconds, peak)
    try:
        result = json.loads(outcome_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            tail = Path(spec["log"]).read_text(encoding="utf-8", errors="replace")[-300:].strip()
        except OSError:
            tail = ""
        return RunOutcome("failed to start", f"the runner ended with code {proc.exitcode} and no outcome. {tail}",
                          seconds, peak)
    return RunOutcome(result["status"], result["message"], seconds, peak)


# ---------------------------------------------------------------- the child process
def _die_with_grader(pid: int, started: float) -> None:
    """Kill this process's kernel and exit when the grader that started it dies (SIGKILL included)."""

    def gone() -> bool:
        try:
            return psutil.Process(pid).create_time() != started
        except psutil.Error:
            return True

    def watch() -> None:
        while not gone():
            time.sleep(0.5)
        for _ in range(10):  # again and again: the main thread may be starting the kernel right now
            for p in psutil.Process().children(recursive=True):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            time.sleep(0.05)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(spec: dict) -> int:
    _die_with_grader(spec["grader_pid"], spec["grader_started"])
    outcome = Path(spec["outcome"])

    def finish(status: str, message: str) -> int:
        outcome.write_text(json.dumps({"status": status, "message": message}), encoding="utf-8")
        return _EXIT.get(status, 1)

    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    extra = {}
    if os.name == "posix":  # sockets in the working folder: no TCP port races between kernels started at once
        from traitlets.config import Config

        extra["config"] = Config({"KernelManager": {"transport": "ipc", "ip": "kernel"}})
    if spec["prefix"]:  # the kernel starts inside the sandbox; this runner stays outside it
        from .isolation import kernel_manager

        extra["kernel_manager_class"] = kernel_manager(spec["prefix"], spec["runtime"])
    try:
        pm.execute_notebook(spec["input"], spec["output"], parameters=spec["parameters"], kernel_name="python3",
                            cwd=spec["cwd"], progress_bar=False, log_output=False, start_timeout=120,
                            execution_timeout=int(math.ceil(spec["cell_timeout"])), autosave_cell_every=2, **extra)
    except pm.PapermillExecutionError as exc:
        # papermill also raises for errors in cells tagged raises-exception, which did not stop the run
        import nbformat

        nb = nbformat.read(spec["output"], as_version=4)
        if any(c.get("metadata", {}).get("papermill", {}).get("exception") for c in nb.cells):
            status = "memory" if exc.ename == "MemoryError" else "error"
            return finish(status, f"cell {exc.exec_count or '?'} raised {exc.ename}: {exc.evalue}")
    except CellTimeoutError:
        return finish("timeout", f"a cell ran past the limit of {spec['cell_timeout']:g} s.")
    except DeadKernelError:
        return finish("crashed", "the kernel died (os._exit, a segfault, or killed by the system).")
    except Exception as exc:  # the kernel did not start, the notebook could not be written...
        return finish("failed to start", f"{type(exc).__name__}: {exc}")
    return finish("completed", "")


def _child_main(spec: dict, env: dict) -> None:
    """Entry point of the child process: its own session, folder, environment and log, then papermill."""
    os.setsid()  # Ctrl-C in the grader's terminal does not reach the kernel: the parent decides when to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(env)
    os.chdir(spec["cwd"])
    fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os._exit(_child(spec))


_CONTEXT = None
_CONTEXT_LOCK = threading.Lock()


def warm_up() -> None:
    """Start the forkserver now, so that the first submission's time does not include importing papermill."""
    proc = _context().Process(target=int)
    proc.start()
    proc.join()


def _context():
    """A forkserver with papermill already imported: a child starts in milliseconds instead of seconds."""
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _CONTEXT = multiprocessing.get_context("forkserver")
                _CONTEXT.set_forkserver_preload(["papermill", "nbclient", "nbformat", "psutil",
                                                 "llmcourse.teaching.sandbox"])
            else:  # Windows
                _CONTEXT = multiprocessing.get_context("spawn")
        return _CONTEXT
