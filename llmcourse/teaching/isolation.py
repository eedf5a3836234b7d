"""The sandbox a graded kernel runs in, where the platform allows one; `sandbox.run_notebook` uses it.

With bubblewrap (the ``bwrap`` program; Debian and Ubuntu package ``bubblewrap``) each kernel gets:

- its own user, PID, network, IPC and UTS namespaces. The network namespace has only a loopback interface of its
  own: nothing listening on the machine, its loopback included, can be reached. Every process the kernel starts stays
  inside the PID namespace, under the runner's eye (the memory and task limits count them all), and dies with it;
- a private, read-only view of what it needs: the system's programs and libraries, Python and its packages, the
  course package and the course's cache (its offline models and data, and the hardware probes, which a kernel would
  otherwise run again at 3 s a submission). Not the checkout around the package (the instructor's solutions), not
  the submissions, not the output folder or its key, not the home folder;
- its working folder (writable, with its ``TMPDIR`` inside: the runner limits the files both hold) and a ``/tmp`` of
  its own on a tmpfs of `TMP_MIB` MiB (HOME);
- no capabilities, and uid 65534 (nobody) inside;
- where this machine lets the grader make control groups (cgroup v1, as root): a hard limit of `MAX_TASKS` processes
  and threads (``pids``: a fork bomb stops there), and a hard memory limit (``memory``, `hard_memory_bytes`): the
  system kills the kernel there, between two of the runner's checks of its resident memory, and counts what those
  checks do not see (the tmpfs, the page cache, memory a process maps and touches in a burst).

Where bubblewrap is missing or refused (some distributions switch off unprivileged user namespaces), the kernel runs
as the grader's user with the runner's process watchdog only, and each submission's record says which isolation it
got, and why.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ControlGroups", "Isolation", "MAX_TASKS", "TMP_FOLDER", "TMP_MIB", "cgroup_cleanup", "cgroup_create",
           "command_prefix", "detect", "hard_memory_bytes", "kernel_manager", "kernel_prefix", "sweep_stale_groups"]

TMP_MIB = 256  # a tmpfs lives in memory the process watchdog does not see: keep it small
TMP_FOLDER = ".tmp"  # the kernel's temporary folder (TMPDIR), inside its working folder
MAX_TASKS = 512  # processes and threads of one kernel (torch starts one thread per core, and a few more)
NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
# the flags every sandbox has; the probe runs them with `true`
BASE_FLAGS = ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
              "--uid", str(NOBODY), "--gid", str(NOBODY))
PIDS_V1 = Path("/sys/fs/cgroup/pids")
MEMORY_V1 = Path("/sys/fs/cgroup/memory")
HARD_MEMORY_MARGIN = 0.10  # the control group's limit over the runner's: the runner, which says how much, acts first


def hard_memory_bytes(memory_bytes: int) -> int:
    """The control group's memory limit for a run limited to `memory_bytes` of resident memory: 10% more, plus the
    sandbox's tmpfs (which the group counts and the resident size does not)."""
    return int(memory_bytes * (1 + HARD_MEMORY_MARGIN)) + TMP_MIB * 2**20


@dataclass(frozen=True)
class ControlGroups:
    """The control groups one kernel joins before it starts (see `cgroup_create`)."""

    paths: tuple[Path, ...]
    max_tasks: int | None = None  # where a pids group was made
    memory_bytes: int | None = None  # the memory group's limit, where one was made

    def oom_killed(self) -> bool:
        """Whether the system killed a process of the memory group at its limit (read before `cgroup_cleanup`)."""
        group = next((p for p in self.paths if p.parent == MEMORY_V1), None)
        if group is None:
            return False
        try:  # kernels before 4.13 keep no kill count (memory.failcnt counts reclaims too): a kill there reads
            # as the kernel's death, "crashed"
            control = dict(line.split() for line in (group / "memory.oom_control").read_text().splitlines())
            return int(control.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False

    def describe(self) -> str:
        parts = [f"at most {self.max_tasks} tasks"] if self.max_tasks else []
        if self.memory_bytes:
            parts.append(f"a hard memory limit of {self.memory_bytes / 2**30:.2f} GiB")
        return ", ".join(parts)


@dataclass(frozen=True)
class Isolation:
    """What a kernel runs in: ``bubblewrap``, or ``process`` (the watchdog only) with the reason."""

    level: str
    reason: str = ""
    bwrap: str = ""

    def describe(self) -> str:
        return self.level if not self.reason else f"{self.level} ({self.reason})"


@functools.cache
def detect() -> Isolation:
    """The best isolation this machine gives a kernel, found once per process by running bubblewrap on `true`."""
    if os.environ.get("LLMCOURSE_SANDBOX", "").lower() in ("0", "off", "none", "process"):
        return Isolation("process", "switched off by LLMCOURSE_SANDBOX")
    if not sys.platform.startswith("linux"):
        return Isolation("process", f"bubblewrap needs Linux, this is {sys.platform}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Isolation("process", "bubblewrap (bwrap) is not installed; Fix: install the bubblewrap package")
    try:
        done = subprocess.run([bwrap, *BASE_FLAGS, "--ro-bind", "/", "/", "true"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation("process", f"bubblewrap did not run: {exc}")
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return Isolation("process", f"bubblewrap was refused ({why}); user namespaces may be switched off")
    return Isolation("bubblewrap", bwrap=bwrap)


def _readable_paths() -> list[str]:
    """What the kernel must read: system folders, the Python install, the course package, downloaded models."""
    import llmcourse

    paths = [d for d in SYSTEM_DIRS if os.path.isdir(d)]
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        paths.append(os.path.realpath(p))
        if os.path.realpath(p) != os.path.abspath(p):
            paths.append(os.path.abspath(p))
    paths.append(str(Path(llmcourse.__file__).resolve().parent))
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    if os.path.isdir(hf_home):
        paths.append(os.path.realpath(hf_home))
    paths.append(_course_cache())
    # a folder inside another one already bound comes after it (bwrap binds in order)
    unique = sorted({p for p in paths if os.path.exists(p) and p != "/"}, key=lambda p: (p.count(os.sep), p))
    return [p for p in unique if not any(p != q and p.startswith(q.rstrip(os.sep) + os.sep) for q in unique)]


def _course_cache() -> str:
    """The course's cache (offline models and data, hardware probes), which kernels read where the grader does."""
    from ..assets import cache_dir

    return str(cache_dir().resolve())


def kernel_prefix(isolation: Isolation, work: Path, runtime: Path, cgroup: ControlGroups | None = None,
                  writable_cache: bool = False) -> list[str]:
    """The command that runs a kernel's own command line inside the sandbox (empty for ``process``).

    `work` is the kernel's working folder (writable, where its sockets lie), `runtime` the folder of its connection
    file (read-only), `cgroup` the control groups the sandbox joins before it starts (see `cgroup_create`).
    `writable_cache` mounts the course's cache read-write: only for the instructor's reference notebook, so that
    what it trains once (week 3's classifier, weeks 5-6's models) is there for every submission to read.
    """
    if isolation.level != "bubblewrap":
        return []
    # bubblewrap mounts in order, each over what came before: the tmpfs first, so that a checkout or a Python that
    # lies under /tmp (a CI clone, say) is bound over it rather than hidden by it
    cmd = [isolation.bwrap, *BASE_FLAGS, "--dev", "/dev", "--proc", "/proc", "--size", str(TMP_MIB * 2**20),
           "--tmpfs", "/tmp"]
    for path in _readable_paths():
        cmd += ["--ro-bind", path, path]
    if writable_cache:  # bound after the read-only view, so over it
        cmd += ["--bind", _course_cache(), _course_cache()]
    cmd += ["--ro-bind", str(runtime), str(runtime), "--bind", str(work), str(work), "--chdir", str(work),
            # temporary files go to the working folder's .tmp, on disk (a saved model does not fit the tmpfs), where
            # the runner counts them against the files limit; HOME and matplotlib's folder stay on the small tmpfs
            "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", str(work / TMP_FOLDER),
            "--setenv", "MPLCONFIGDIR", "/tmp/matplotlib",
            # ipykernel exits when its parent is not the pid jupyter_client gave it, which the PID namespace hides;
            # bubblewrap kills the kernel when its runner dies (--die-with-parent)
            "--unsetenv", "JPY_PARENT_PID", "--setenv", "LLMCOURSE_HOME", _course_cache()]
    if cgroup is not None:  # join the groups first: everything the sandbox starts is counted from its first process
        join = " && ".join(f"echo $$ > {shlex.quote(str(group / 'cgroup.procs'))}" for group in cgroup.paths)
        cmd = ["/bin/sh", "-c", join + ' && exec "$@"', "sandbox", *cmd]
    return cmd


def command_prefix(work: Path, cwd: Path) -> list[str]:
    """The command that runs one program of a student's (their tests, their code) inside a sandbox like a kernel's,
    for the grader's own checks (the judge installs it as the confiner of `llmcourse.programs`): `work` is the only
    writable folder (its ``.tmp`` the temporary folder), `cwd` the program's working folder inside it. Empty where
    `detect` finds no bubblewrap: the program then runs as the grader's user, as the kernels of that batch do."""
    isolation = detect()
    if isolation.level != "bubblewrap":
        return []
    (Path(work) / TMP_FOLDER).mkdir(exist_ok=True)
    return [*kernel_prefix(isolation, Path(work), Path(work)), "--chdir", str(cwd)]


def _make_group(root: Path, settings: dict[str, str]) -> Path | None:
    """A new control group under `root` with `settings` written in order, where this process may make one."""
    if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
        return None
    group = root / f"llmcourse-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        for name, value in settings.items():
            if (group / name).exists():
                (group / name).write_text(value)
    except OSError:
        _remove_group(group)
        return None
    return group


STALE_GROUP_S = 60  # an empty group this old is left over: its kernel joins it within seconds of its making


def sweep_stale_groups(roots: tuple[Path, ...] = ()) -> int:
    """Remove the course's control groups that are empty and older than `STALE_GROUP_S`: those of a grader that was
    killed (SIGKILL) before it could remove its own. A group in use has its kernel's processes in it. Returns how many
    went."""
    import time

    gone = 0
    for root in roots or (PIDS_V1, MEMORY_V1):
        for group in root.glob("llmcourse-*"):
            try:
                empty = not (group / "cgroup.procs").read_text().split()
                if empty and time.time() - group.stat().st_mtime > STALE_GROUP_S:
                    group.rmdir()
                    gone += 1
            except OSError:
                pass
    return gone


def cgroup_create(max_tasks: int = MAX_TASKS, memory_bytes: int | None = None) -> ControlGroups | None:
    """New control groups for one kernel, where this process may make them (cgroup v1, as root; else None): ``pids``
    limited to `max_tasks`, and with `memory_bytes`, ``memory`` limited to `hard_memory_bytes(memory_bytes)`, swap
    included where the system counts it. Left-over groups are swept first (`sweep_stale_groups`)."""
    sweep_stale_groups()
    paths, tasks, memory = [], None, None
    group = _make_group(PIDS_V1, {"pids.max": str(max_tasks)})
    if group is not None:
        paths.append(group)
        tasks = max_tasks
    if memory_bytes:
        hard = hard_memory_bytes(memory_bytes)
        # the memory limit first: the limit with swap may never be below it
        group = _make_group(MEMORY_V1, {"memory.limit_in_bytes": str(hard), "memory.memsw.limit_in_bytes": str(hard)})
        if group is not None:
            paths.append(group)
            memory = hard
    return ControlGroups(tuple(paths), tasks, memory) if paths else None


def cgroup_cleanup(groups: ControlGroups | None) -> None:
    """Remove the control groups made by `cgroup_create`, killing what is left in them first."""
    for group in groups.paths if groups is not None else ():
        _remove_group(group)


def _remove_group(group: Path) -> None:
    if not group.exists():
        return
    import signal
    import time

    for _ in range(50):
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def kernel_manager(prefix: list[str], runtime: str):
    """A jupyter_client KernelManager class whose kernels start behind `prefix` (the sandbox's command), with their
    connection file in `runtime` (the folder the sandbox shows them; jupyter_client's default is the temp folder,
    which inside the sandbox is a tmpfs of its own)."""
    from jupyter_client.manager import AsyncKernelManager  # what nbclient (and so papermill) drives

    class SandboxedKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            if not self.connection_file:
                self.connection_file = os.path.join(runtime, f"kernel-{uuid.uuid4().hex}.json")
            return await super()._async_pre_start_kernel(**kw)

        def format_kernel_cmd(self, extra_arguments=None):
            return [*prefix, *super().format_kernel_cmd(extra_arguments)]

    return SandboxedKernelManager
