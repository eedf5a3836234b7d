"""How many threads torch should use here and now: the course's thread policy.

Introduced in week 3 (`week03/01_small_models_on_a_laptop.ipynb`, section "Threads and a busy laptop");
`llmcourse.setup()` applies it in every notebook and the hardware card shows the choice and its reason.

torch starts one intra-op thread per core, and at every operation those threads wait for each other. When another
process at normal priority keeps one of the cores busy, the thread on that core runs at half speed and every other
thread waits for it: on a 2-core machine one busy process (in a session of its own, as another program is) made a
tiny-GPT training step 12x slower with 2 threads (181 -> 2,273 ms), while 1 thread was not slowed (344 -> 322 ms);
`python -m benchmarks.threads` measures this table on your machine. The policy:

- quiet machine (other processes use less than half a core): all physical cores, which is torch's default;
- busy machine: one thread fewer for each core that other processes keep busy (to the nearest whole core), at
  least one.

Processes at low priority are not counted, where the scheduler really lets the course go first. Linux desktops
usually schedule by *autogroup* (`/proc/sys/kernel/sched_autogroup_enabled` = 1): CPU time is first shared fairly
between sessions (a terminal, JupyterLab's kernel, a browser), and a process's own nice only orders it within its
session, so `nice -n 19` in another terminal still takes a full share there. So each process is judged by the nice
that applies between it and us: its own within our session, its session's (`/proc/PID/autogroup`) across sessions
(`echo 19 > /proc/PID/autogroup` makes a whole session yield). The load is sampled once, when the policy is applied
(0.3 s); call `apply()` again after starting or stopping other work. `LLMCOURSE_THREADS=N` (or `setup(threads=N)`)
overrides the policy.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["ENV_VAR", "ThreadChoice", "apply", "busy_cores", "choose", "nice_competes", "physical_cores"]

ENV_VAR = "LLMCOURSE_THREADS"
QUIET_BELOW = 0.5  # cores of other processes' work under which the machine counts as quiet
SAMPLE_SECONDS = 0.3  # how long the load is sampled, in SAMPLES parts (the least part counts)
SAMPLES = 3
LOW_PRIORITY_NICE = 10  # processes at this nice or lower priority are not load: the scheduler lets us go first


@dataclass(frozen=True)
class ThreadChoice:
    """The number of intra-op threads chosen, why, and what it was chosen from."""

    threads: int
    reason: str
    physical_cores: int
    busy_cores: float | None  # other processes' CPU use at normal priority, in cores (None: not measured)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads and cores outside its CPU affinity not counted)."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        physical = os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        allowed = physical
    return max(1, min(physical, allowed))


def nice_competes() -> bool:
    """Whether Linux shares CPU between sessions first (autogroup scheduling), so that nice only counts within one.
    A process outside any autogroup (the root group, or a cgroup of a container) reads an empty file: see
    `_autogroup`. Where the file is in another shape we cannot tell sessions apart and fall back to each process's
    own nice."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return False
        _autogroup("self")
    except (OSError, ValueError):
        return False
    return True


def _autogroup(pid: int | str) -> tuple[str, int]:
    """(autogroup name, its nice) of a process: '/autogroup-12 nice 0' -> ('/autogroup-12', 0).

    Linux prints nothing for a process in no autogroup (the root task group, as for processes started without a new
    session in many containers and CI runners): that group is ('', 0), since the root group weighs as nice 0 against
    the autogroups. Raises ValueError where the file is in another shape, OSError where it is missing."""
    with open(f"/proc/{pid}/autogroup") as f:
        text = f.read()
    parts = text.split()
    if not parts:
        return "", 0
    if len(parts) != 3 or parts[1] != "nice":
        raise ValueError(f"/proc/{pid}/autogroup reads {text!r}, not '<group> nice <n>'")
    return parts[0], int(parts[2])


def _competing_ticks(autogroups: bool, mine: str | None) -> dict[int, int]:
    """CPU ticks used so far by every other process that competes with us at our priority, by pid."""
    me = os.getpid()
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks, nice = int(fields[11]) + int(fields[12]), int(fields[16])  # utime + stime, nice
            if autogroups:
                group, group_nice = _autogroup(entry.name)
                nice = nice if group == mine else group_nice  # between sessions only the session's nice counts
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile, or hides its details
        if nice < LOW_PRIORITY_NICE:
            out[int(entry.name)] = ticks
    return out


def busy_cores(seconds: float = SAMPLE_SECONDS, samples: int = SAMPLES) -> float | None:
    """Cores that other processes at our priority keep busy (None where unknown): the least of `samples` averages
    over `seconds` / `samples` each, so that a short burst (a kernel starting, a page redrawing) is not taken for a
    busy neighbour, while a process that keeps a core busy shows in every sample."""
    if not os.path.isdir("/proc/self"):
        return _busy_cores_psutil(seconds)
    autogroups = nice_competes()
    mine = _autogroup("self")[0] if autogroups else None
    least = None
    before, start = _competing_ticks(autogroups, mine), time.monotonic()
    for _ in range(max(1, samples)):
        time.sleep(seconds / max(1, samples))
        after, now = _competing_ticks(autogroups, mine), time.monotonic()
        used = sum(t - before.get(pid, t) for pid, t in after.items())  # processes born meanwhile are not counted
        busy = max(0.0, used / os.sysconf("SC_CLK_TCK") / max(now - start, 1e-3))
        least = busy if least is None else min(least, busy)
        before, start = after, now
    return least


def _busy_cores_psutil(seconds: float) -> float | None:
    """Fallback for systems without /proc/stat (macOS, Windows): total CPU use less this process's."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    me.cpu_percent(None)
    total = psutil.cpu_percent(interval=seconds) / 100 * (psutil.cpu_count() or 1)
    return max(0.0, total - me.cpu_percent(None) / 100)


def _parse_override(value: object) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{ENV_VAR}={value!r} is not a thread count: use a whole number >= 1 "
                          f"(for example {ENV_VAR}=1), or unset it to let the course choose.")
    return n


def choose(cores: int, busy: float | None, override: object = None) -> ThreadChoice:
    """The policy itself: `override` wins; else all `cores` when quiet, one fewer per busy core (at least 1)."""
    if override not in (None, ""):
        n = _parse_override(override)
        return ThreadChoice(n, f"set by {ENV_VAR}={n}" if override == os.environ.get(ENV_VAR) else f"set to {n}",
                            cores, busy)
    if busy is None:
        return ThreadChoice(cores, f"load unknown: all {cores} physical cores (torch's default)", cores, None)
    if busy < QUIET_BELOW:
        return ThreadChoice(cores, f"quiet ({busy:.1f} cores busy elsewhere): all {cores} physical cores "
                                   "(torch's default)", cores, busy)
    taken = math.floor(busy + 0.5)  # busy cores, to the nearest whole core (half up)
    n = max(1, cores - taken)
    return ThreadChoice(n, f"{busy:.1f} of {cores} cores busy elsewhere: {n} thread{'s' if n > 1 else ''}, so no "
                           "thread waits on a shared core", cores, busy)


def apply(threads: int | None = None) -> ThreadChoice:
    """Choose the thread count (argument, then LLMCOURSE_THREADS, then the policy) and set it in torch."""
    import torch

    override = threads if threads is not None else os.environ.get(ENV_VAR)
    busy = busy_cores() if override in (None, "") else None
    choice = choose(physical_cores(), busy, override)
    torch.set_num_threads(choice.threads)
    return choice
