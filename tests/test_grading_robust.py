"""`llmcourse grade` against files and failures meant to stop it, and against results changed after grading.

Issue 21, items 3 and 4. Most tests replace the sandbox's runner by a fake that "runs" the graded notebook in a few
milliseconds (each check passes when its exercise cell no longer holds the stub), so that they test the batch's
bookkeeping, not papermill. One slow test runs real kernels: a notebook that floods its output next to an honest one.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from test_grading import FIXTURE, MEMORY_GIB, RIGHT, fill, read_csv, student_copy

from llmcourse import checks
from llmcourse.errors import GradingError
from llmcourse.teaching import sandbox
from llmcourse.teaching.grading import InvalidSubmission, grade, limits, parse_submission
from llmcourse.teaching.grading import batch as batch_module
from llmcourse.teaching.grading import execute as execute_module
from llmcourse.teaching.grading import report as report_module
from llmcourse.teaching.grading.assemble import GRADER_KEY
from llmcourse.teaching.grading.limits import cap_outputs, clean
from llmcourse.teaching.grading.signing import KEY_FILE, batch_key, verify
from llmcourse.teaching.grading.workdir import OWNER, PREFIX, batch_workdir
from llmcourse.teaching.notebooks import STUB
from llmcourse.teaching.sandbox import RunOutcome

FULL = 5.0  # points of the sample notebook


# ---------------------------------------------------------------- a runner without a kernel
class FakeRunner:
    """Stands in for `sandbox.run_notebook`: every inserted check passes unless its exercise cell holds the stub.

    `extra(name_of_dst_parent, nb)` may add outputs; `outcome` overrides the returned status; `cwds` records where
    each kernel would have run.
    """

    def __init__(self, outcome: RunOutcome | None = None, extra=None):
        self.outcome, self.extra, self.cwds = outcome, extra, []

    def __call__(self, src, dst, cwd, parameters=None, timeout=600.0, memory_bytes=None, env=None, stop=None,
                 sandboxed=False, files_bytes=None):
        self.cwds.append(Path(cwd))
        nb = nbformat.read(src, as_version=4)
        attempted = {}
        for cell in nb.cells:
            meta = cell.metadata.get(GRADER_KEY, {})
            if meta.get("role") == "exercise":
                attempted[meta["exercise"]] = STUB[1] not in cell.source
            elif meta.get("role") == "check":
                status = "passed" if attempted.get(meta["exercise"]) else "not attempted"
                bundle = {"exercise": meta["exercise"], "status": status, "message": ""}
                cell.outputs = [nbformat.v4.new_output("display_data", data={"text/plain": status,
                                                                              checks.RESULT_MIME: bundle})]
        if self.extra:
            self.extra(nb)
        nbformat.write(nb, dst)
        return self.outcome or RunOutcome("completed", "", 0.1, 0)


@pytest.fixture
def runner(monkeypatch) -> FakeRunner:
    fake = FakeRunner()
    monkeypatch.setattr(sandbox, "run_notebook", fake)
    monkeypatch.setattr(sandbox, "warm_up", lambda: None)
    return fake


def honest() -> nbformat.NotebookNode:
    nb = student_copy()
    for ex, code in RIGHT.items():
        fill(nb, ex, code)
    return nb


def write(folder: Path, name: str, content: bytes | str | nbformat.NotebookNode) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    if isinstance(content, dict):
        content = nbformat.writes(content)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def summary(out: Path) -> dict[str, dict]:
    return {r["submission"]: r for r in read_csv(out / "summary.csv")}


def report(out: Path) -> dict[tuple[str, str], dict]:
    return {(r["submission"], r["exercise"]): r for r in read_csv(out / "report.csv")}


# ---------------------------------------------------------------- item 4: files that are not notebooks
def _edited(edit) -> bytes:
    nb = json.loads(nbformat.writes(honest()))
    edit(nb)
    return json.dumps(nb).encode()  # ensure_ascii: a lone surrogate is stored as the escape \ud800


BAD_FILES = {  # name -> (file content, what the message must name)
    "cut_short": (nbformat.writes(student_copy())[:700].encode(), "not JSON (Unterminated string starting at: line 3"),
    "integer_tags": (_edited(lambda nb: nb["cells"][3]["metadata"].update(tags=7)), "cell 3 has tags 7"),
    "tag_not_text": (_edited(lambda nb: nb["cells"][3]["metadata"].update(tags=["x", 1])), "cell 3 has tags"),
    "no_cell_type": (_edited(lambda nb: nb["cells"][2].pop("cell_type")), "cell 2 has no cell_type"),
    "no_source": (_edited(lambda nb: nb["cells"][4].pop("source")), "cell 4 has no source"),
    "surrogate": (_edited(lambda nb: nb["cells"][5].update(source="x = '\ud800'")), "cell 5's source holds a lone"),
    "surrogate_in_output": (_edited(lambda nb: nb["cells"][3].update(outputs=[
        {"output_type": "stream", "name": "stdout", "text": "\udcff"}])), "cell 3's outputs holds a lone"),
    "not_utf8": (b'{"cells": [\xff]}', "not UTF-8 text (byte 0xff at offset 11)"),
    "json_list": (b"[1, 2, 3]", "no list of cells"),
    "cell_id_number": (_edited(lambda nb: nb["cells"][1].update(id=12)), "cell 1 has an id that is a int"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_invalid_with_its_cause(name):
    content, cause = BAD_FILES[name]
    with pytest.raises(InvalidSubmission) as info:
        parse_submission(content)
    assert cause in str(info.value)
    assert "Fix: " in str(info.value)


def test_a_notebook_jupyter_wrote_is_read():
    nb = parse_submission(nbformat.writes(honest()).encode())
    assert len(nb.cells) == len(honest().cells)
    del_outputs = json.loads(nbformat.writes(honest()))
    del_outputs["cells"][1].pop("outputs")  # a harmless gap is filled, not refused
    assert parse_submission(json.dumps(del_outputs).encode()).cells[1].outputs == []


def test_bad_files_never_stop_the_batch(tmp_path, runner):
    subs = [write(tmp_path / "in", "alice", honest()), write(tmp_path / "in", "untouched", student_copy())]
    subs += [write(tmp_path / "in", name, content) for name, (content, _) in BAD_FILES.items()]
    out = tmp_path / "grades"
    records = grade(subs, FIXTURE, out=out, progress=False)
    assert len(records) == len(subs)
    rows = summary(out)
    assert set(rows) == {s.stem for s in subs}  # every submission has a row
    assert (rows["alice"]["status"], float(rows["alice"]["score"])) == ("completed", FULL)
    assert (rows["untouched"]["status"], float(rows["untouched"]["score"])) == ("completed", 0)
    by_exercise = report(out)
    for name, (_, cause) in BAD_FILES.items():
        assert (rows[name]["status"], float(rows[name]["score"])) == ("invalid", 0), name
        assert by_exercise[(name, "1.1")]["status"] == "invalid"
        assert cause in by_exercise[(name, "1.1")]["message"], name
    assert len(runner.cwds) == 2  # only the two notebooks ran
    again = grade(subs, FIXTURE, out=out, progress=False)  # a rerun: nothing fails, nothing runs again
    assert len(runner.cwds) == 2 and len(again) == len(subs)
    assert (out / "notebooks" / "alice.ipynb").exists()
    subs[0].write_bytes(BAD_FILES["integer_tags"][0])  # alice resubmits a broken file: her old notebook goes
    grade(subs, FIXTURE, out=out, progress=False)
    assert summary(out)["alice"]["status"] == "invalid" and not (out / "notebooks" / "alice.ipynb").exists()


# ---------------------------------------------------------------- item 4: the grader's own steps fail
def test_a_failing_step_is_that_submissions_error_and_a_rerun_grades_it(tmp_path, runner, monkeypatch):
    subs = [write(tmp_path / "in", name, honest()) for name in ("alice", "bob", "carol")]
    out = tmp_path / "grades"
    build = execute_module.build_graded_notebook

    def build_fails_for_bob(student, refs, nonce, seed=None):
        if any("bob" in c.source for c in student.cells):
            raise TypeError("unhashable type: 'list'")
        return build(student, refs, nonce, seed)

    def run_fails_for_carol(src, dst, cwd, *args, **kwargs):
        if "carol" in Path(cwd).parent.name:
            raise RuntimeError("no more processes")
        return runner(src, dst, cwd, *args, **kwargs)

    subs[1].write_text(subs[1].read_text().replace("import numpy as np", "import numpy as np  # bob"))
    monkeypatch.setattr(execute_module, "build_graded_notebook", build_fails_for_bob)
    monkeypatch.setattr(sandbox, "run_notebook", run_fails_for_carol)
    grade(subs, FIXTURE, out=out, progress=False)
    rows, by_exercise = summary(out), report(out)
    assert {k: v["status"] for k, v in rows.items()} == {"alice": "completed", "bob": "error", "carol": "error"}
    assert "building the notebook to run (TypeError: unhashable type: 'list')" in by_exercise[("bob", "1.1")]["message"]
    assert "running the notebook (RuntimeError: no more processes)" in by_exercise[("carol", "1.3")]["message"]
    monkeypatch.setattr(execute_module, "build_graded_notebook", build)
    monkeypatch.setattr(sandbox, "run_notebook", runner)
    grade(subs, FIXTURE, out=out, progress=False)  # the grader's trouble: graded again, now in full
    assert {k: (v["status"], float(v["score"])) for k, v in summary(out).items()} == {
        n: ("completed", FULL) for n in ("alice", "bob", "carol")}


def test_a_failure_outside_every_step_is_still_that_submissions_status(tmp_path, runner, monkeypatch):
    subs = [write(tmp_path / "in", name, honest()) for name in ("alice", "bob")]
    parse = execute_module.parse_submission

    def parse_fails_for_bob(raw):
        if b"bob" in raw:
            raise RecursionError("maximum recursion depth exceeded")
        return parse(raw)

    subs[1].write_text(subs[1].read_text().replace("import numpy as np", "import numpy as np  # bob"))
    monkeypatch.setattr(execute_module, "parse_submission", parse_fails_for_bob)
    records = {r["submission"]: r for r in grade(subs, FIXTURE, out=tmp_path / "g", progress=False, jobs=2)}
    assert records["alice"]["status"] == "completed" and records["bob"]["status"] == "error"
    assert "grading this submission (RecursionError: maximum recursion depth exceeded)" in records["bob"]["message"]
    assert records["bob"]["retry"] is True


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)


def test_a_full_disk_when_storing_one_result(tmp_path, runner, monkeypatch):
    subs = [write(tmp_path / "in", name, honest()) for name in ("alice", "bob", "carol")]
    out = tmp_path / "grades"
    real = batch_module.atomic_write

    def full_for_bob(path, data):
        return _enospc(path) if Path(path).name == "bob.json" else real(path, data)

    monkeypatch.setattr(batch_module, "atomic_write", full_for_bob)
    records = {r["submission"]: r for r in grade(subs, FIXTURE, out=out, progress=False)}
    assert records["bob"]["status"] == "disk" and records["alice"]["status"] == "completed"
    assert "No space left on device" in records["bob"]["message"] and "storing the result" in records["bob"]["message"]
    assert summary(out)["bob"]["status"] == "disk"  # the reports say so too
    assert not (out / "results" / "bob.json").exists() and (out / "results" / "carol.json").exists()
    monkeypatch.setattr(batch_module, "atomic_write", real)
    grade(subs, FIXTURE, out=out, progress=False)
    assert runner.cwds[-1].parent.name.startswith("bob-") and len(runner.cwds) == 4  # only bob again
    assert summary(out)["bob"]["status"] == "completed"


def test_a_full_disk_everywhere(tmp_path, runner, monkeypatch, capsys):
    subs = [write(tmp_path / "in", name, honest()) for name in ("alice", "bob")]
    out = tmp_path / "grades"
    batch_key(out)  # the key exists from an earlier run; now the disk is full
    for module in (batch_module, execute_module, report_module):
        monkeypatch.setattr(module, "atomic_write", _enospc)
    records = grade(subs, FIXTURE, out=out, progress=False)
    assert [(r["submission"], r["status"]) for r in records] == [("alice", "disk"), ("bob", "disk")]
    assert all(row["status"] == "disk" and row["points"] == 0 for r in records for row in r["rows"])
    assert "the disk is full" in records[0]["message"] and "No space left on device" in records[0]["message"]
    assert capsys.readouterr().err.count("could not write the reports") == 1
    monkeypatch.undo()
    monkeypatch.setattr(sandbox, "run_notebook", runner)
    monkeypatch.setattr(sandbox, "warm_up", lambda: None)
    grade(subs, FIXTURE, out=out, progress=False)
    assert {k: v["status"] for k, v in summary(out).items()} == {"alice": "completed", "bob": "completed"}


# ---------------------------------------------------------------- item 4: output
def _flood(nb, mib: int = 3):
    cell = next(c for c in nb.cells if c.get("id") == "ex12")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * 2**20 + "\n") for _ in range(mib)]


def test_a_flood_of_output_is_output_limit_with_its_true_cause(tmp_path, monkeypatch):
    """The runner says "ran past 240 s" after 45 s; the notebook holds 3 MiB of output over a 1 MiB limit."""
    fake = FakeRunner(RunOutcome("timeout", "a cell ran past the limit of 240 s.", 45.0, 0), extra=_flood)
    monkeypatch.setattr(sandbox, "run_notebook", fake)
    monkeypatch.setattr(sandbox, "warm_up", lambda: None)
    sub = write(tmp_path / "in", "flood", honest())
    out = tmp_path / "grades"
    [record] = grade([sub], FIXTURE, out=out, progress=False, output_mib=1)
    assert record["status"] == "output-limit"
    assert "wrote 3.0 MiB of output, over the limit of 1.0 MiB" in record["message"]
    assert "reported as timeout: a cell ran past the limit of 240 s." in record["message"]
    assert [r["status"] for r in record["rows"]] == ["passed", "passed", "passed"]  # read before the cut
    stored = out / "notebooks" / "flood.ipynb"
    assert stored.stat().st_size < 1.2 * 2**20
    nb = nbformat.read(stored, as_version=4)
    ex12 = next(c for c in nb.cells if c.get("id") == "ex12")
    assert "of this cell's output not stored" in ex12.outputs[-1].text
    results = [c for c in nb.cells if c.metadata.get(GRADER_KEY, {}).get("role") == "check"]
    assert all(checks.RESULT_MIME in c.outputs[0]["data"] for c in results)  # every verdict is still there


@pytest.mark.parametrize("saves", ["in bursts", "without a pause"])
def test_the_output_watch_stops_a_run_that_keeps_printing(tmp_path, monkeypatch, saves):
    """Past the limit the watch stops the run once a save is complete (the size holds still), or after SETTLE_S."""
    def printing_forever(src, dst, cwd, parameters, timeout, memory_bytes, env, stop, sandboxed=False,
                         files_bytes=None):
        start = time.monotonic()
        with open(dst, "w") as f:
            while not stop.wait(1.0 if saves == "in bursts" else 0.05):
                f.write("x" * (2**21 if saves == "in bursts" else 2**18))
                f.flush()
        return RunOutcome("interrupted", "stopped", time.monotonic() - start, 0)

    monkeypatch.setattr(sandbox, "run_notebook", printing_forever)
    monkeypatch.setattr(sandbox, "warm_up", lambda: None)
    monkeypatch.setattr(limits, "SETTLE_S", 1.0)
    [record] = grade([write(tmp_path / "in", "loud", honest())], FIXTURE, out=tmp_path / "g", progress=False,
                     output_mib=1, timeout=60)
    assert record["status"] == "output-limit" and "the run was stopped" in record["message"]
    assert record["seconds"] < 4
    assert {r["status"] for r in record["rows"]} == {"output-limit"}  # not a notebook: nothing to read back


def test_clean_and_cap():
    assert clean({"m": "a\ud800b", "n": [1.5, None]}) == {"m": "a\\ud800b", "n": [1.5, None]}
    assert clean("x" * 50, chars=10) == "x" * 10 + "… [40 characters cut]"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="y" * 5000) for _ in range(3)]
    assert cap_outputs(nb, 8000) > 5000
    first, cut, note = nb.cells[0].outputs  # whole, cut to what fits, the note
    assert first.text == "y" * 5000 and 0 < len(cut.text) < 5000 and set(cut.text) == {"y"}
    assert note.name == "stderr" and "KiB of this cell's output not stored" in note.text and "7.8 KiB" in note.text
    verdict = nbformat.v4.new_output("display_data", data={checks.RESULT_MIME: {"exercise": "1.1", "status": "x"}})
    fakes = [nbformat.from_dict(verdict) for _ in range(100)]  # a student's own "results" share the budget
    check = nbformat.v4.new_code_cell("check()", metadata={GRADER_KEY: {"role": "check", "exercise": "1.1"}})
    check.outputs = [nbformat.from_dict(verdict), nbformat.v4.new_output("stream", name="stdout", text="z" * 9000)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=fakes), check])
    cap_outputs(nb, 2000)
    assert 0 < len(nb.cells[0].outputs) < 50 and "not stored" in nb.cells[0].outputs[-1].text
    assert nb.cells[1].outputs[0] == verdict and "not stored" in nb.cells[1].outputs[-1].text


def test_a_huge_error_message_is_clipped(tmp_path, monkeypatch):
    fake = FakeRunner(RunOutcome("error", "cell 3 raised ValueError: " + "z" * 10**6, 1.0, 0))
    monkeypatch.setattr(sandbox, "run_notebook", fake)
    monkeypatch.setattr(sandbox, "warm_up", lambda: None)
    [record] = grade([write(tmp_path / "in", "a", honest())], FIXTURE, out=tmp_path / "g", progress=False)
    assert len(record["message"]) < 2100 and "characters cut" in record["message"]
    assert (tmp_path / "g" / "results" / "a.json").stat().st_size < 20_000


# ---------------------------------------------------------------- item 3: signed results, kernels outside `out`
def test_results_are_signed_and_a_tampered_one_is_graded_again(tmp_path, runner, capsys):
    subs = [write(tmp_path / "in", "alice", honest()), write(tmp_path / "in", "mallory", student_copy())]
    out = tmp_path / "grades"
    grade(subs, FIXTURE, out=out, progress=False)
    key_file = out / KEY_FILE
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = batch_key(out)
    stored = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert all(verify(r, key) for r in stored.values())
    assert float(summary(out)["mallory"]["score"]) == 0

    forged = stored["mallory"]  # full marks, the old signature kept
    forged["rows"] = [{**row, "status": "passed", "points": row["max_points"]} for row in forged["rows"]]
    forged["status"] = "completed"
    (out / "results" / "mallory.json").write_text(json.dumps(forged))
    eve = {**stored["alice"], "submission": "eve", "file": "eve.ipynb"}  # a valid record under another name
    (out / "results" / "eve.json").write_text(json.dumps(eve))
    unsigned = {k: v for k, v in stored["alice"].items() if k != "signature"}
    (out / "results" / "trudy.json").write_text(json.dumps({**unsigned, "submission": "trudy"}))

    records = {r["submission"]: r for r in grade(subs, FIXTURE, out=out, progress=False)}
    assert "1 stored result(s)" in capsys.readouterr().out and len(runner.cwds) == 3  # mallory, graded again
    assert records["mallory"]["status"] == "completed" and float(summary(out)["mallory"]["score"]) == 0
    assert verify(json.loads((out / "results" / "mallory.json").read_text()), key)
    for name in ("eve", "trudy"):  # not in this batch: shown, with no points, until graded again
        assert summary(out)[name]["status"] == "unverified" and float(summary(out)[name]["score"]) == 0
        assert report(out)[(name, "1.1")]["message"].startswith("the stored result failed its signature check")


def test_a_changed_notebook_or_a_copied_record_is_graded_again(tmp_path, runner):
    subs = [write(tmp_path / "in", "alice", honest()), write(tmp_path / "in", "bob", student_copy())]
    out = tmp_path / "grades"
    grade(subs, FIXTURE, out=out, progress=False)
    assert len(runner.cwds) == 2
    (out / "results" / "bob.json").write_bytes((out / "results" / "alice.json").read_bytes())  # alice's full marks
    grade(subs, FIXTURE, out=out, progress=False)
    assert len(runner.cwds) == 3 and float(summary(out)["bob"]["score"]) == 0
    page = out / "notebooks" / "alice.ipynb"
    page.write_text(page.read_text().replace("passed", "PASSED"))
    grade(subs, FIXTURE, out=out, progress=False)
    assert len(runner.cwds) == 4 and "PASSED" not in page.read_text()
    (out / "results" / "alice.json").write_text(json.dumps(  # signature removed
        {k: v for k, v in json.loads((out / "results" / "alice.json").read_text()).items() if k != "signature"}))
    grade(subs, FIXTURE, out=out, progress=False)
    assert len(runner.cwds) == 5
    grade(subs, FIXTURE, out=out, progress=False)
    assert len(runner.cwds) == 5  # all intact: nothing runs


def test_kernels_run_outside_the_output_folder(tmp_path, runner):
    subs = [write(tmp_path / "in", name, honest()) for name in ("alice", "bob")]
    out = tmp_path / "grades"
    grade(subs, FIXTURE, out=out, jobs=2, progress=False)
    for cwd in runner.cwds:
        assert out.resolve() not in cwd.resolve().parents
        assert cwd.parent.parent.name.startswith(PREFIX)
        assert not cwd.exists()  # removed with the batch
    assert not (out / ".work").exists()


def test_a_temporary_folder_inside_the_output_folder_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "grades"
    (out / "tmp").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(out / "tmp"))
    with pytest.raises(GradingError, match="set TMPDIR to a folder outside"), batch_workdir(out):
        pass
    assert not list((out / "tmp").iterdir())


def test_folders_of_a_killed_batch_are_swept(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live = tmp_path / f"{PREFIX}dead", tmp_path / f"{PREFIX}live"
    for folder, pid in ((dead, 2**22 + 7), (live, os.getpid())):
        folder.mkdir()
        started = psutil.Process(pid).create_time() if pid == os.getpid() else 0.0
        (folder / OWNER).write_text(json.dumps({"pid": pid, "started": started}))
    with batch_workdir(tmp_path / "grades") as root:
        assert root.is_dir() and root.parent == tmp_path.resolve()
    assert not dead.exists() and live.exists() and not root.exists()


def test_a_key_others_can_read_is_refused(tmp_path):
    key = batch_key(tmp_path)
    assert len(key) == 32 and batch_key(tmp_path) == key  # made once, then kept
    if os.name == "posix":
        (tmp_path / KEY_FILE).chmod(0o644)
        with pytest.raises(GradingError, match="chmod 600"):
            batch_key(tmp_path)
        (tmp_path / KEY_FILE).chmod(0o600)
    (tmp_path / KEY_FILE).write_text("short")
    with pytest.raises(GradingError, match="damaged"):
        batch_key(tmp_path)


def test_the_cli_default_output_limit_is_the_graders(capsys):
    from llmcourse.cli import main
    from llmcourse.teaching.grading import OUTPUT_LIMIT_MIB

    with pytest.raises(SystemExit):
        main(["grade", "--help"])
    assert f"(default: {OUTPUT_LIMIT_MIB:g})" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------- real kernels
@pytest.mark.slow
@pytest.mark.platform("linux", "darwin")
def test_a_real_flood_is_stopped_as_output_limit(tmp_path):
    """A cell that prints 200 MiB: papermill reported it as a timeout long before the time limit. Next to it an
    honest submission keeps full marks."""
    flood = honest()
    cell = next(c for c in flood.cells if c.get("id") == "ex12")
    cell.source += "\nfor _ in range(200):  # 200 MiB of output\n    print('x' * 2**20)"
    subs = [write(tmp_path / "in", "flood", flood), write(tmp_path / "in", "honest", honest())]
    out = tmp_path / "grades"
    start = time.monotonic()
    grade(subs, FIXTURE, out=out, jobs=2, timeout=240, memory_gib=MEMORY_GIB * 2, output_mib=4, progress=False)
    rows = summary(out)
    assert (rows["honest"]["status"], float(rows["honest"]["score"])) == ("completed", FULL)
    assert rows["flood"]["status"] == "output-limit", rows["flood"]
    message = report(out)[("flood", "1.3")]["message"]
    assert "limit of 4.0 MiB" in message and "Fix: print less" in message
    assert float(rows["flood"]["score"]) < FULL
    assert time.monotonic() - start < 200
    stored = out / "notebooks" / "flood.ipynb"
    assert not stored.exists() or stored.stat().st_size < 5 * 2**20
