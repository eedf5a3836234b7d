"""Student copies of the course notebooks: `llmcourse release [--out DIR] [NOTEBOOK ...]`.

Introduced with grading (`docs/grading.md`). In every cell tagged ``exercise`` the code between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``# YOUR CODE HERE`` and ``raise NotImplementedError()``
at the markers' indentation, the cell is tagged ``raises-exception`` (a top-level stub does not stop the run), and
the outputs of exercise and check cells are cleared (a stored "✓ passed" would give the answer away). Everything
else is kept, cell ids included: `llmcourse grade` uses them to find the student's exercise cells again.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

try:
    import nbformat
except ImportError:  # the course extras are not installed: the commands say so when run
    nbformat = None

from llmcourse.errors import ConfigError

__all__ = ["BEGIN", "END", "STUB", "make_student_copy", "release", "strip_solutions"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
_NOTEBOOK_DIR = re.compile(r"^week\d\d$")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def strip_solutions(source: str, where: str = "cell") -> str:
    """`source` with every BEGIN/END SOLUTION region replaced by the stub, at the BEGIN marker's indentation."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ConfigError(f"{where}, line {number}: '{BEGIN}' inside another solution region; close the "
                                  f"first one with '{END}'.")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + stub for stub in STUB)
        elif stripped == END:
            if not inside:
                raise ConfigError(f"{where}, line {number}: '{END}' without a '{BEGIN}' before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ConfigError(f"{where}: '{BEGIN}' is never closed: add a '{END}' line.")
    return "\n".join(out)


def make_student_copy(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of `nb` with solutions stubbed and the outputs of exercise and check cells cleared."""
    nb = nbformat.from_dict(nb)  # deep copy
    for index, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if cell.cell_type != "code" or not ({"exercise", "check"} & set(tags)):
            continue
        cell.outputs = []
        cell.execution_count = None
        if "exercise" in tags:
            source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            if BEGIN not in source:
                raise ConfigError(f"{name}: cell {index} is tagged 'exercise' but has no '{BEGIN}' line: mark the "
                                  f"learner's part between '{BEGIN}' and '{END}'.")
            cell.source = strip_solutions(source, where=f"{name}, cell {index}")
            if "raises-exception" not in tags:
                cell.metadata["tags"] = tags + ["raises-exception"]
    return nb


def _syllabus_notebooks() -> list[Path]:
    from llmcourse.syllabus import load_syllabus, project_root

    root = project_root()
    paths = [root / nb.path for nb in load_syllabus()["notebooks"]]
    return [p for p in paths if p.exists()]


def release(notebooks: list[str | Path] | None = None, out: str | Path = "release") -> list[Path]:
    """Write the student copy of each notebook (default: every notebook of the syllabus) under `out`.

    A notebook inside a ``weekNN`` folder keeps that folder (``release/week01/02_attention.ipynb``); others are
    written at the top of `out`. Returns the paths written.
    """
    if nbformat is None:
        raise ConfigError("release needs nbformat: pip install 'llmcourse[course]'.")
    paths = [Path(p) for p in notebooks] if notebooks else _syllabus_notebooks()
    if not paths:
        raise ConfigError("no notebook to release: name them, or run from the course folder (with "
                          "curriculum/syllabus.yaml) once the week notebooks exist.")
    out = Path(out)
    written = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist.")
        nb = nbformat.read(path, as_version=4)
        student = make_student_copy(nb, name=path.name)
        rel = Path(path.parent.name) / path.name if _NOTEBOOK_DIR.match(path.parent.name) else Path(path.name)
        target = out / rel
        if target.resolve() == path.resolve():
            raise ConfigError(f"refusing to overwrite the reference notebook {path}: choose another --out.")
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, target)
        written.append(target)
    return written


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of `llmcourse release`."""
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="reference notebooks to release (default: every notebook in curriculum/syllabus.yaml)")
    parser.add_argument("--out", default="release", metavar="DIR", help="folder for the student copies "
                        "(default: release)")


def main(args: argparse.Namespace) -> int:
    """Run `llmcourse release`."""
    written = release(args.notebooks or None, out=args.out)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} student cop{'y' if len(written) == 1 else 'ies'} in {args.out}")
    return 0
