"""Every exercise is judged outside the student's kernel (issue 21, item 1), except any listed in NOT_JUDGED with the
reason (none is now that weeks 7.2, 7.3 and the capstone's 2.2 have specs): its reference check cell carries an
answer spec whose code draws its inputs from the batch's `rng` and sets ANSWER, and the Chinese edition carries the
same specs. The specs' behaviour (the reference passes, a stub is not attempted, every tested wrong answer fails, the
answer depends on the seed) is tested per week in tests/test_exercises_week*.py with `exercise_harness.judged`."""

from __future__ import annotations

import ast
import builtins

import pytest

from llmcourse.teaching.grading.judge import answer_spec
from llmcourse.teaching.notebooks import cell_source, check_cells, find_exercise, read_notebook_json
from llmcourse.teaching.syllabus import project_root

ROOT = project_root()
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("week*/[0-9]*.ipynb"))
NOT_JUDGED: dict[tuple[str, str], str] = {}  # (notebook, exercise) -> why it is checked in the kernel instead


def _checks(notebook: str) -> list[tuple[str, dict]]:
    cells = read_notebook_json(ROOT / notebook)["cells"]
    return [(ex, cells[i]) for i, ids in check_cells(cells) for ex in ids]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_exercise_carries_an_answer_spec_that_draws_from_the_seed(notebook):
    for exercise, cell in _checks(notebook):
        spec = answer_spec(cell)
        if (notebook, exercise) in NOT_JUDGED:
            assert spec is None, f"{notebook} {exercise} has a spec now: take it off NOT_JUDGED"
            continue
        assert spec is not None, f"{notebook} {exercise}: its check cell carries no answer spec"
        tree = ast.parse(spec.code)
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert "rng" in names, f"{notebook} {exercise}: the spec's inputs do not come from rng"
        assert any(isinstance(n, ast.Name) and n.id == "ANSWER" and isinstance(n.ctx, ast.Store)
                   for n in ast.walk(tree)), f"{notebook} {exercise}: the spec never sets ANSWER"
        assert 0 <= spec.rtol < 0.5 and 0 <= spec.atol, f"{notebook} {exercise}: tolerances {spec.rtol}, {spec.atol}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_chinese_edition_is_judged_alike(notebook):
    week, name = notebook.split("/")
    translated = ROOT / week / "zh-CN" / name
    if not translated.exists():
        pytest.skip(f"{notebook} has no Chinese edition")
    english = {ex: answer_spec(cell) for ex, cell in _checks(notebook)}
    chinese = {ex: answer_spec(cell) for ex, cell in _checks(f"{week}/zh-CN/{name}")}
    assert chinese == english


def _bound(source: str) -> set[str]:
    """Names a cell's code binds: assignments, definitions, imports, arguments, `except ... as`."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_a_spec_uses_only_names_the_notebook_has_bound_by_its_exercise(notebook):
    """The answer cell runs right after the exercise cell, in the kernel's namespace: a name the notebook binds only
    later (or never) would make every student's answer, and the reference's, an error."""
    cells = read_notebook_json(ROOT / notebook)["cells"]
    for exercise, cell in _checks(notebook):
        spec = answer_spec(cell)
        if spec is None:
            continue
        above = set(dir(builtins)) | {"rng", "get_ipython", "display"}
        for earlier in cells[:find_exercise(cells, exercise)[0] + 1]:
            if earlier["cell_type"] == "code" and "check" not in earlier["metadata"].get("tags", []):
                above |= _bound(cell_source(earlier))  # graded, a check cell is replaced: what it binds is gone
        used = {node.id for node in ast.walk(ast.parse(spec.code))
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        assert not used - above - _bound(spec.code), (
            f"{notebook} {exercise}: the spec reads {sorted(used - above - _bound(spec.code))}, which the notebook "
            "does not bind by the end of the exercise cell")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_no_cell_reads_a_name_only_a_check_cell_binds(notebook):
    """Graded, every check cell is replaced by the grader's answer cell: a later cell that reads a name only a check
    cell bound (an import, a helper defined there) stops the run with a NameError, after the exercises scored."""
    bound = set(dir(builtins)) | {"get_ipython", "display"}
    only_in_checks: set[str] = set()
    for cell in read_notebook_json(ROOT / notebook)["cells"]:
        if cell["cell_type"] != "code":
            continue
        names = _bound(cell_source(cell))
        if "check" in cell["metadata"].get("tags", []):
            only_in_checks |= names - bound
            continue
        code = "\n".join(line for line in cell_source(cell).splitlines() if not line.lstrip().startswith(("%", "!")))
        used = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)
                and isinstance(node.ctx, ast.Load)}
        missing = (used & only_in_checks) - bound - names
        assert not missing, (f"{notebook}: cell {cell.get('id')} reads {sorted(missing)}, bound only in a check cell "
                             "above: bind it in a cell of its own")
        bound |= names
