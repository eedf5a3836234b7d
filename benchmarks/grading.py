"""Grading benchmark: 20 honest submissions of the grading sample, one job at a time and two at once, in the sandbox.

    python -m benchmarks.grading              # about 2.5 minutes on 2 cores
    python -m benchmarks.grading --json FILE  # also save the numbers

Issue 21's bars: two jobs take at most 0.6x the serial time, and the sandbox adds at most 2 s a submission (the
sandbox's cost is also a test, tests/test_grading_sandbox.py). Both batches grade the same 20 files into fresh output
folders; the serial batch runs first. Every submission must score full marks in both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

N = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="save the numbers in this file")
    parser.add_argument("-n", type=int, default=N, help=f"submissions (default {N})")
    args = parser.parse_args(argv)

    from test_grading import FIXTURE
    from test_grading_robust import FULL, honest, write

    from llmcourse.teaching.grading import grade
    from llmcourse.teaching.isolation import detect

    folder = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        subs = [write(folder / "submitted", f"student{i:02d}", honest()) for i in range(args.n)]
        rows = {}
        for jobs in (1, 2):
            start = time.monotonic()
            records = grade(subs, FIXTURE, out=folder / f"jobs{jobs}", jobs=jobs, timeout=120, memory_gib=1.5,
                            progress=False)
            wall = time.monotonic() - start
            scores = {sum(r["points"] for r in rec["rows"]) for rec in records}
            if scores != {FULL} or len(records) != args.n:
                print(f"--jobs {jobs}: not every submission scored {FULL}: {scores}")
                return 1
            own = [rec["seconds"] for rec in records]
            rows[jobs] = {"wall_s": round(wall, 1), "median_submission_s": statistics.median(own)}
            print(f"--jobs {jobs}: {args.n} submissions in {wall:.1f} s (median {statistics.median(own):.1f} s each)")
        ratio = rows[2]["wall_s"] / rows[1]["wall_s"]
        isolation = detect().describe()
        print(f"two jobs / one job: {ratio:.2f} (bar 0.6: {ratio <= 0.6}); kernels ran in: {isolation}")
        if args.json:
            Path(args.json).write_text(json.dumps({"submissions": args.n, "rows": rows, "ratio": round(ratio, 3),
                                                   "isolation": isolation}, indent=1) + "\n", encoding="utf-8")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
