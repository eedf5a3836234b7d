"""A training cell in JupyterLab (Chromium) against the same cell headless, under each thread setting.

    python -m benchmarks.jupyterlab_threads [--workload gpt|lora] [--steps N] [--repeats 3] [--json FILE]

Workloads: `gpt` is week 2.1's training cell (many small ops; as the notebook runs it, 1,400 steps, unless --steps
says fewer: a short cell weighs JupyterLab's fixed cost of showing a new cell's output, about 1 s, several times
more than the learner's cell does); `lora` is week 4.1's LoRA cell
on SmolLM2-135M (a few big matmuls: loading the model, its held-out loss and 10 LoRA steps at one learning rate, full
fine-tuning skipped). The notebook is copied up to that cell, with its step count set to --steps and one cell added
first that records every cell's wall time from inside the kernel (IPython's pre/post_run_cell events), so the browser
and headless runs are timed the same way. Each setting runs in a fresh kernel: the course's thread policy
(LLMCOURSE_THREADS unset), torch's default (all physical cores) and one thread fewer. JupyterLab, its progress-bar
widgets and Chromium share the machine with the kernel, as on a learner's laptop. With --repeats the settings take
turns, and the table gives each one's median with its range over the repeats.
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
WORKLOADS = {  # name: (notebook, a line of the timed cell, parameters to set ("{steps}": --steps), default steps)
    "gpt": ("week02/01_tiny_gpt_from_scratch.ipynb", "history = train(model, NUM_STEPS", {"NUM_STEPS": "{steps}"},
            None),  # None: the notebook's own
    "lora": ("week04/01_lora_and_qlora.ipynb", 'for lr in tqdm(LRS_LORA, desc="LoRA")',
             {"STEPS": "{steps}", "LRS_FULL": "[]", "LRS_LORA": "[2e-4]"}, 10),
}
TIMER = '''import json as _json, os as _os, time as _time
_cell_log = _os.environ["LLMCOURSE_CELL_LOG"]
_clock = {}
def _pre(info):
    _clock["start"], _clock["source"] = _time.perf_counter(), info.raw_cell
def _post(result):
    with open(_cell_log, "a") as f:
        seconds = _time.perf_counter() - _clock["start"]
        threads = __import__("torch").get_num_threads() if "torch" in __import__("sys").modules else None
        f.write(_json.dumps({"source": _clock["source"][:4000], "seconds": seconds, "threads": threads}) + "\\n")
get_ipython().events.register("pre_run_cell", _pre)
get_ipython().events.register("post_run_cell", _post)'''


def prepare(folder: Path, workload: str, steps: int | None) -> str:
    """Write the shortened notebook with its timer cell into `folder`; returns its relative path. With `steps` None the
    notebook's own step count stays."""
    notebook, mark, params, _ = WORKLOADS[workload]
    nb = nbformat.read(ROOT / notebook, as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if mark in c.source)
    cells = nb.cells[: last + 1]
    for c in cells:
        c.outputs = [] if c.cell_type == "code" else c.get("outputs")
        if "parameters" in c.get("metadata", {}).get("tags", []):
            for name, value in params.items():
                if steps is None and "{steps}" in value:
                    continue
                c.source, n = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value.format(steps=steps)}  ", c.source,
                                      flags=re.M)
                if n != 1:
                    raise RuntimeError(f"{notebook}: parameter {name} not found once in its parameters cell")
    nb.cells = [nbformat.v4.new_code_cell(TIMER), *cells]
    (folder / notebook).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / notebook)
    return notebook


def training_cell(log: Path, workload: str) -> dict:
    """The timed cell's row of the kernel's log: seconds, and the torch threads it ran with."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return next(r for r in rows if WORKLOADS[workload][1] in r["source"])


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


def _stats(values: list[float]) -> str:
    import statistics

    med = statistics.median(values)
    return f"{med:.1f}" if len(values) == 1 else f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="gpt", help="which training cell to time")
    parser.add_argument("--steps", type=int, help="training steps in the timed cell (gpt: the notebook's, lora: 10)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every setting, headless and in JupyterLab")
    parser.add_argument("--only", choices=["policy", "default", "fewer"], action="append",
                        help="time only these settings (repeatable; all three by default)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    import statistics

    from llmcourse.threads import physical_cores

    steps = args.steps or WORKLOADS[args.workload][3]
    cores = physical_cores()
    settings = {"policy": None, f"{cores} (default)": str(cores)}
    if cores > 1:
        settings[f"{cores - 1} (one fewer)"] = str(cores - 1)
    if args.only:
        keys = {"policy": "policy", "default": f"{cores} (default)", "fewer": f"{cores - 1} (one fewer)"}
        settings = {keys[k]: settings[keys[k]] for k in dict.fromkeys(args.only) if keys[k] in settings}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        notebook = prepare(folder, args.workload, steps)
        for repeat in range(args.repeats):
            for where, run in (("headless", run_headless), ("JupyterLab", run_browser)):
                for name, value in settings.items():
                    log = folder / f"cells-{where}-{len(rows)}.jsonl"
                    env = {"LLMCOURSE_CELL_LOG": str(log), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
                    if value is not None:
                        env["LLMCOURSE_THREADS"] = value
                    start = time.perf_counter()
                    run(folder, notebook, env)
                    cell = training_cell(log, args.workload)
                    row = {"repeat": repeat, "where": where, "threads": name, "train_s": cell["seconds"],
                           "used": cell["threads"], "wall_s": time.perf_counter() - start}
                    rows.append(row)
                    print(f"  {repeat + 1}/{args.repeats} {where:<10} {name:<14} timed cell {row['train_s']:6.1f} s "
                          f"with {row['used']} threads (run {row['wall_s']:.0f} s)", file=sys.stderr, flush=True)

    def times(where, name):
        return [r["train_s"] for r in rows if (r["where"], r["threads"]) == (where, name)]

    count = steps or "the notebook's"
    print(f"\n{WORKLOADS[args.workload][0]}, timed cell ({count} steps), seconds: median (range) of {args.repeats} "
          f"run(s), on {cores} physical cores\n")
    print("| threads | headless | JupyterLab | JupyterLab / headless (medians) |")
    print("|---|---|---|---|")
    for name in settings:
        h, b = times("headless", name), times("JupyterLab", name)
        chose = ""
        if name == "policy":
            chose = " (chose " + "/".join(sorted({str(r["used"]) for r in rows if r["threads"] == name})) + ")"
        print(f"| {name}{chose} | {_stats(h)} | {_stats(b)} | {statistics.median(b) / statistics.median(h):.2f} |")
    paired = [b / h for h, b in zip(times("headless", "policy"), times("JupyterLab", "policy"), strict=True)]
    ratio = statistics.median(paired)
    print(f"\nunder the policy, JupyterLab / headless <= 1.25: {ratio <= 1.25} (median {ratio:.2f} of the rounds' "
          f"ratios {', '.join(f'{r:.2f}' for r in paired)})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
