"""Project-wide pytest hooks: tests/ helpers importable, and the notebook runtime table.

When notebooks run under nbval, every notebook's wall time (kernel start and all cells) is summed, printed in a
table against the runtime the syllabus declares, and the run fails if one takes more than RUNTIME_FACTOR times its
declared runtime (environment variable LLMCOURSE_RUNTIME_FACTOR, default 1.5), once divided by how much slower than
the reference machine this one ran around that notebook (`llmcourse.teaching.pace`: a fixed workload timed before and
after each notebook; both ratios are printed).
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT))
from llmcourse.teaching.execute import RUNTIME_FACTOR as _DEFAULT_FACTOR  # noqa: E402  (one home for the factor)

RUNTIME_FACTOR = float(os.environ.get("LLMCOURSE_RUNTIME_FACTOR", _DEFAULT_FACTOR))
# nbval waits at most 5 s for each output message of a finished cell; on a busy 2-core machine the kernel can lag
# longer after a long cell that drew a progress bar, and nbval then fails the cell with "Timeout of 5 seconds
# exceeded waiting for output". Give it a minute (the cell's own time limit is --nbval-cell-timeout).
NBVAL_OUTPUT_TIMEOUT = 60

try:
    from nbval.plugin import IPyNbCell

    _nbval_cell_init = IPyNbCell.__init__

    def _patient_cell_init(self, *args, **kwargs):
        _nbval_cell_init(self, *args, **kwargs)
        self.output_timeout = max(getattr(self, "output_timeout", 0), NBVAL_OUTPUT_TIMEOUT)

    IPyNbCell.__init__ = _patient_cell_init
except ImportError:  # nbval is a test extra; without it there are no notebook items to patch
    pass
_seconds: dict[str, float] = defaultdict(float)
_threads: dict[str, str] = {}  # notebook -> the thread count its setup() chose, read off the hardware card it showed
_failed: set[str] = set()
_unit_seconds = 0.0  # every test item that is not a notebook cell
_probes: list[tuple[str, float]] = []  # (the notebook about to start, or "" at the end; the pace probe's seconds)


def _probe(before: str) -> None:
    from llmcourse.teaching.pace import probe

    _probes.append((before, probe()))


def pytest_runtest_logstart(nodeid, location):
    """Time the pace probe as each notebook starts (outside every item's own time, which pytest measures later)."""
    nb = _notebook_of(nodeid)
    if nb is not None and (not _probes or _probes[-1][0] != nb):
        _probe(nb)


def _slowdown(nb: str) -> tuple[float, float]:
    """(the probe's mean seconds around `nb`, the slowdown the check forgives)."""
    from llmcourse.teaching.pace import slowdown

    i = next((k for k, (name, _) in enumerate(_probes) if name == nb), None)
    if i is None:
        return float("nan"), 1.0
    around = [sec for _, sec in _probes[i:i + 2]]
    mean = sum(around) / len(around)
    return mean, slowdown(mean)


def pytest_ignore_collect(collection_path, config):
    """Only the course notebooks (week*/) run under nbval; notebooks under tests/ are fixtures, not lessons."""
    if collection_path.suffix == ".ipynb" and not collection_path.parent.name.startswith("week"):
        return True
    return None


def _notebook_of(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return path if path.endswith(".ipynb") else None


# the card as setup() displays it (the dataclass repr is its text/plain), or as print(card) writes it
_THREADS = re.compile(r"threads=(\d+), threads_reason=['\"]([^'\"]*)|torch threads\s+(\d+): ([^\n]*)")


def pytest_runtest_makereport(item, call):
    """Note the thread count each notebook's kernel chose: the first reason a slow CI run would show."""
    nb = _notebook_of(item.nodeid)
    if call.when != "call" or nb is None or nb in _threads:
        return None
    for out in getattr(item, "test_outputs", None) or []:
        text = out.get("text") or out.get("data", {}).get("text/plain") or ""
        found = _THREADS.search(text if isinstance(text, str) else "".join(text))
        if found:
            count, reason = found[1] or found[3], found[2] or found[4]
            _threads[nb] = f"{count} ({reason.split(' (')[0].split(':')[0]})"
            break
    return None


def pytest_runtest_logreport(report):
    global _unit_seconds
    nb = _notebook_of(report.nodeid)
    if nb is None:
        _unit_seconds += report.duration
        return
    _seconds[nb] += report.duration
    if report.failed:
        _failed.add(nb)


def _declared() -> dict[str, float]:
    try:
        sys.path.insert(0, str(ROOT))
        from llmcourse.teaching.syllabus import load_syllabus

        return {nb.path: nb.runtime_min for nb in load_syllabus(ROOT / "curriculum" / "syllabus.yaml")["notebooks"]}
    except Exception as exc:  # the table is a report; a broken syllabus is caught by tests/test_syllabus.py
        print(f"runtime table: could not read the syllabus ({exc})")
        return {}


_rows: list[tuple[str, float | None, float, float, str]] = []
_over: list[str] = []


def _judge() -> None:
    """Fill _rows (notebook, declared minutes, measured seconds, slowdown, verdict) and _over (notebooks over their
    limit)."""
    if _rows or not _seconds:
        return
    if _probes and _probes[-1][0]:
        _probe("")  # after the last notebook
    declared = _declared()
    for nb, sec in sorted(_seconds.items()):
        limit = declared.get(nb)
        probe_s, slow = _slowdown(nb)
        if limit is None:
            _rows.append((nb, None, sec, slow, "NOT IN SYLLABUS"))
            _over.append(nb)
            continue
        ratio = sec / 60 / limit / slow
        verdict = "ok" if ratio <= RUNTIME_FACTOR else f"TOO SLOW (> {RUNTIME_FACTOR}x declared)"
        if ratio > RUNTIME_FACTOR:
            _over.append(nb)
        if nb in _failed:
            verdict += ", failed"
        _rows.append((nb, limit, sec, slow, verdict))


def pytest_sessionfinish(session, exitstatus):
    _judge()
    if _over and session.exitstatus == 0:
        session.exitstatus = 1


def _phases(tr) -> None:
    """CI's phase table (.ci/run exports the set-up and lint times and when it started)."""
    start = os.environ.get("LLMCOURSE_CI_START")
    if not start:
        return
    import time

    rows = [("set-up (make setup)", os.environ.get("LLMCOURSE_CI_SETUP_S")),
            ("lint (make lint)", os.environ.get("LLMCOURSE_CI_LINT_S")),
            ("unit tests", round(_unit_seconds)),
            (f"notebooks ({len(_seconds)})", round(sum(_seconds.values()))),
            ("total so far", round(time.time() - float(start)))]
    tr.section("CI phases")
    for name, sec in rows:
        if sec not in (None, ""):
            tr.write_line(f"{name:<24} {float(sec) / 60:6.1f} min ({float(sec):.0f} s)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    _judge()
    if _rows:
        _runtime_table(terminalreporter)
    _phases(terminalreporter)


def _runtime_table(tr) -> None:
    from llmcourse.teaching.pace import MAX_SLOWDOWN, REFERENCE_S

    tr.section("notebook runtimes (CPU)")
    tr.write_line(f"slowdown: the pace probe around each notebook against the reference machine's {REFERENCE_S} s "
                  f"(forgiven between 1 and {MAX_SLOWDOWN}x); judged = ratio / slowdown")
    tr.write_line(f"{'notebook':<48} {'declared':>8} {'measured':>8} {'ratio':>5} {'slowdown':>8} {'judged':>6}  "
                  f"verdict; torch threads")
    for nb, limit, sec, slow, verdict in _rows:
        chosen = f"; threads {_threads[nb]}" if nb in _threads else ""
        if limit is None:
            tr.write_line(f"{nb:<48} {'-':>8} {sec / 60:>7.1f}m {'-':>5} {slow:>8.2f} {'-':>6}  {verdict}{chosen}")
        else:
            ratio = sec / 60 / limit
            tr.write_line(f"{nb:<48} {limit:>7.1f}m {sec / 60:>7.1f}m {ratio:>5.2f} {slow:>8.2f} {ratio / slow:>6.2f}  "
                          f"{verdict}{chosen}")
    total_declared = sum(r[1] or 0 for r in _rows)
    tr.write_line(f"{'total':<48} {total_declared:>7.1f}m {sum(r[2] for r in _rows) / 60:>7.1f}m")
    if _over:
        tr.write_line(f"notebook runtime check FAILED for: {', '.join(_over)}")
