"""Student copies of the course notebooks: `llmcourse release [--out DIR] [NOTEBOOK ...]`.

Introduced with grading (`docs/grading.md`). In every cell tagged ``exercise`` the solution region becomes the stub
at the markers' indentation (nbgrader's conventions, defined in `teaching.notebooks`), the cell is tagged ``raises-
exception`` (a top-level stub does not stop the run), and the outputs of exercise and check cells are cleared (a
stored "✓ passed" would give the answer away). Everything else is kept, cell ids included: `llmcourse grade` uses
them to find the student's exercise cells again.

`release` never destroys work without `force`: it refuses an output folder that holds course material (a syllabus,
or notebooks with solutions: a clone of the course) and any notebook there that differs from the copy it would write
(a student's filled-in notebook, or an older release). It checks everything before it writes anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import atomic_write
from .notebooks import (
    BEGIN,
    END,
    cell_source,
    cell_tags,
    notebook_text,
    read_notebook,
    read_notebook_json,
    strip_solutions,
)
from .syllabus import SYLLABUS

__all__ = ["make_student_copy", "release"]

_NOTEBOOK_DIR = re.compile(r"^week\d\d$")
SHOWN = 5  # files named in a refusal


def make_student_copy(nb: Any, name: str = "notebook") -> Any:
    """A copy of `nb` with solutions stubbed and the outputs of exercise and check cells cleared."""
    import nbformat

    nb = nbformat.from_dict(nb)  # deep copy
    for index, cell in enumerate(nb.cells):
        tags = cell_tags(cell)
        if cell.cell_type != "code" or not ({"exercise", "check"} & set(tags)):
            continue
        cell.outputs = []
        cell.execution_count = None
        if "exercise" in tags:
            source = cell_source(cell)
            if BEGIN not in source:
                raise ConfigError(f"{name}: cell {index} is tagged 'exercise' but has no '{BEGIN}' line: mark the "
                                  f"learner's part between '{BEGIN}' and '{END}'.")
            cell.source = strip_solutions(source, where=f"{name}, cell {index}")
            if "raises-exception" not in tags:
                cell.metadata["tags"] = tags + ["raises-exception"]
    return nb


def _syllabus_notebooks() -> list[Path]:
    from .syllabus import load_syllabus, project_root

    root = project_root()
    paths = [root / nb.path for nb in load_syllabus()["notebooks"]]
    return [p for p in paths if p.exists()]


def release(notebooks: list[str | Path] | None = None, out: str | Path = "release", force: bool = False) -> list[Path]:
    """Write the student copy of each notebook (default: every notebook of the syllabus) under `out`.

    A notebook inside a ``weekNN`` folder keeps that folder (``release/week01/02_attention.ipynb``); others are
    written at the top of `out`. Unless `force`, refuses an `out` that holds course material or a notebook that
    differs from its student copy (ConfigError naming the files). Returns the paths written.
    """
    paths = [Path(p) for p in notebooks] if notebooks else _syllabus_notebooks()
    if not paths:
        raise ConfigError("no notebook to release: name them, or run from the course folder (with "
                          "curriculum/syllabus.yaml) once the week notebooks exist.")
    out = Path(out)
    copies: dict[Path, str] = {}
    for path in paths:
        student = make_student_copy(read_notebook(path), name=path.name)
        rel = Path(path.parent.name) / path.name if _NOTEBOOK_DIR.match(path.parent.name) else Path(path.name)
        target = out / rel
        if target.resolve() == path.resolve():
            raise ConfigError(f"refusing to overwrite the reference notebook {path}: choose another --out.")
        copies[target] = notebook_text(student)
    if not force:
        _refuse_course_material(out)
        _refuse_changed_notebooks(out, copies)
    for target, text in copies.items():
        atomic_write(target, text)
    return list(copies)


def _names(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def _has_solutions(path: Path) -> bool:
    try:
        cells = read_notebook_json(path).get("cells", [])
        return any(BEGIN in (line.strip() for line in cell_source(c).splitlines()) for c in cells)
    except Exception:  # not a notebook: not course material either
        return False


def _refuse_course_material(out: Path) -> None:
    """ConfigError when `out` holds the course itself: its syllabus, or notebooks with solutions."""
    if not out.is_dir():
        return
    found = [SYLLABUS.as_posix()] if (out / SYLLABUS).is_file() else []
    for folder, dirs, files in os.walk(out):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, .ipynb_checkpoints
        found += [(Path(folder) / f).relative_to(out).as_posix() for f in sorted(files)
                  if f.endswith(".ipynb") and _has_solutions(Path(folder) / f)]
    if found:
        raise ConfigError(f"{out} holds course material ({_names(found)}): the student copies would replace solutions "
                          f"with stubs. Fix: choose a new or empty folder (e.g. --out release), or pass --force if you "
                          f"mean to write the student copies there.")


def _refuse_changed_notebooks(out: Path, copies: dict[Path, str]) -> None:
    """ConfigError when a notebook that `release` would write already exists with other content."""
    changed = []
    for target, text in copies.items():
        if target.exists():
            try:
                same = target.read_text(encoding="utf-8") == text
            except (OSError, UnicodeDecodeError):
                same = False
            if not same:
                changed.append(target.relative_to(out).as_posix())
    if changed:
        raise ConfigError(f"{len(changed)} notebook(s) in {out} differ from the student copies release would write "
                          f"(filled in by a student, or an older release): {_names(changed)}. Writing would lose "
                          f"them. Fix: move them elsewhere or choose another --out, or pass --force to overwrite them.")
