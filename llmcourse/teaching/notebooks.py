"""The notebook cell conventions that release, grading, badges and the tests share, defined once.

Exercises follow nbgrader's conventions: in a code cell tagged ``exercise`` the learner's part sits between a line
``### BEGIN SOLUTION`` and a line ``### END SOLUTION``; the student copy replaces it with nbgrader's default stub
(``# YOUR CODE HERE`` and ``raise NotImplementedError()``) at the markers' indentation. Matching is stricter than
nbgrader's (the whole stripped line must be the marker). The cell that grades an exercise is a code cell tagged
``check`` that calls ``check("N.M", ...)`` for exactly one exercise id, below its exercise cell.
See curriculum/CONVENTIONS.md.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import atomic_write

__all__ = ["BEGIN", "CHECK_CALL", "END", "STUB", "cell_source", "cell_tags", "check_cells", "exercise_cell_before",
           "find_exercise", "notebook_text", "read_notebook", "read_notebook_json", "replace_solution", "skeleton",
           "strip_solutions", "write_notebook", "write_notebook_json"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
CHECK_CALL = re.compile(r"""\bcheck\(\s*['"](\d+\.\d+)['"]""")  # the exercise id a check cell grades


# ---------------------------------------------------------------- cells
def cell_source(cell: Any) -> str:
    """A cell's source as one string (notebook files may store it as a list of lines)."""
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def cell_tags(cell: Any) -> list[str]:
    """A cell's tags, in order (an empty list when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def check_cells(cells: list) -> list[tuple[int, list[str]]]:
    """(index, exercise ids it checks) of every code cell tagged ``check``."""
    return [(i, CHECK_CALL.findall(cell_source(c))) for i, c in enumerate(cells)
            if c["cell_type"] == "code" and "check" in cell_tags(c)]


def exercise_cell_before(cells: list, index: int) -> int | None:
    """The index of the nearest code cell tagged ``exercise`` above cell `index`, or None."""
    for j in range(index - 1, -1, -1):
        if cells[j]["cell_type"] == "code" and "exercise" in cell_tags(cells[j]):
            return j
    return None


def find_exercise(cells: list, exercise: str) -> tuple[int, int]:
    """(exercise cell index, check cell index) of exercise id `exercise`; ConfigError when either is missing."""
    for i, ids in check_cells(cells):
        if exercise in ids:
            j = exercise_cell_before(cells, i)
            if j is None:
                raise ConfigError(f"the check cell of exercise {exercise} has no cell tagged 'exercise' above it. "
                                  "Fix: tag the learner's cell 'exercise'.")
            return j, i
    raise ConfigError(f"no cell tagged 'check' calls check({exercise!r}, ...). Fix: add one below the exercise.")


# ---------------------------------------------------------------- solution regions
def strip_solutions(source: str, where: str = "cell") -> str:
    """`source` with every BEGIN/END SOLUTION region replaced by the stub, at the BEGIN marker's indentation."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ConfigError(f"{where}, line {number}: '{BEGIN}' inside another solution region. Fix: close "
                                  f"the first one with '{END}'.")
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
        raise ConfigError(f"{where}: '{BEGIN}' is never closed. Fix: add a '{END}' line.")
    return "\n".join(out)


def replace_solution(source: str, replacement: str) -> str:
    """`source` with the code of its first solution region replaced by `replacement`, re-indented to the markers."""
    lines = source.splitlines()
    stripped = [line.strip() for line in lines]
    if BEGIN not in stripped or END not in stripped:
        raise ConfigError(f"the cell has no '{BEGIN}' ... '{END}' region to replace.")
    start, stop = stripped.index(BEGIN), stripped.index(END)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    body = textwrap.indent(textwrap.dedent(replacement).strip("\n"), indent).splitlines()
    return "\n".join(lines[:start] + body + lines[stop + 1:])


def skeleton(source: str) -> list[str]:
    """The code lines of an exercise cell outside its solution regions (what the student copy still shows)."""
    lines, inside = [], False
    for line in source.splitlines():
        s = line.strip()
        if s == BEGIN:
            inside = True
        elif s == END:
            inside = False
        elif not inside and s and not s.startswith("#"):
            lines.append(s)
    return lines


# ---------------------------------------------------------------- files
def _nbformat():
    try:
        import nbformat
    except ImportError:
        raise ConfigError("reading notebooks needs nbformat. Fix: pip install 'llmcourse[course]'.") from None
    return nbformat


def read_notebook(path: str | Path):
    """The notebook at `path` (nbformat 4); ConfigError when it is missing or not a notebook."""
    nbformat = _nbformat()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"notebook {path} not found. Fix: give the path of an .ipynb file, e.g. "
                          "week01/02_attention_from_scratch.ipynb.")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # not JSON, not UTF-8, not a notebook
        raise ConfigError(f"{path} is not a notebook ({type(exc).__name__}). Fix: give the .ipynb file that "
                          "Jupyter saved.") from None


def notebook_text(nb: Any) -> str:
    """`nb` as the text Jupyter writes (nbformat 4, one-space indent, a final newline)."""
    text = _nbformat().writes(nb)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(nb: Any, path: str | Path) -> None:
    """Write `nb` to `path` as Jupyter does (nbformat 4, one-space indent), atomically."""
    atomic_write(path, notebook_text(nb))


def read_notebook_json(path: str | Path) -> dict:
    """The notebook at `path` as plain JSON, keys in file order (for edits that must not reformat the file)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_notebook_json(nb: dict, path: str | Path) -> None:
    """Write a notebook read by `read_notebook_json` back in the course's format (one-space indent), atomically."""
    atomic_write(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
