"""The judge (issue 21, item 1): answers computed in the student's kernel, judged as plain data outside it.

The judged reference is the grading sample with an answer spec on each check cell. The ways of beating checks that
run inside the kernel (ATTACKS, each with wrong answers to the exercises: an input transformer that rewrites the
grader's cells, a post_run_cell hook that prints passing results, replacing the grader's answer recorder, patching
the display publisher's class, patching numpy's comparisons, an answer object that looks for the expected value in
the frames around it) are graded in test_grading_hostile's one batch: none may score. Here the judge's comparison is
fed wrong answers directly.
"""

from __future__ import annotations

import json
import math

import nbformat
import pytest
from test_grading import FIXTURE, POINTS, WRONG, fill, student_copy

from llmcourse.teaching.grading.judge import ANSWERS_FILE, AnswerSpec, answer_spec, judge, new_seed, read_answers
from llmcourse.teaching.grading.reference import reference_exercises

SPECS = {  # check cell id -> answer spec: each exercise judged on inputs drawn from the batch's seed
    # every entry near 500, where exp overflows in float32: a softmax that does not subtract the row's largest entry
    # fails on every draw (with "* 100" alone, one batch in about 80 drew no entry above 88.7 and let it pass)
    "check11": {"code": "x_probe = torch.tensor(rng.normal(size=(3, 7)) * 10 + 500, dtype=torch.float32)\n"
                        "ANSWER = softmax(x_probe)", "rtol": 1e-5, "atol": 1e-6},
    "check12": {"code": "a, b = rng.normal(size=8), rng.normal(size=8)\nANSWER = mse(a, b)", "rtol": 1e-7,
                "atol": 1e-9},
    "check13": {"code": "ANSWER = n_params", "rtol": 0, "atol": 0},
}

TRANSFORMER = '''def _skip_grader_cells(lines):  # every cell the grader added becomes "pass"
    return ["pass\\n"] if any("_llmcourse_grader" in line for line in lines) else lines
get_ipython().input_transformers_post.append(_skip_grader_cells)'''

HOOK = '''from IPython.display import display
def _fake(result=None):  # after every cell, a passing result for each exercise
    for ex in ("1.1", "1.2", "1.3"):
        display({"text/plain": "✓", "application/vnd.llmcourse.check+json":
                 {"exercise": ex, "status": "passed", "message": ""}}, raw=True)
get_ipython().events.register("post_run_cell", _fake)'''

RECORDER = '''import json, sys
for name in list(sys.modules):  # the grader's module in the kernel: replace its answer recorder
    if name.startswith("_llmcourse_grader_"):
        def _save(exercise, code, seed, path):
            with open(path, "a") as f:
                f.write(json.dumps({"exercise": exercise, "answer": 1.0}) + "\\n")
        sys.modules[name].save = _save'''

PUBLISHER = '''shell = get_ipython()
_publish = type(shell.display_pub).publish
def _passing(self, data, *args, **kwargs):  # every published result says "passed"
    key = "application/vnd.llmcourse.check+json"
    if isinstance(data, dict) and key in data:
        data = {**data, key: {**data[key], "status": "passed", "message": ""}}
    return _publish(self, data, *args, **kwargs)
type(shell.display_pub).publish = _passing'''

NUMPY = '''np.allclose = lambda *args, **kwargs: True
np.isclose = lambda a, b, *args, **kwargs: np.ones_like(np.asarray(a), dtype=bool)
torch.allclose = lambda *args, **kwargs: True'''

FRAMES = '''import sys
class Chameleon:  # equal to whatever it is compared with, once it finds the expected value around it
    def __eq__(self, other):
        return True
    def tolist(self):
        frame = sys._getframe(1)
        while frame is not None:
            for name in ("expected", "want", "reference"):
                if name in frame.f_locals:
                    return frame.f_locals[name]
            frame = frame.f_back
        return Chameleon()'''
CHAMELEONS = {"1.1": "return Chameleon()", "1.2": "return Chameleon()", "1.3": "n_params = Chameleon()"}

ATTACKS = {"transformer": TRANSFORMER, "hook": HOOK, "recorder": RECORDER, "publisher": PUBLISHER, "numpy": NUMPY,
           "frames": FRAMES}


def judged_reference(folder) -> object:
    nb = nbformat.read(FIXTURE, as_version=4)
    for cell in nb.cells:
        if cell.get("id") in SPECS:
            cell.metadata.setdefault("llmcourse", {})["answer"] = SPECS[cell["id"]]
    nb.metadata.setdefault("llmcourse", {})["points"] = POINTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FIXTURE.name
    nbformat.write(nb, path)
    return path


def attacked(source: str, answers: dict[str, str] = WRONG) -> nbformat.NotebookNode:
    """The student copy with `answers` (wrong ones) in the exercise cells, and `source` in a cell after the data
    cell."""
    nb = student_copy()
    for ex, code in answers.items():
        fill(nb, ex, code)
    i = next(k for k, c in enumerate(nb.cells) if c.get("id") == "data")
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))
    return nb


# ---------------------------------------------------------------- the comparison, fed wrong answers
@pytest.mark.parametrize("got, status, says", [
    ({"exercise": "1.1", "answer": [[0.25, 0.75], [0.5, 0.5]]}, "passed", ""),
    ({"exercise": "1.1", "answer": [[0.25, 0.75], [0.5, 0.5 + 1e-4]]}, "failed", "answer[1][1] is 0.5001"),
    ({"exercise": "1.1", "answer": [[0.25, 0.75]]}, "failed", "1 entries, expected 2"),
    ({"exercise": "1.1", "answer": [[0.25, 0.75], [float("nan"), 0.5]]}, "failed", "answer[1][0] is nan"),
    ({"exercise": "1.1", "answer": [[0.25, 0.75], [True, 0.5]]}, "failed", "expected a number"),
    ({"exercise": "1.1", "answer": "[[0.25, 0.75], [0.5, 0.5]]"}, "failed", "not a list"),
    ({"exercise": "1.1", "error": "NotImplementedError", "message": ""}, "not attempted", "NotImplementedError"),
    ({"exercise": "1.1", "error": "NameError", "message": "name 'softmax' is not defined"}, "not attempted",
     "NameError"),
    ({"exercise": "1.1", "error": "TypeError", "message": "an answer of type Chameleon cannot be recorded"}, "failed",
     "raised TypeError"),
    (None, "error", "recorded no answer"),
])
def test_the_judge_rejects_wrong_answers(got, status, says):
    expected = {"exercise": "1.1", "answer": [[0.25, 0.75], [0.5, 0.5]]}
    verdict, message = judge(got, expected, AnswerSpec("ANSWER = 0", rtol=1e-5, atol=1e-6))
    assert (verdict, says in message) == (status, True), message


def _softmax_answer(spec_code: str, body: str, seed: int):
    import numpy as np
    import torch

    scope = {"torch": torch, "np": np, "rng": np.random.default_rng(seed)}
    exec("def softmax(x):\n" + "".join(f"    {line}\n" for line in body.splitlines()), scope)
    exec(spec_code, scope)
    return {"answer": scope["ANSWER"].tolist()}


@pytest.mark.parametrize("code, wrong_passes", [(SPECS["check11"]["code"], 0),
                                                ("x_probe = torch.tensor(rng.normal(size=(3, 7)) * 100, "
                                                 "dtype=torch.float32)\nANSWER = softmax(x_probe)", None)])
def test_the_probe_rejects_the_naive_softmax_on_every_draw(code, wrong_passes):
    """A spec's inputs are drawn afresh for every batch, so they must separate the wrong answer on every draw, not on
    most: the old probe (entries of size 100) let the softmax without the max subtracted pass about 1 batch in 80."""
    from test_grading import RIGHT

    spec = AnswerSpec(code, rtol=1e-5, atol=1e-6)
    passes = sum(judge(_softmax_answer(code, WRONG["1.1"], seed), _softmax_answer(code, RIGHT["1.1"], seed),
                       spec)[0] == "passed" for seed in range(400))
    if wrong_passes is None:  # the old probe: some of 400 seeds let it through (the flake this test pins)
        assert passes > 0
    else:
        assert passes == wrong_passes


def test_exact_answers_and_nan_are_compared_as_such():
    exact = AnswerSpec("ANSWER = 0", rtol=0, atol=0)
    assert judge({"answer": 21}, {"answer": 21}, exact)[0] == "passed"
    assert judge({"answer": 18}, {"answer": 21}, exact) == ("failed", "answer is 18, expected 21 (tolerance 0 + "
                                                                       "0·|expected|)")
    assert judge({"answer": math.nan}, {"answer": math.nan}, exact)[0] == "passed"
    with pytest.raises(ValueError, match="reference's own answer raised"):
        judge({"answer": 1}, {"error": "RuntimeError"}, exact)


def test_a_derivation_is_applied_to_both_answers_and_an_unknown_one_is_refused(monkeypatch):
    from llmcourse.teaching.grading import judge as judge_module

    monkeypatch.setitem(judge_module.DERIVATIONS, "length", ("builtins", "len"))
    spec = answer_spec({"metadata": {"llmcourse": {"answer": {"code": "ANSWER = 'abc'", "derive": "length",
                                                               "rtol": 0, "atol": 0}}}})
    assert spec.derive == "length"
    assert judge({"answer": "xyz"}, {"answer": "abc"}, spec)[0] == "passed"  # compared as lengths: 3 and 3
    assert judge({"answer": "xy"}, {"answer": "abc"}, spec) == ("failed", "answer is 2, expected 3 (tolerance 0 + "
                                                                          "0·|expected|)")
    monkeypatch.setitem(judge_module.DERIVATIONS, "strict", ("builtins", "float"))
    strict = AnswerSpec("ANSWER = 1", derive="strict")
    verdict, message = judge({"answer": "one"}, {"answer": 1}, strict)
    assert verdict == "failed" and message.startswith("the answer could not be read: could not convert")
    with pytest.raises(ValueError, match="does not know"):
        answer_spec({"metadata": {"llmcourse": {"answer": {"code": "ANSWER = 1", "derive": "exec"}}}})


def test_answers_are_read_as_data_and_the_last_record_counts(tmp_path):
    lines = [json.dumps({"exercise": "1.1", "answer": 1}), "not json", json.dumps(["a list"]),
             json.dumps({"exercise": "1.1", "answer": 2}), json.dumps({"exercise": 3})]
    (tmp_path / ANSWERS_FILE).write_text("\n".join(lines), encoding="utf-8")
    assert read_answers(tmp_path) == {"1.1": {"exercise": "1.1", "answer": 2}}
    assert read_answers(tmp_path / "nowhere") == {}


def test_each_batch_draws_its_own_seed_and_the_reference_carries_its_specs(tmp_path):
    assert len({new_seed() for _ in range(20)}) == 20
    refs = reference_exercises(nbformat.read(judged_reference(tmp_path), as_version=4), POINTS)
    assert [r.answer == answer_spec({"metadata": {"llmcourse": {"answer": SPECS[r.check_cell["id"]]}}})
            for r in refs] == [True, True, True]
    assert answer_spec(nbformat.read(FIXTURE, as_version=4).cells[6]) is None  # no spec: checked in the kernel


def answer_sources(path) -> list[str]:
    """The sources of the answer cells of a stored graded notebook (they hold the batch's seed)."""
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.metadata.get("llmcourse_grader", {}).get("role") == "answer"]


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_week_1_2_is_judged_outside_the_kernel(tmp_path):
    """Week 1.2's four exercises carry answer specs: its own solutions, submitted, pass every one as judged by the
    grader on this batch's inputs; the untouched student copy attempts none."""
    from test_grading_robust import write

    from llmcourse.teaching.grading import grade
    from llmcourse.teaching.release import make_student_copy

    notebook = FIXTURE.parents[2] / "week01" / "02_attention_from_scratch.ipynb"
    reference = nbformat.read(notebook, as_version=4)
    assert all(ex.answer is not None for ex in reference_exercises(reference, {}))
    subs = [write(tmp_path / "in", "solved", reference), write(tmp_path / "in", "untouched",
                                                                make_student_copy(reference))]
    records = grade(subs, notebook, out=tmp_path / "grades", jobs=2, timeout=600, memory_gib=3, progress=False)
    got = {r["submission"]: {row["exercise"]: row["status"] for row in r["rows"]} for r in records}
    assert got == {"solved": dict.fromkeys(["2.1", "2.2", "2.3", "2.4"], "passed"),
                   "untouched": dict.fromkeys(["2.1", "2.2", "2.3", "2.4"], "not attempted")}, records


@pytest.mark.parametrize("status, flag", [("memory", "--memory"), ("timeout", "--timeout"), ("files", "--files")])
def test_a_reference_past_a_limit_names_the_flag_to_raise(tmp_path, monkeypatch, status, flag):
    """Week 4.1's reference needs more than the default 4 GiB: the batch must say to raise --memory, not to mend the
    specs."""
    from llmcourse.errors import GradingError
    from llmcourse.teaching import sandbox
    from llmcourse.teaching.grading import grade
    from llmcourse.teaching.sandbox import RunOutcome

    monkeypatch.setattr(sandbox, "run_notebook", lambda *args, **kwargs: RunOutcome(
        status, f"passed its {status} limit: the run was stopped.", 1.0, 0))
    sub = tmp_path / "in" / "alice.ipynb"
    sub.parent.mkdir()
    nbformat.write(student_copy(), sub)
    with pytest.raises(GradingError, match=f"passed a limit of this batch.*Fix: raise {flag}"):
        grade([sub], judged_reference(tmp_path / "ref"), out=tmp_path / "grades", progress=False)
