"""Grading, stage 2: the notebook to run, built from the student's cells and the reference's check cells.

After each of the student's exercise cells comes, matched by exercise id (through the cell id that `llmcourse
release` keeps, else the code around the solution), either an answer cell or the instructor's check cell:

- an answer cell where the reference's check cell carries an answer spec (`judge`): it computes the answer on inputs
  drawn from the batch's secret seed and records it as data; the grader judges it outside the kernel;
- otherwise the check cell, run in the kernel. It first rebuilds `llmcourse.checks` from the grader's copy of its
  source, undoing what the student's cells may have done to `check`, to the module, to the import system or to
  IPython's display. Code aimed at the checks themselves can still beat this; an answer spec cannot be beaten so.

Every inserted cell carries a random per-run nonce in its metadata, which code running in the kernel cannot change.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat

from ... import checks
from ..notebooks import BEGIN, CHECK_CALL, STUB, cell_source, cell_tags
from .judge import ANSWERS_FILE, KERNEL_SAVE
from .reference import RefExercise

__all__ = ["GRADER_KEY", "build_graded_notebook", "checks_source", "code_of", "continued_error", "suspicious"]

GRADER_KEY = "llmcourse_grader"
SUSPICIOUS = [  # (pattern over the student's own code cells, note for the instructor)
    (r"llmcourse\s*\.\s*checks|from\s+llmcourse\s+import\s+[^\n]*\bchecks\b", "uses llmcourse.checks"),
    (r"^\s*def\s+(check|expect\w*|_emit|_run)\s*\(|^\s*(check|expect\w*|_emit|_run)\s*=", "redefines a check helper"),
    (r"vnd\.llmcourse|RESULT_MIME|CheckResult", "writes check results"),
    (r"sys\s*\.\s*modules|__import__|importlib|\bbuiltins\b|__builtins__", "touches the import system or builtins"),
    (r"display_pub|display_functions|\.events\s*\.\s*register|displayhook", "touches IPython's display or events"),
    (r"_llmcourse_grader|llmcourse_grader", "touches the grader"),
]



def checks_source() -> str:
    """The source of llmcourse.checks as the grader has it (the inserted cells rebuild the module from it)."""
    return Path(checks.__file__).read_text(encoding="utf-8")


def _init_cell(nonce: str) -> Any:
    src = f'''# Added by llmcourse grade: keep what the checks rely on, before any of the student's code runs.
def _llmcourse_grader_setup(source, save_source):
    import builtins, sys, types
    import IPython.display, IPython.core.display_functions as df
    shell = get_ipython()
    keep = dict(importer=builtins.__import__, display=df.display, pub=shell.display_pub)
    def restore():
        builtins.__import__ = keep["importer"]
        IPython.display.display = df.display = keep["display"]
        shell.display_pub = keep["pub"]
        vars(keep["pub"]).pop("publish", None)
        fresh = types.ModuleType("llmcourse.checks")
        fresh.__file__ = "llmcourse/checks.py"
        sys.modules["llmcourse.checks"] = fresh
        exec(compile(source, fresh.__file__, "exec"), fresh.__dict__)
        import llmcourse
        llmcourse.checks = fresh
    grader = types.ModuleType("_llmcourse_grader_{nonce}")
    grader.restore = restore
    scope = {{"get_ipython": get_ipython}}
    exec(save_source, scope)
    grader.save = scope["_llmcourse_save_answer"]
    sys.modules[grader.__name__] = grader
_llmcourse_grader_setup({checks_source()!r}, {KERNEL_SAVE!r})
del _llmcourse_grader_setup'''
    return _grader_cell(src, nonce, "init", "")


def _grader_cell(source: str, nonce: str, role: str, exercise: str, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata[GRADER_KEY] = {"nonce": nonce, "role": role, "exercise": exercise}
    if tags:
        cell.metadata["tags"] = list(tags)
    if role == "init":
        cell.metadata["jupyter"] = {"source_hidden": True}
    return cell


def _check_cell(ex: RefExercise, nonce: str) -> Any:
    restore = f'import sys; sys.modules["_llmcourse_grader_{nonce}"].restore()  # added by llmcourse grade\n'
    return _grader_cell(restore + cell_source(ex.check_cell), nonce, "check", ex.id, tags=("raises-exception",))


def _answer_cell(ex: RefExercise, nonce: str, seed: int) -> Any:
    assert ex.answer is not None
    src = (f"# Added by llmcourse grade: your answer to exercise {ex.id}, on inputs drawn for this batch; the grader "
           f"judges it.\nimport sys\nsys.modules[\"_llmcourse_grader_{nonce}\"].save({ex.id!r}, {ex.answer.code!r}, "
           f"{seed}, {ANSWERS_FILE!r})")
    return _grader_cell(src, nonce, "answer", ex.id, tags=("raises-exception",))


def _match(cells: list, refs: list[RefExercise]) -> dict[str, list[int]]:
    """Indices of the student's cells that hold each exercise: same cell id, else an exercise cell with its code."""
    by_id = {ex.exercise_cell.get("id"): ex.id for ex in refs if ex.exercise_cell.get("id")}
    matches: dict[str, list[int]] = {ex.id: [] for ex in refs}
    for i, cell in enumerate(cells):
        if cell.get("id") in by_id:
            matches[by_id[cell["id"]]].append(i)
    for ex in refs:
        if not ex.skeleton:
            continue
        for i, cell in enumerate(cells):
            if i in matches[ex.id] or cell.get("id") in by_id and by_id[cell["id"]] != ex.id:
                continue
            lines = {line.strip() for line in cell_source(cell).splitlines()}
            is_exercise = "exercise" in cell_tags(cell) or STUB[0] in lines or BEGIN in lines
            if is_exercise and ex.skeleton[0] in lines:
                matches[ex.id].append(i)
        matches[ex.id].sort()
    return matches


def build_graded_notebook(student: Any, refs: list[RefExercise], nonce: str, seed: int | None = None,
                          go_on: bool = True) -> tuple[Any, dict[str, str]]:
    """The notebook to run, and a note per exercise on how its cell was found ("" when all is as released).

    With `seed`, exercises whose reference carries an answer spec get an answer cell instead of the check cell.
    With `go_on`, the run goes on past a cell that fails (a submission); without, it stops there (the reference)."""
    known = {ex.id for ex in refs}
    kept = [c for c in student.cells if not (c.cell_type == "code" and "check" in cell_tags(c))]
    matches = _match(kept, refs)
    matched = {i for found in matches.values() for i in found}
    kept_cells = [(i, c) for i, c in enumerate(kept)
                  if i in matched or not (c.cell_type == "code" and set(CHECK_CALL.findall(cell_source(c))) & known)]
    notes: dict[str, str] = {}
    last = {ex.id: matches[ex.id][-1] for ex in refs if matches[ex.id]}
    order = [ex.id for ex in refs if ex.id in last]
    in_order = sorted(order, key=lambda e: last[e])
    for ex in refs:
        found = matches[ex.id]
        if not found:
            notes[ex.id] = "missing"
        elif len(found) > 1:
            notes[ex.id] = f"duplicated exercise cell ({len(found)} copies): graded the last one"
        elif order.index(ex.id) != in_order.index(ex.id):
            notes[ex.id] = "exercise cells reordered: checked right after this one"
        else:
            notes[ex.id] = ""
    after = {i: ex for ex in refs for i in [last.get(ex.id)] if i is not None}
    cells = [_init_cell(nonce)]
    for i, cell in kept_cells:
        cell = nbformat.from_dict(cell)
        cell.metadata.pop(GRADER_KEY, None)  # only the grader marks cells
        if i in matched:
            cell.metadata["tags"] = sorted(set(cell_tags(cell)) | {"raises-exception"})
        elif go_on and cell.cell_type == "code" and "raises-exception" not in cell_tags(cell):
            # the course's cells (and the student's own): one that fails, say on a name an unsolved exercise never
            # bound, does not stop the run, so the exercises after it are still graded (`continued_error`)
            cell.metadata["tags"] = sorted(set(cell_tags(cell)) | {"raises-exception"})
            cell.metadata[GRADER_KEY] = {"nonce": nonce, "role": "continued"}
        if i in after:
            cell.metadata[GRADER_KEY] = {"nonce": nonce, "role": "exercise", "exercise": after[i].id}
        cells.append(cell)
        if i in after:
            ex = after[i]
            cells.append(_answer_cell(ex, nonce, seed) if ex.answer is not None and seed is not None
                         else _check_cell(ex, nonce))
    graded = nbformat.v4.new_notebook(cells=cells, metadata=dict(student.metadata))
    graded.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return graded, notes


def continued_error(executed: Any, nonce: str) -> str:
    """The first error of a cell the run went on past (see `build_graded_notebook`), as the run's message; "" if
    none."""
    for cell in executed.cells:
        meta = cell.get("metadata", {}).get(GRADER_KEY)
        if not (isinstance(meta, dict) and meta.get("nonce") == nonce and meta.get("role") == "continued"):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return (f"cell {cell.get('execution_count') or '?'} raised {out.get('ename')}: {out.get('evalue')} "
                        f"(the run went on past it, so the exercises after it were still graded)")
    return ""


def code_of(nb: Any) -> str:
    """The source of a notebook's code cells, check cells left out."""
    return "\n".join(cell_source(c) for c in nb.cells if c.cell_type == "code" and "check" not in cell_tags(c))


def suspicious(student: Any, course_code: str = "") -> list[str]:
    """Notes on the student's own code that touches the checking machinery (for the instructor to review). Lines that
    the reference notebook holds too (`course_code`, from `code_of`) are the course's, not the student's: week 8.1
    loads its scripts with importlib, week 4.3 shows a calculator refusing `__import__`."""
    ours = {line.strip() for line in course_code.splitlines() if line.strip()}
    code = "\n".join(line for line in code_of(student).splitlines() if line.strip() not in ours)
    return [note for pattern, note in SUSPICIOUS if re.search(pattern, code, re.MULTILINE)]


