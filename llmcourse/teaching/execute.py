"""Execute notebooks in place for their stored outputs, one at a time, on a quiet machine (`llmcourse execute`).

Stored outputs are what a reader sees on GitHub and on the course website, so they must show what a learner's
machine does: the cell times nbclient records must fit the notebook's declared runtime (tests/test_stored_runtimes.py
checks it). A notebook executed beside other heavy work stores times several times too long, so this refuses to start
while other processes keep a core busy (`llmcourse.threads.busy_cores`), executes each notebook alone in a fresh
kernel from its own folder, and reports stored minutes against the declared runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..threads import busy_cores

__all__ = ["ExecutionResult", "execute_in_place", "stored_seconds"]

QUIET_BELOW = 0.3  # cores busy elsewhere above which the machine is not quiet enough to record timings
RUNTIME_FACTOR = 1.5  # the factor tests/test_stored_runtimes.py allows


@dataclass(frozen=True)
class ExecutionResult:
    path: str
    declared_min: float
    stored_min: float

    @property
    def ratio(self) -> float:
        return self.stored_min / self.declared_min

    @property
    def ok(self) -> bool:
        return self.ratio <= RUNTIME_FACTOR


def stored_seconds(nb) -> tuple[float, int]:
    """(seconds of recorded cell execution, number of executed code cells without recorded times) of a notebook."""
    from datetime import datetime

    def when(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    total, untimed = 0.0, 0
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.get("execution_count") is None:
            continue
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if not (start and end):
            untimed += 1
            continue
        total += (when(end) - when(start)).total_seconds()
    return total, untimed


def execute_in_place(path: str | Path, declared_min: float, *, force: bool = False,
                     timeout: int = 1200, kernel: str = "python3") -> ExecutionResult:
    """Execute one notebook in place (outputs and cell times stored) after checking that the machine is quiet."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if not force:
        busy = busy_cores(1.0)
        if busy is not None and busy > QUIET_BELOW:
            raise ConfigError(f"{busy:.1f} cores are busy with other work: stored cell times would be too long. "
                              "Stop the other work and retry, or pass --force to record them anyway.")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, record_timing=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute()
    nbformat.write(nb, path)
    result = ExecutionResult(path.as_posix(), declared_min, stored_seconds(nb)[0] / 60)
    print(f"{path}: {result.stored_min:.2f} min stored ({(time.perf_counter() - start) / 60:.2f} min wall), "
          f"declared {declared_min} min, ratio {result.ratio:.2f}{'' if result.ok else ' TOO SLOW'}", flush=True)
    return result
