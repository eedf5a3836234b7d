"""`llmcourse course` (`make course`): execute every notebook of the syllabus headless with papermill, with a
progress bar and a runtime table (declared vs measured). Executed copies go to `course-runs/`; the sources are never
modified.

    llmcourse course [--out course-runs] [--only week03] [-p NAME VALUE ...]
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import ConfigError
from .syllabus import load_syllabus, project_root

__all__ = ["run_course", "runtime_table"]


def run_course(out: str | Path = "course-runs", only: str | None = None, parameters: dict | None = None,
               kernel: str = "python3") -> list[dict]:
    """Run the syllabus notebooks (those whose path contains `only`, if given); one row per notebook."""
    root = project_root()
    out = Path(out)
    notebooks = [nb for nb in load_syllabus()["notebooks"] if only is None or only in nb.path]
    if not notebooks:
        raise ConfigError(f"no notebook of curriculum/syllabus.yaml has {only!r} in its path. Fix: --only week03, "
                          "or a part of a notebook's file name.")
    import papermill as pm
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(notebooks, desc="notebooks", unit="nb")
    for nb in bar:
        bar.set_postfix_str(nb.path)
        target = out / nb.path
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(root / nb.path), str(target), parameters=parameters or {}, kernel_name=kernel,
                                cwd=str((root / nb.path).parent), progress_bar=False)
        except Exception as exc:  # keep going: one broken notebook must not hide the others' results
            status = f"FAILED: {type(exc).__name__}"
        seconds = time.perf_counter() - start
        rows.append({"notebook": nb.path, "declared_min": nb.runtime_min, "measured_min": seconds / 60,
                     "status": status})
    return rows


def runtime_table(rows: list[dict]) -> str:
    """The rows of `run_course` as a text table: declared and measured minutes, their ratio, the status."""
    lines = [f"{'notebook':<52} {'declared':>9} {'measured':>9} {'ratio':>6}  status"]
    for r in rows:
        ratio = r["measured_min"] / r["declared_min"]
        lines.append(f"{r['notebook']:<52} {r['declared_min']:>8.1f}m {r['measured_min']:>8.1f}m {ratio:>6.2f}  "
                     f"{r['status']}")
    lines.append(f"{'total':<52} {sum(r['declared_min'] for r in rows):>8.1f}m "
                 f"{sum(r['measured_min'] for r in rows):>8.1f}m")
    return "\n".join(lines)
