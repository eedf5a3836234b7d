"""Student copies of the course notebooks: `llmcourse release [--out DIR] [NOTEBOOK ...]`.

Introduced with grading (`docs/grading.md`). In every cell tagged ``exercise`` the solution region becomes the stub
at the markers' indentation (nbgrader's conventions, defined in `teaching.notebooks`), the cell is tagged ``raises-
exception`` (a top-level stub does not stop the run), and the outputs of exercise and check cells are cleared (a
stored "✓ passed" would give the answer away). Everything else is kept, cell ids included: `llmcourse grade` uses
them to find the student's exercise cells again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .notebooks import BEGIN, END, cell_source, cell_tags, read_notebook, strip_solutions, write_notebook

__all__ = ["make_student_copy", "release"]

_NOTEBOOK_DIR = re.compile(r"^week\d\d$")


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


def release(notebooks: list[str | Path] | None = None, out: str | Path = "release") -> list[Path]:
    """Write the student copy of each notebook (default: every notebook of the syllabus) under `out`.

    A notebook inside a ``weekNN`` folder keeps that folder (``release/week01/02_attention.ipynb``); others are
    written at the top of `out`. Returns the paths written.
    """
    paths = [Path(p) for p in notebooks] if notebooks else _syllabus_notebooks()
    if not paths:
        raise ConfigError("no notebook to release: name them, or run from the course folder (with "
                          "curriculum/syllabus.yaml) once the week notebooks exist.")
    out = Path(out)
    written = []
    for path in paths:
        nb = read_notebook(path)
        student = make_student_copy(nb, name=path.name)
        rel = Path(path.parent.name) / path.name if _NOTEBOOK_DIR.match(path.parent.name) else Path(path.name)
        target = out / rel
        if target.resolve() == path.resolve():
            raise ConfigError(f"refusing to overwrite the reference notebook {path}: choose another --out.")
        write_notebook(student, target)
        written.append(target)
    return written
