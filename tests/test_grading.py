"""`llmcourse grade` on sample submissions built from the student copy of tests/fixtures/grading_sample.ipynb.

The batch has one submission per way a notebook can go wrong. It is graded once with --jobs 2: each submission must get
the expected status and score, and the batch's wall time must be at most 0.6x the sum of the submissions' own times
(one job at a time would give 1.0x or more; a 2-core machine measured --jobs 1 at 93.5 s and --jobs 2 at 43.5 s).
The one-job path is graded by test_interrupted_batch_resumes (the command line with --jobs 1).
Another test kills a batch mid-way and checks that the rerun keeps what was finished and grades only the rest.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from llmcourse.errors import GradingError
from llmcourse.teaching.grading import build_graded_notebook, grade, reference_exercises, suspicious
from llmcourse.teaching.notebooks import STUB, read_notebook
from llmcourse.teaching.release import make_student_copy
from llmcourse.teaching.syllabus import project_root

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "grading_sample.ipynb"
MEMORY_GIB = 1.5  # a normal submission peaks near 0.6 GiB

RIGHT = {
    "1.1": "e = torch.exp(x - x.max(dim=-1, keepdim=True).values)\nreturn e / e.sum(dim=-1, keepdim=True)",
    "1.2": "return float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))",
    "1.3": "n_params = sum(p.numel() for p in layer.parameters())",
}
WRONG = {
    "1.1": "return torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True)  # overflows on large inputs",
    "1.2": "return float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))  # sum, not mean",
    "1.3": "n_params = layer.weight.numel()  # forgot the biases",
}
CELL = {"1.1": "ex11", "1.2": "ex12", "1.3": "ex13"}
POINTS = {"1.1": 2, "1.2": 1, "1.3": 2}

# submission -> (summary status, {exercise: status}, score)
EXPECTED = {
    "correct": ("completed", {"1.1": "passed", "1.2": "passed", "1.3": "passed"}, 5),
    "partly": ("completed", {"1.1": "passed", "1.2": "passed", "1.3": "not attempted"}, 3),
    "untouched": ("completed", {"1.1": "not attempted", "1.2": "not attempted", "1.3": "not attempted"}, 0),
    "wrong": ("completed", {"1.1": "failed", "1.2": "failed", "1.3": "failed"}, 0),
    # a cell of the student's own fails after 1.1: the run goes on, so 1.2 and 1.3 are still graded (as nbgrader
    # does); the submission's status says which cell failed. It used to stop there and cost both exercises.
    "crash": ("error", {"1.1": "passed", "1.2": "passed", "1.3": "passed"}, 5),
    "infinite_loop": ("timeout", {"1.1": "passed", "1.2": "timeout", "1.3": "timeout"}, 2),
    "os_exit": ("crashed", {"1.1": "passed", "1.2": "passed", "1.3": "crashed"}, 3),
    "memory_hog": ("memory", {"1.1": "passed", "1.2": "memory", "1.3": "memory"}, 2),
    "deleted": ("completed", {"1.1": "passed", "1.2": "failed", "1.3": "missing"}, 2),
    "tampered_redefine": ("completed", {"1.1": "failed", "1.2": "failed", "1.3": "failed"}, 0),
    "tampered_patch": ("completed", {"1.1": "tampered", "1.2": "tampered", "1.3": "tampered"}, 0),
    "corrupt": ("invalid", {"1.1": "invalid", "1.2": "invalid", "1.3": "invalid"}, 0),
}

TAMPER_REDEFINE = '''from IPython.display import display
from llmcourse.checks import RESULT_MIME

def check(exercise, test, hint=""):  # "always pass"
    display({"text/plain": f"✓ Exercise {exercise} passed",
             RESULT_MIME: {"exercise": exercise, "status": "passed", "message": ""}}, raw=True)

check("1.1", lambda: None)  # a fake record in the student's own output
shell = get_ipython()
_publish = shell.display_pub.publish

def publish(data, *args, **kwargs):  # turn every recorded failure into a pass
    if RESULT_MIME in data:
        data = {**data, RESULT_MIME: {**data[RESULT_MIME], "status": "passed", "message": ""}}
    return _publish(data, *args, **kwargs)

shell.display_pub.publish = publish'''

TAMPER_PATCH = '''import sys
import llmcourse.checks as C

C.check = lambda exercise, test, hint="": C._emit(C.CheckResult(exercise, "passed", ""))
C._run = lambda exercise, test, hint: C.CheckResult(exercise, "passed", "")
C.expect_close = C.expect_equal = lambda *args, **kwargs: None
sys.modules["llmcourse.checks"] = C

def _fake(result=None):  # after every cell, record a pass for each exercise
    from IPython.display import display
    for ex in ("1.1", "1.2", "1.3"):
        display({"text/plain": "✓", C.RESULT_MIME: {"exercise": ex, "status": "passed", "message": ""}}, raw=True)

get_ipython().events.register("post_run_cell", _fake)'''


# ---------------------------------------------------------------- building submissions
def student_copy() -> nbformat.NotebookNode:
    return make_student_copy(nbformat.read(FIXTURE, as_version=4))


def _cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def fill(nb, exercise: str, code: str) -> None:
    """Replace the stub of `exercise` in the student copy by `code` (at the stub's indentation)."""
    cell = _cell(nb, CELL[exercise])
    lines = cell.source.splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip() == STUB[0])
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    cell.source = "\n".join(lines[:i] + [indent + c for c in code.splitlines()] + lines[i + 2:])


def insert_after(nb, cell_id: str, source: str) -> None:
    i = next(k for k, c in enumerate(nb.cells) if c.get("id") == cell_id)
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))


def submissions(folder: Path) -> list[Path]:
    """Write the sample batch into `folder`; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    nbs: dict[str, nbformat.NotebookNode] = {}

    nbs["correct"] = nb = student_copy()
    for ex in RIGHT:
        fill(nb, ex, RIGHT[ex])

    nbs["partly"] = nb = student_copy()  # 1.2 pasted twice: the first copy is wrong, the last one right
    fill(nb, "1.1", RIGHT["1.1"])
    fill(nb, "1.2", RIGHT["1.2"])
    dup = nbformat.from_dict(_cell(nb, "ex12"))
    dup.id = "ex12-copy"
    dup.source = _cell(nb, "ex12").source.replace(RIGHT["1.2"], WRONG["1.2"])
    nb.cells.insert(nb.cells.index(_cell(nb, "ex12")), dup)

    nbs["untouched"] = student_copy()

    nbs["wrong"] = nb = student_copy()  # and 1.3's exercise cell moved above 1.2's
    for ex in WRONG:
        fill(nb, ex, WRONG[ex])
    ex13 = _cell(nb, "ex13")
    nb.cells.remove(ex13)
    nb.cells.insert(nb.cells.index(_cell(nb, "ex12")), ex13)

    nbs["crash"] = nb = student_copy()
    for ex in RIGHT:
        fill(nb, ex, RIGHT[ex])
    insert_after(nb, "check11", "scores = {}\nscores['week'] / 0  # KeyError: the run goes on past it")

    nbs["infinite_loop"] = nb = student_copy()
    fill(nb, "1.1", RIGHT["1.1"])
    fill(nb, "1.2", "while True:\n    pass")

    nbs["os_exit"] = nb = student_copy()
    fill(nb, "1.1", RIGHT["1.1"])
    fill(nb, "1.2", RIGHT["1.2"])
    fill(nb, "1.3", "import os\nos._exit(3)")

    nbs["memory_hog"] = nb = student_copy()
    fill(nb, "1.1", RIGHT["1.1"])
    fill(nb, "1.2", "cache = []\nwhile True:  # 128 MiB more each time round\n    cache.append(np.ones(2**24))")

    nbs["deleted"] = nb = student_copy()  # every check cell deleted, and the exercise cell of 1.3
    fill(nb, "1.1", RIGHT["1.1"])
    fill(nb, "1.2", WRONG["1.2"])
    nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", []) and c.get("id") != "ex13"]

    nbs["tampered_redefine"] = nb = student_copy()
    for ex in WRONG:
        fill(nb, ex, WRONG[ex])
    insert_after(nb, "data", TAMPER_REDEFINE)
    for ex, cid in [("1.1", "check11"), ("1.2", "check12")]:  # weakened check cells, one without its tag
        _cell(nb, cid).source = f'check("{ex}", lambda: True)'
    _cell(nb, "check12").metadata["tags"] = []

    nbs["tampered_patch"] = nb = student_copy()
    for ex in WRONG:
        fill(nb, ex, WRONG[ex])
    insert_after(nb, "data", TAMPER_PATCH)

    paths = []
    for name, nb in nbs.items():
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    corrupt = folder / "corrupt.ipynb"
    corrupt.write_text(nbformat.writes(nbs["correct"])[:700], encoding="utf-8")  # cut short mid-upload
    return paths + [corrupt]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_expected(out: Path) -> None:
    summary = {r["submission"]: r for r in read_csv(out / "summary.csv")}
    report = read_csv(out / "report.csv")
    assert set(summary) == set(EXPECTED)
    for name, (status, exercises, score) in EXPECTED.items():
        got = {r["exercise"]: r["status"] for r in report if r["submission"] == name}
        assert (summary[name]["status"], got, float(summary[name]["score"])) == (status, exercises, score), (
            name, summary[name], [r for r in report if r["submission"] == name])
        assert float(summary[name]["max_score"]) == 5


# ---------------------------------------------------------------- the batch
@pytest.fixture(scope="module")
def timeout(tmp_path_factory) -> float:
    """A timeout well above a normal submission's time on this machine now (~10 s on an idle 2-core laptop, several
    times that on a busy one): time the correct submission alone, and allow 3x."""
    folder = tmp_path_factory.mktemp("calibrate")
    sub = next(p for p in submissions(folder / "submitted") if p.stem == "correct")
    records = grade([sub], FIXTURE, out=folder / "grades", timeout=600, memory_gib=MEMORY_GIB, progress=False)
    assert [(r["status"], sum(row["points"] for row in r["rows"])) for r in records] == [("completed", 5)]
    return max(15.0, 3 * records[0]["seconds"])


@pytest.fixture(scope="module")
def batch(tmp_path_factory, timeout):
    folder = tmp_path_factory.mktemp("grading")
    subs = submissions(folder / "submitted")
    start = time.monotonic()
    grade(subs, FIXTURE, out=folder / "grades_jobs2", jobs=2, timeout=timeout, memory_gib=MEMORY_GIB, progress=False)
    wall = time.monotonic() - start
    own = sum(float(r["seconds"]) for r in read_csv(folder / "grades_jobs2" / "summary.csv"))
    print(f"\nbatch of {len(subs)} submissions, timeout {timeout:.0f} s, --jobs 2: {wall:.1f} s of wall time for "
          f"{own:.1f} s of submissions' own time, ratio {wall / own:.2f}")
    return folder, subs, {"wall": wall, "own": own}, timeout


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")  # the sandbox puts each kernel in a new session
def test_every_submission_gets_its_status_and_score(batch):
    folder, _, _, _ = batch
    assert_expected(folder / "grades_jobs2")


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_two_jobs_run_side_by_side(batch):
    _, _, timings, _ = batch
    assert timings["wall"] <= 0.6 * timings["own"], timings  # one at a time: wall >= own


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_reports_and_notebooks(batch):
    folder, _, _, _ = batch
    out = folder / "grades_jobs2"
    assert list(read_csv(out / "report.csv")[0]) == ["submission", "exercise", "status", "points", "max_points",
                                                     "message"]
    assert list(read_csv(out / "summary.csv")[0])[:5] == ["submission", "status", "score", "max_score", "seconds"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "tampered_patch" in page and "memory" in page
    names = {p.stem for p in (out / "notebooks").glob("*.ipynb")}
    assert names == set(EXPECTED) - {"corrupt"}
    summary = {r["submission"]: r for r in read_csv(out / "summary.csv")}
    assert "redefines a check helper" in summary["tampered_redefine"]["notes"]
    assert "uses llmcourse.checks" in summary["tampered_patch"]["notes"]
    assert summary["correct"]["notes"] == ""
    report = {(r["submission"], r["exercise"]): r for r in read_csv(out / "report.csv")}
    assert "duplicated" in report[("partly", "1.2")]["message"]
    assert "reordered" in report[("wrong", "1.3")]["message"]
    crash = json.loads((out / "results" / "crash.json").read_text(encoding="utf-8"))["message"]
    assert "raised KeyError" in crash and "went on past it" in crash, crash
    assert "NaN or inf" in report[("wrong", "1.1")]["message"]
    assert not (out / ".work").exists()  # kernels run in a temporary folder outside the output folder


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_rerun_skips_what_is_graded(batch, capsys):
    folder, subs, _, timeout = batch
    out = folder / "grades_jobs2"
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    start = time.monotonic()
    grade(subs, FIXTURE, out=out, jobs=2, timeout=timeout, memory_gib=MEMORY_GIB, progress=False)
    assert time.monotonic() - start < 5
    assert "12 submission(s) already graded" in capsys.readouterr().out
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}


def _leftovers(folder: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cwd", "status"]):
        cwd = p.info.get("cwd") or ""
        if cwd.startswith(str(folder)) and p.info.get("status") != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_interrupted_batch_resumes(tmp_path, timeout):
    subs = [p for p in submissions(tmp_path / "submitted") if p.stem in ("correct", "untouched")]
    out = tmp_path / "grades"
    cmd = [sys.executable, "-m", "llmcourse.cli", "grade", *map(str, subs), "--notebook", str(FIXTURE),
           "--out", str(out), "--jobs", "1", "--timeout", str(timeout), "--memory", str(MEMORY_GIB)]
    tmp = tmp_path / "tmp"  # the kernels' folders, outside `out`
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 4 * timeout
    while time.monotonic() < deadline and not list((out / "results").glob("*.json")):
        time.sleep(0.2)
    first = {p.name: p.read_bytes() for p in (out / "results").glob("*.json")}
    assert first, "no submission finished in time"
    os.kill(proc.pid, signal.SIGKILL)  # the grader dies at once: no clean-up of its own
    proc.wait()
    deadline = time.monotonic() + 30  # the runner notices that its parent is gone and kills its kernel
    while _leftovers(tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    # what each survivor was doing, for the next time this fails: a fresh-clone CI run saw a runner of the
    # forkserver outlive the killed grader by 30 s once (stop 38); three quiet reruns did not
    left = []
    for p in _leftovers(tmp):
        try:
            left.append((p.pid, p.ppid(), p.status(), p.num_threads(), [c.pid for c in p.children()], p.cwd(),
                         " ".join(p.cmdline())[:120]))
        except psutil.Error:
            pass
    assert not left, f"a kernel outlived the killed batch: {left}"
    assert len(first) == 1
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=6 * timeout)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} submission(s) already graded" in done.stdout
    assert all((out / "results" / name).read_bytes() == data for name, data in first.items())
    summary = {r["submission"]: r for r in read_csv(out / "summary.csv")}
    assert {k: float(v["score"]) for k, v in summary.items()} == {"correct": 5, "untouched": 0}
    assert not list(tmp.glob("llmcourse-grade-*"))  # the killed batch's folder swept by the rerun, the rerun's removed


# ---------------------------------------------------------------- without a kernel
def test_graded_notebook_takes_the_reference_checks():
    ref = nbformat.read(FIXTURE, as_version=4)
    refs = reference_exercises(ref, POINTS)
    assert [(e.id, e.points) for e in refs] == [("1.1", 2), ("1.2", 1), ("1.3", 2)]
    nb = student_copy()
    fill(nb, "1.1", RIGHT["1.1"])
    nb.cells = [c for c in nb.cells if c.get("id") != "ex12"]  # 1.2 deleted
    _cell(nb, "check11").source = 'check("1.1", lambda: True)'
    graded, notes = build_graded_notebook(nb, refs, "n0nce")
    assert notes == {"1.1": "", "1.2": "missing", "1.3": ""}
    checks = [c for c in graded.cells if c.metadata.get("llmcourse_grader", {}).get("role") == "check"]
    assert [c.metadata["llmcourse_grader"]["exercise"] for c in checks] == ["1.1", "1.3"]
    assert all("lambda: True" not in c.source for c in graded.cells)
    assert "expect_close(softmax(x)" in checks[0].source
    assert all(c.metadata["llmcourse_grader"]["nonce"] == "n0nce" for c in checks)


def test_a_cell_interrupted_at_the_time_limit_is_a_timeout_not_an_error():
    """At its time limit the run interrupts the kernel: the cell then running shows a KeyboardInterrupt. That is the
    time limit's doing (status timeout); the same error in a run that did not time out stays an error."""
    from llmcourse.teaching.grading.verdicts import read_verdicts

    refs = reference_exercises(nbformat.read(FIXTURE, as_version=4), POINTS)
    graded, notes = build_graded_notebook(student_copy(), refs, "n0nce")
    check12 = next(c for c in graded.cells if c.metadata.get("llmcourse_grader", {}).get("role") == "check"
                   and c.metadata["llmcourse_grader"]["exercise"] == "1.2")
    check12.outputs = [nbformat.v4.new_output("error", ename="KeyboardInterrupt", evalue="", traceback=[])]
    timed_out = read_verdicts(graded, refs, notes, "n0nce", "timeout", "a cell ran past the limit of 6 s.")
    assert [(r["exercise"], r["status"]) for r in timed_out][1] == ("1.2", "timeout")
    assert timed_out[1]["message"] == "a cell ran past the limit of 6 s."
    stopped = read_verdicts(graded, refs, notes, "n0nce", "error", "cell 7 raised KeyboardInterrupt: ")
    assert stopped[1]["status"] == "error" and "KeyboardInterrupt" in stopped[1]["message"]


def test_suspicious_code_is_flagged():
    nb = student_copy()
    insert_after(nb, "data", TAMPER_PATCH)
    assert "uses llmcourse.checks" in suspicious(nb)
    assert suspicious(student_copy()) == []


@pytest.mark.parametrize("notebook", sorted(p.relative_to(project_root()).as_posix()
                                            for p in project_root().glob("week*/[0-9]*.ipynb")))
def test_the_course_own_code_earns_no_note_and_added_code_still_does(notebook):
    """The notes leave out lines the reference holds too (week 8.1 loads its scripts with importlib, week 4.3 shows a
    calculator refusing `__import__`): an honest, solved notebook gets none, a patch added to it still does."""
    from llmcourse.teaching.grading.assemble import code_of

    solved = read_notebook(project_root() / notebook)
    assert suspicious(solved, code_of(solved)) == []
    first_code = next(c for c in solved.cells if c.cell_type == "code")
    first_code.source += "\n" + TAMPER_PATCH
    assert "uses llmcourse.checks" in suspicious(solved, code_of(read_notebook(project_root() / notebook)))


def test_bad_arguments_raise_grading_errors(tmp_path):
    sub = tmp_path / "a.ipynb"
    nbformat.write(student_copy(), sub)
    with pytest.raises(GradingError, match="not found"):
        grade([sub], tmp_path / "nope.ipynb", out=tmp_path / "g")
    with pytest.raises(GradingError, match="not a file"):
        grade([tmp_path / "missing.ipynb"], FIXTURE, out=tmp_path / "g")
    other = tmp_path / "x" / "a.ipynb"
    other.parent.mkdir()
    other.write_bytes(sub.read_bytes())
    with pytest.raises(GradingError, match="both be reported"):
        grade([sub, other], FIXTURE, out=tmp_path / "g")
    (tmp_path / "g" / "results").mkdir(parents=True)
    (tmp_path / "g" / "results" / "z.json").write_text(json.dumps({"submission": "z", "notebook": "other.ipynb"}))
    with pytest.raises(GradingError, match="one output folder per notebook"):
        grade([sub], FIXTURE, out=tmp_path / "g")


def test_a_real_week_notebook_releases_and_maps_its_exercises():
    """Without running it: week 1's attention notebook gives a student copy whose exercises all find their checks."""
    path = ROOT / "week01" / "02_attention_from_scratch.ipynb"
    if not path.exists():
        pytest.skip("week01/02_attention_from_scratch.ipynb is not written yet")
    from llmcourse.teaching.grading import exercise_points

    ref = nbformat.read(path, as_version=4)
    refs = reference_exercises(ref, exercise_points(path, ref))
    student = make_student_copy(ref)
    graded, notes = build_graded_notebook(student, refs, "n0nce")
    assert set(notes.values()) == {""}, notes
    inserted = [c for c in graded.cells if c.metadata.get("llmcourse_grader", {}).get("role") == "check"]
    assert [c.metadata["llmcourse_grader"]["exercise"] for c in inserted] == [e.id for e in refs]
    assert sum(e.points for e in refs) > 0
    assert not any("### BEGIN SOLUTION" in c.source for c in student.cells)
