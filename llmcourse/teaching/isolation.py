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
- where this machine lets the grader make a control group (cgroup v1's ``pids`` controller, as root), a hard limit
  of `MAX_TASKS` processes and threads: a fork bomb stops there.

Where bubblewrap is missing or refused (some distributions switch off unprivileged user namespaces), the kernel runs
as the grader's user with the runner's process watchdog only, and each submission's record says which isolation it
got, and why.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Isolation", "MAX_TASKS", "TMP_FOLDER", "TMP_MIB", "cgroup_cleanup", "cgroup_create", "detect",
           "kernel_manager", "kernel_prefix"]

TMP_MIB = 256  # a tmpfs lives in memory the process watchdog does not see: keep it small
TMP_FOLDER = ".tmp"  # the kernel's temporary folder (TMPDIR), inside its working folder
MAX_TASKS = 512  # processes and threads of one kernel (torch starts one thread per core, and a few more)
NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
# the flags every sandbox has; the probe runs them with `true`
BASE_FLAGS = ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
              "--uid", str(NOBODY), "--gid", str(NOBODY))
PIDS_V1 = Path("/sys/fs/cgroup/pids")


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


def kernel_prefix(isolation: Isolation, work: Path, runtime: Path, cgroup: Path | None = None,
                  writable_cache: bool = False) -> list[str]:
    """The command that runs a kernel's own command line inside the sandbox (empty for ``process``).

    `work` is the kernel's working folder (writable, where its sockets lie), `runtime` the folder of its connection
    file (read-only), `cgroup` a control group the sandbox joins before it starts (see `cgroup_create`).
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
    if cgroup is not None:  # join the group first: everything the sandbox starts is counted from its first process
        cmd = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *cmd]
    return cmd


def cgroup_create(max_tasks: int = MAX_TASKS) -> Path | None:
    """A new ``pids`` control group limited to `max_tasks`, where this process may make one (else None)."""
    if not (PIDS_V1 / "cgroup.procs").exists() or not os.access(PIDS_V1, os.W_OK):
        return None
    group = PIDS_V1 / f"llmcourse-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(max_tasks))
    except OSError:
        cgroup_cleanup(group)
        return None
    return group


def cgroup_cleanup(group: Path | None) -> None:
    """Remove a control group made by `cgroup_create`, killing what is left in it first."""
    if group is None or not group.exists():
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
