"""Thread policy benchmark: torch's default threads, one fewer, and `llmcourse.threads`' choice, quiet and busy.

    python -m benchmarks.threads              # the table for this machine (about 2 minutes on 2 cores)
    python -m benchmarks.threads --json FILE  # also save the rows

Each row is measured in a fresh process (thread pools are fixed once torch has started its first parallel region).
"busy" means one other process at normal priority spinning on one core for the whole measurement, as a second
notebook, a test run or a busy browser tab would. Two workloads: week 2.1's tiny GPT training step (many small
operations) and a LoRA step of SmolLM2-135M (fewer, bigger matrix products). A run's step time is the median of its
timed steps after warm-up; each row is the median of REPEATS runs in fresh processes, in rotating order, since this
kind of machine's speed drifts by 20% or more between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"tiny-gpt": 20, "lora-smollm2": 5}  # workload -> timed steps
WARMUP = 2
STEP_BUDGET_S = 15  # stop timing a row after this long (at least 3 steps): two threads under load can take 30 s a step
REPEATS = 3  # fresh processes per row, in rotating order; the row reports the median of their medians


def _tiny_gpt_step():
    import torch

    from llmcourse.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=80, block_size=64, n_layer=4, n_head=4, n_embd=128))  # week 2.1's model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 80, (32, 64))
    y = torch.randint(0, 80, (32, 64))

    def step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def _lora_step():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import llmcourse

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(llmcourse.resolve("HuggingFaceTB/SmolLM2-135M-Instruct"),
                                                 dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 49152, (1, 64))

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def worker(workload: str, threads: str) -> dict:
    """Run in a fresh process: set the threads, time the workload's steps, return one row."""
    import torch

    from llmcourse import threads as policy

    if threads == "policy":
        choice = policy.apply()
        n, reason = choice.threads, choice.reason
    else:
        n, reason = int(threads), "fixed"
        torch.set_num_threads(n)
    step = _tiny_gpt_step() if workload == "tiny-gpt" else _lora_step()
    for _ in range(WARMUP):
        step()
    times = []
    while len(times) < WORKLOADS[workload] and (len(times) < 3 or sum(times) < STEP_BUDGET_S):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"workload": workload, "setting": threads, "threads": n, "reason": reason, "median_ms": 1000 * med,
            "spread": (max(times) - min(times)) / med}


def _spinner() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)  # its own session


def measure(workload: str, setting: str, busy: bool) -> dict:
    spin = _spinner() if busy else None
    try:
        if spin:
            time.sleep(1.0)  # let the scheduler see it
        env = {**os.environ}
        env.pop("LLMCOURSE_THREADS", None)
        env.pop("OMP_NUM_THREADS", None)
        out = subprocess.run([sys.executable, "-m", "benchmarks.threads", "--worker", workload, setting],
                             cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    finally:
        if spin:
            spin.kill()
            spin.wait()
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["load"] = "busy" if busy else "quiet"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append", help="default: both")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the spinner when killed
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    from llmcourse.threads import physical_cores

    cores = physical_cores()
    fewer = max(1, cores - 1)
    settings = [str(cores)] + ([str(fewer)] if fewer != cores else []) + ["policy"]
    rows = []
    for workload in args.workload or list(WORKLOADS):
        for busy in (False, True):
            runs: dict[str, list[dict]] = {s: [] for s in settings}
            for k in range(REPEATS):
                for setting in settings[k % len(settings):] + settings[:k % len(settings)]:
                    run = measure(workload, setting, busy)
                    runs[setting].append(run)
                    print(f"  {workload:<13} {run['load']:<6} {setting:>7}: {run['median_ms']:8.1f} ms "
                          f"(spread {run['spread']:.0%}, {run['threads']} threads)", file=sys.stderr, flush=True)
            for group in runs.values():
                row = dict(sorted(group, key=lambda r: r["median_ms"])[len(group) // 2])  # the median run
                row["runs_ms"] = [round(r["median_ms"], 1) for r in group]
                rows.append(row)
    print(f"\nThread policy on this machine: {cores} physical cores (torch's default: {cores} threads)\n")
    print(f"| workload | load | {cores} threads (default) | {fewer} thread{'s' if fewer > 1 else ''} "
          "| policy chose | policy | policy / best | policy / default | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok_all = True
    for workload in args.workload or list(WORKLOADS):
        for load in ("quiet", "busy"):
            r = {x["setting"]: x for x in rows if x["workload"] == workload and x["load"] == load}
            d, f, p = r[str(cores)], r.get(str(fewer), r[str(cores)]), r["policy"]
            best = min(d["median_ms"], f["median_ms"])
            to_best, to_default = p["median_ms"] / best, p["median_ms"] / d["median_ms"]
            ok = to_best <= 1.10 if load == "busy" else to_default <= 1.05
            ok_all &= ok
            bar = "<= 1.10x best" if load == "busy" else "<= 1.05x default"
            print(f"| {workload} | {load} | {d['median_ms']:.0f} ms | {f['median_ms']:.0f} ms | {p['threads']} "
                  f"({p['reason']}) | {p['median_ms']:.0f} ms | {to_best:.2f} | {to_default:.2f} | "
                  f"{bar}: {ok} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\nall verdicts hold: {ok_all}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
