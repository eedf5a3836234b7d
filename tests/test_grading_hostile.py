"""Issue 21's acceptance: every attack class of the hostile review, graded in one batch with --jobs 2.

The reference is the grading sample with an answer spec on each exercise (test_grading_judge). The batch holds the
honest submission, a partly solved one, and:
- the six ways of beating checks from inside the kernel (test_grading_judge.ATTACKS), each with wrong answers;
- the ways out of the kernel (test_grading_sandbox): reading the reference and running its solutions, rewriting the
  grader's package, the reference and other students' results, a loopback connection to a port this test opens
  (that submission also solves every exercise), a double-forked process left behind, a grandchild holding memory;
- files that are not notebooks (test_grading_robust.BAD_FILES: integer tags, a cell without a type or a source, lone
  surrogates, ...).
The honest submission keeps full marks, no hostile or wrong one gets them, every submission has its row, nothing a
submission started is alive afterwards, the grader's files are unchanged, and the port got no connection. A second
batch of the honest submission draws other inputs.
"""

from __future__ import annotations

import pytest
from test_grading import RIGHT, WRONG, fill, student_copy
from test_grading_judge import ATTACKS, CHAMELEONS, answer_sources, attacked, judged_reference
from test_grading_robust import BAD_FILES, FULL, honest, report, summary, write
from test_grading_sandbox import (
    HOG,
    NETWORK,
    ORPHAN,
    REWRITE,
    ROOT,
    STEAL_SOLUTIONS,
    Listener,
    escapees,
    hostile,
    needs_sandbox,
    package_digest,
)

from llmcourse.teaching.grading import grade

OUTSIDE = ["steal_solutions", "rewrite", "network", "orphan", "hog"]


@pytest.fixture(scope="module")
def hostile_batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    reference = judged_reference(folder / "reference")
    submitted, out = folder / "submitted", folder / "grades"
    listener = Listener()
    nbs = {"honest": honest()}
    partly = student_copy()  # right answers to 1.1 and 1.2, the stub of 1.3
    for ex in ("1.1", "1.2"):
        fill(partly, ex, RIGHT[ex])
    nbs["partly"] = partly
    for name, source in ATTACKS.items():
        nbs[name] = attacked(source, CHAMELEONS if name == "frames" else WRONG)
    nbs["steal_solutions"] = hostile(STEAL_SOLUTIONS.format(reference=str(reference)))
    nbs["rewrite"] = hostile(REWRITE.format(out=str(out), package=str(ROOT / "llmcourse"), checkout=str(ROOT),
                                            submitted=str(submitted)))
    nbs["network"] = hostile(NETWORK.format(port=listener.port))
    for ex, code in RIGHT.items():  # it is the connection that must fail, not the notebook
        fill(nbs["network"], ex, code)
    nbs["orphan"] = hostile(ORPHAN)
    nbs["hog"] = hostile(HOG)
    subs = [write(submitted, name, nb) for name, nb in nbs.items()]
    subs += [write(submitted, f"bad_{name}", content) for name, (content, _) in BAD_FILES.items()]
    before = package_digest(reference)
    try:
        grade(subs, reference, out=out, jobs=2, timeout=120, memory_gib=1.5, progress=False)
    finally:
        listener.close()
    grade([subs[0]], reference, out=folder / "again", timeout=120, memory_gib=1.5, progress=False)
    return {"out": out, "again": folder / "again", "before": before, "after": package_digest(reference),
            "listener": listener, "names": [*nbs, *(f"bad_{n}" for n in BAD_FILES)]}


@pytest.mark.slow
@pytest.mark.platform("linux")
@needs_sandbox
def test_one_batch_of_every_attack(hostile_batch):
    out = hostile_batch["out"]
    rows, by = summary(out), report(out)
    assert sorted(rows) == sorted(hostile_batch["names"])  # every submission has its row
    assert (rows["honest"]["status"], float(rows["honest"]["score"])) == ("completed", FULL)
    assert float(rows["network"]["score"]) == FULL and float(rows["partly"]["score"]) == 3
    for name in [*ATTACKS, *OUTSIDE]:
        if name != "network":
            assert float(rows[name]["score"]) < FULL, (name, rows[name])
    for name in ATTACKS:
        assert float(rows[name]["score"]) == 0, (name, [r for k, r in by.items() if k[0] == name])
    assert all(rows[f"bad_{name}"]["status"] == "invalid" for name in BAD_FILES)
    kernels = [n for n in rows if not n.startswith("bad_")]
    assert all(rows[n]["isolation"].startswith("bubblewrap") for n in kernels), {n: rows[n]["isolation"]
                                                                                  for n in kernels}
    # out of the kernel: nothing reached
    assert rows["hog"]["status"] == "memory", rows["hog"]  # the grandchild's memory counted
    assert hostile_batch["listener"].connections == 0
    assert hostile_batch["after"] == hostile_batch["before"]  # the grader's package and the references unchanged
    assert not escapees()  # nothing a submission started is alive after the batch
    text = {n: (out / "notebooks" / f"{n}.ipynb").read_text(encoding="utf-8") for n in kernels}
    assert "read the reference: False" in text["steal_solutions"]
    assert by[("steal_solutions", "1.1")]["status"] == "not attempted"
    assert "files rewritten: 0" in text["rewrite"]
    assert "connected to the grader's loopback: False" in text["network"]
    # inside the kernel: the judge decided, and the stored notebooks say so
    assert by[("transformer", "1.1")]["message"] == "the answer cell recorded no answer."
    assert by[("frames", "1.1")]["status"] == "failed" and "TypeError" in by[("frames", "1.1")]["message"]
    assert by[("partly", "1.3")]["status"] == "not attempted"
    assert "✗ Exercise 1.1 failed (judged by the grader)" in text["hook"]
    assert "✓ Exercise 1.2 passed (judged by the grader)" in text["honest"]
    # another batch, other inputs: answers recorded in one batch are no use in the next
    again = hostile_batch["again"] / "notebooks" / "honest.ipynb"
    assert answer_sources(out / "notebooks" / "honest.ipynb") != answer_sources(again)
    assert float(summary(hostile_batch["again"])["honest"]["score"]) == FULL
