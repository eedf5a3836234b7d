"""`make course`: execute every notebook of the syllabus headless with papermill, with a progress bar and a
runtime table (declared vs measured). Executed copies go to `course-runs/`; the sources are never modified.

    python -m llmcourse.runner [--out course-runs] [--only week03] [-p NAME VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .syllabus import load_syllabus, project_root

__all__ = ["main", "run_course"]


def run_course(out: str | Path = "course-runs", only: str | None = None, parameters: dict | None = None,
               kernel: str = "python3") -> list[dict]:
    """Run the syllabus notebooks (those whose path contains `only`, if given); one row per notebook."""
    import papermill as pm
    from tqdm.auto import tqdm

    root = project_root()
    out = Path(out)
    notebooks = [nb for nb in load_syllabus()["notebooks"] if only is None or only in nb.path]
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


def _table(rows: list[dict]) -> str:
    lines = [f"{'notebook':<52} {'declared':>9} {'measured':>9} {'ratio':>6}  status"]
    for r in rows:
        ratio = r["measured_min"] / r["declared_min"]
        lines.append(f"{r['notebook']:<52} {r['declared_min']:>8.1f}m {r['measured_min']:>8.1f}m {ratio:>6.2f}  "
                     f"{r['status']}")
    lines.append(f"{'total':<52} {sum(r['declared_min'] for r in rows):>8.1f}m "
                 f"{sum(r['measured_min'] for r in rows):>8.1f}m")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcourse.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="course-runs", help="folder for the executed copies")
    parser.add_argument("--only", help="run only notebooks whose path contains this (e.g. week03)")
    parser.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="override a parameter in every notebook")
    args = parser.parse_args(argv)
    params = {}
    for name, value in args.p:
        try:
            params[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            params[name] = value
    rows = run_course(args.out, args.only, params)
    print(_table(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
