"""Run one exercise of a notebook outside the notebook: its exercise cell (the solution, or a replacement for the
solution region), then its check cell, in a namespace the test prepares. Used by tests/test_exercises_*.py to prove
that every check accepts the right answer and rejects plausible wrong ones without executing the whole notebook.

`judged` does the same for the grader's judge (issue 21): it runs the exercise, then the check cell's answer spec
through the very function the grader defines in the kernel (`judge.KERNEL_SAVE`), for the reference solution and
for the answer under test on the same seed, and returns the judge's verdict on the two records.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

from llmcourse import checks
from llmcourse.teaching import notebooks
from llmcourse.teaching.grading.judge import KERNEL_SAVE, AnswerSpec, answer_spec, derived, judge
from llmcourse.teaching.notebooks import cell_source, find_exercise, read_notebook, replace_solution

ROOT = Path(__file__).resolve().parents[1]
STUB = "\n".join(notebooks.STUB)  # what the student copy holds in place of a solution


def exercise_cells(notebook: str | Path, exercise: str) -> tuple[str, str]:
    """(exercise cell source, check cell source) for exercise id `exercise` in `notebook` (path from the repo root)."""
    cells = read_notebook(ROOT / notebook).cells
    i, j = find_exercise(cells, exercise)
    return cell_source(cells[i]), cell_source(cells[j])


def run_exercise(notebook: str | Path, exercise: str, context: dict | None = None,
                 solution: str | None = None) -> checks.CheckResult:
    """Run the exercise (with `solution` in place of the reference one, if given) and its check; return the result."""
    ex_src, check_src = exercise_cells(notebook, exercise)
    if solution is not None:
        ex_src = replace_solution(ex_src, solution)
    namespace = dict(context or {})
    results: list[checks.CheckResult] = []
    original = checks._emit
    checks._emit = results.append
    try:
        try:
            exec(compile(_strip_magics(ex_src), f"<{exercise} exercise>", "exec"), namespace)
        except NotImplementedError:
            pass
        exec(compile(_strip_magics(check_src), f"<{exercise} check>", "exec"), namespace)
    finally:
        checks._emit = original
    assert len(results) == 1, f"the check cell of {exercise} ran {len(results)} checks, expected 1"
    return results[0]


def spec_of(notebook: str | Path, exercise: str) -> AnswerSpec:
    """The answer spec on the check cell of `exercise` (AssertionError when it has none)."""
    cells = read_notebook(ROOT / notebook).cells
    spec = answer_spec(cells[find_exercise(cells, exercise)[1]])
    assert spec is not None, f"the check cell of {exercise} in {notebook} carries no answer spec"
    return spec


def answer_record(notebook: str | Path, exercise: str, context: dict | None = None, solution: str | None = None,
                  seed: int = 0) -> dict:
    """The record the grader's answer cell writes for `exercise` after its exercise cell (with `solution` in place of
    the reference one, if given) ran in a copy of `context`, on inputs drawn from `seed`: {"exercise", "answer"} or
    {"exercise", "error", "message"}."""
    ex_src, _ = exercise_cells(notebook, exercise)
    if solution is not None:
        ex_src = replace_solution(ex_src, solution)
    namespace = dict(context or {})
    try:
        exec(compile(_strip_magics(ex_src), f"<{exercise} exercise>", "exec"), namespace)
    except NotImplementedError:
        pass
    kernel = {"get_ipython": lambda: SimpleNamespace(user_ns=namespace)}
    exec(KERNEL_SAVE, kernel)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "answers.jsonl"
        kernel["_llmcourse_save_answer"](exercise, spec_of(notebook, exercise).code, seed, str(path))
        return json.loads(path.read_text(encoding="utf-8").splitlines()[-1])


def judged(notebook: str | Path, exercise: str, context: dict | None = None, solution: str | None = None,
           seed: int = 0, expected: dict | None = None) -> tuple[str, str]:
    """The judge's (status, message) for `solution` (None: the reference solution itself) against the reference
    solution's answer (`expected`, or computed), both on the inputs `seed` draws, each in its own copy of `context`."""
    expected = expected or answer_record(notebook, exercise, context, None, seed)
    got = answer_record(notebook, exercise, context, solution, seed)
    return judge(got, expected, spec_of(notebook, exercise))


def judged_cases(table: list[tuple]) -> list:
    """pytest params (notebook, exercise, context factory, wrong answer), one per wrong answer, from rows
    (notebook, exercise, context factory, {what is wrong: answer}): the wrong answers a week's checks are tested on,
    fed to the judge too."""
    import pytest

    return [pytest.param(nb, ex, ctx, wrong, id=f"{ex} {name}") for nb, ex, ctx, wrongs in table
            for name, wrong in wrongs.items()]


def judge_tests(table: list[tuple], seed: int, with_request: bool = False, fixtures: tuple[str, ...] = (),
                reuse_reference: bool = False) -> tuple:
    """The two judge tests of a week's exercises, for a module to bind to test_ names: every wrong answer of `table`
    (rows as for `judged_cases`) fails the judge; the reference passes, a stub is not attempted, and two seeds give
    different answers (else the answer could be computed before the batch). With `with_request`, the context
    factories take pytest's `request` (for fixtures); `fixtures` are set up before each test. With
    `reuse_reference` (for specs that take seconds), the reference's answer at `seed` is computed once per exercise
    and every answer under test is judged against it; `passes` still computes a second one to compare with it."""
    import pytest

    references: dict[tuple[str, str], dict] = {}

    def make(ctx, request):
        return ctx(request) if with_request else ctx()

    def reference(notebook, exercise, ctx, request):
        if not reuse_reference:
            return None
        if (notebook, exercise) not in references:
            references[notebook, exercise] = answer_record(notebook, exercise, make(ctx, request), seed=seed)
        return references[notebook, exercise]

    @pytest.mark.parametrize("notebook,exercise,ctx,wrong", judged_cases(table))
    def rejects(notebook, exercise, ctx, wrong, request):
        expected = reference(notebook, exercise, ctx, request)
        assert judged(notebook, exercise, make(ctx, request), wrong, seed=seed, expected=expected)[0] == "failed"

    @pytest.mark.parametrize("notebook,exercise,ctx", [row[:3] for row in table], ids=[row[1] for row in table])
    def passes(notebook, exercise, ctx, request):
        expected = reference(notebook, exercise, ctx, request)
        assert judged(notebook, exercise, make(ctx, request), seed=seed, expected=expected) == ("passed", "")
        assert judged(notebook, exercise, make(ctx, request), STUB, seed=seed,
                      expected=expected)[0] == "not attempted"
        first = (expected or answer_record(notebook, exercise, make(ctx, request), seed=seed))["answer"]
        other = answer_record(notebook, exercise, make(ctx, request), seed=seed + 1)["answer"]
        spec = spec_of(notebook, exercise)
        first, other = derived(first, spec), derived(other, spec)  # a git bundle: its facts
        assert first != other, "the answer does not depend on the batch's seed: it could be computed in advance"

    if not fixtures:  # an empty usefixtures() mark only earns a PytestWarning
        return rejects, passes
    uses = pytest.mark.usefixtures(*fixtures)
    return uses(rejects), uses(passes)


def _strip_magics(src: str) -> str:
    return "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
