"""Week 2.1's training cell in JupyterLab (Chromium) against the same cell headless, under each thread setting.

    python -m benchmarks.jupyterlab_threads [--steps 150] [--json FILE]

The notebook is copied up to its training cell, with NUM_STEPS set to --steps and one cell added first that records
every cell's wall time from inside the kernel (IPython's pre/post_run_cell events), so the browser and headless runs
are timed the same way. Each setting runs in a fresh kernel: the course's thread policy (LLMCOURSE_THREADS unset),
torch's default (all physical cores) and one thread fewer. JupyterLab, its progress-bar widgets and Chromium share the
machine with the kernel, as on a learner's laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "week02/01_tiny_gpt_from_scratch.ipynb"
TRAIN_MARK = "history = train(model, NUM_STEPS"
TIMER = '''import json as _json, os as _os, time as _time
_cell_log = _os.environ["LLMCOURSE_CELL_LOG"]
_clock = {}
def _pre(info):
    _clock["start"], _clock["source"] = _time.perf_counter(), info.raw_cell
def _post(result):
    with open(_cell_log, "a") as f:
        seconds = _time.perf_counter() - _clock["start"]
        threads = __import__("torch").get_num_threads() if "torch" in __import__("sys").modules else None
        f.write(_json.dumps({"source": _clock["source"][:200], "seconds": seconds, "threads": threads}) + "\\n")
get_ipython().events.register("pre_run_cell", _pre)
get_ipython().events.register("post_run_cell", _post)'''


def prepare(folder: Path, steps: int) -> str:
    """Write the shortened notebook with its timer cell into `folder`; returns its relative path."""
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if TRAIN_MARK in c.source)
    cells = nb.cells[: last + 1]
    for c in cells:
        c.outputs = [] if c.cell_type == "code" else c.get("outputs")
        if "parameters" in c.get("metadata", {}).get("tags", []):
            c.source = re.sub(r"^NUM_STEPS = \d+", f"NUM_STEPS = {steps}", c.source, flags=re.M)
    nb.cells = [nbformat.v4.new_code_cell(TIMER), *cells]
    (folder / "week02").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / NOTEBOOK)
    return NOTEBOOK


def training_cell(log: Path) -> dict:
    """The training cell's row of the kernel's log: seconds, and the torch threads it ran with."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return next(r for r in rows if TRAIN_MARK in r["source"])


def run_headless(folder: Path, notebook: str, env: dict[str, str]) -> None:
    from nbclient import NotebookClient

    old = dict(os.environ)
    os.environ.update(env)
    try:
        nb = nbformat.read(folder / notebook, as_version=4)
        NotebookClient(nb, timeout=1200, kernel_name="python3",
                       resources={"metadata": {"path": str((folder / notebook).parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)


def run_browser(folder: Path, notebook: str, env: dict[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    from llmcourse.teaching.browser import CHROMIUM_FLAGS, chromium_path, jupyterlab, run_all

    path = chromium_path()
    with jupyterlab(folder, env=env) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            run_all(page, url, notebook, timeout_s=900)
            text = page.inner_text(".jp-Notebook")
            if "Traceback (most recent call last)" in text:
                raise RuntimeError("a cell raised an error in JupyterLab:\n" + text[-2000:])
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="NUM_STEPS for the training cell")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    from llmcourse.threads import physical_cores

    cores = physical_cores()
    settings = {"policy": None, f"{cores} (default)": str(cores)}
    if cores > 1:
        settings[f"{cores - 1} (one fewer)"] = str(cores - 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        notebook = prepare(folder, args.steps)
        for where, run in (("headless", run_headless), ("JupyterLab", run_browser)):
            for name, value in settings.items():
                log = folder / f"cells-{where}-{len(rows)}.jsonl"
                env = {"LLMCOURSE_CELL_LOG": str(log), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
                if value is not None:
                    env["LLMCOURSE_THREADS"] = value
                start = time.perf_counter()
                run(folder, notebook, env)
                cell = training_cell(log)
                row = {"where": where, "threads": name, "train_s": cell["seconds"], "used": cell["threads"],
                       "wall_s": time.perf_counter() - start}
                rows.append(row)
                print(f"  {where:<10} {name:<14} training cell {row['train_s']:6.1f} s with {row['used']} threads "
                      f"(run {row['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    by = {(r["where"], r["threads"]): r["train_s"] for r in rows}
    print(f"\nWeek 2.1 training cell ({args.steps} steps), seconds, on {cores} physical cores\n")
    used = {(r["where"], r["threads"]): r["used"] for r in rows}
    print("| threads | headless | JupyterLab | JupyterLab / headless |")
    print("|---|---|---|---|")
    for name in settings:
        h, b = by[("headless", name)], by[("JupyterLab", name)]
        chose = f" (chose {used[('headless', name)]} / {used[('JupyterLab', name)]})" if name == "policy" else ""
        print(f"| {name}{chose} | {h:.1f} | {b:.1f} | {b / h:.2f} |")
    ratio = by[("JupyterLab", "policy")] / by[("headless", "policy")]
    print(f"\nunder the policy, JupyterLab / headless <= 1.25: {ratio <= 1.25} ({ratio:.2f})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
