"""`llmcourse release`: student copies with stubs in place of solutions, cleared exercise outputs, all else kept."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from llmcourse.cli import main
from llmcourse.errors import ConfigError
from llmcourse.teaching import release as rel
from llmcourse.teaching.notebooks import strip_solutions

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "grading_sample.ipynb"


def test_strip_solutions_keeps_indentation_and_the_code_around():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\nf"
    assert strip_solutions(src) == ("def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
                                        "\nf")
    two = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION"
    assert strip_solutions(two).count("raise NotImplementedError()") == 2
    assert "a = 1" not in strip_solutions(two) and "b = 2" in strip_solutions(two)


@pytest.mark.parametrize("src", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_unbalanced_markers_are_errors(src):
    with pytest.raises(ConfigError, match="SOLUTION"):
        strip_solutions(src)


def test_student_copy_of_the_sample():
    ref = nbformat.read(FIXTURE, as_version=4)
    ref.cells[5].outputs = [nbformat.v4.new_output("stream", text="stale\n")]
    student = rel.make_student_copy(ref)
    assert len(student.cells) == len(ref.cells)
    assert [c.get("id") for c in student.cells] == [c.get("id") for c in ref.cells]  # the grader matches by id
    for r, s in zip(ref.cells, student.cells):
        tags = r.metadata.get("tags", [])
        if "exercise" in tags:
            assert "### BEGIN SOLUTION" not in s.source and "raise NotImplementedError()" in s.source
            assert "raises-exception" in s.metadata["tags"] and s.outputs == []
        elif "check" in tags:
            assert s.source == r.source and s.outputs == []
        else:
            assert s == r
    assert "### BEGIN SOLUTION" in ref.cells[5].source  # the reference is left alone
    nbformat.validate(student)


def test_exercise_cell_without_markers_is_an_error():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["exercise"]})])
    with pytest.raises(ConfigError, match="no '### BEGIN SOLUTION'"):
        rel.make_student_copy(nb, name="x.ipynb")


def test_release_command_writes_week_folders(tmp_path, capsys):
    week = tmp_path / "course" / "week01"
    week.mkdir(parents=True)
    (week / "02_sample.ipynb").write_bytes(FIXTURE.read_bytes())
    assert main(["release", str(week / "02_sample.ipynb"), str(FIXTURE), "--out", str(tmp_path / "out")]) == 0
    assert "2 student copies" in capsys.readouterr().out
    copy = nbformat.read(tmp_path / "out" / "week01" / "02_sample.ipynb", as_version=4)
    assert not any("### BEGIN SOLUTION" in c.source for c in copy.cells)
    assert (tmp_path / "out" / "grading_sample.ipynb").exists()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        rel.release([week / "02_sample.ipynb"], out=tmp_path / "course")


# ---------------------------------------------------------------- what release must not overwrite (issue 21, item 6)
def _course(tmp_path: Path) -> Path:
    """A reference notebook in a week folder, as in the course."""
    week = tmp_path / "course" / "week01"
    week.mkdir(parents=True)
    (week / "02_sample.ipynb").write_bytes(FIXTURE.read_bytes())
    return week / "02_sample.ipynb"


def test_release_refuses_a_clone_of_the_course(tmp_path):
    ref = _course(tmp_path)
    clone = tmp_path / "clone"
    (clone / "curriculum").mkdir(parents=True)
    (clone / "curriculum" / "syllabus.yaml").write_text("weeks: []\n")
    (clone / "week01").mkdir()
    (clone / "week01" / "02_sample.ipynb").write_bytes(FIXTURE.read_bytes())  # with its solutions
    with pytest.raises(ConfigError) as info:
        rel.release([ref], out=clone)
    message = str(info.value)
    assert "course material (curriculum/syllabus.yaml, week01/02_sample.ipynb)" in message and "--force" in message
    assert (clone / "week01" / "02_sample.ipynb").read_bytes() == FIXTURE.read_bytes()  # nothing written
    assert rel.release([ref], out=clone, force=True) == [clone / "week01" / "02_sample.ipynb"]
    assert "### BEGIN SOLUTION" not in (clone / "week01" / "02_sample.ipynb").read_text()


def test_release_refuses_a_folder_with_solutions_even_without_a_syllabus(tmp_path):
    ref = _course(tmp_path)
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "answers.ipynb").write_bytes(FIXTURE.read_bytes())
    (out / ".ipynb_checkpoints").mkdir()  # hidden folders are not looked at
    with pytest.raises(ConfigError, match=r"course material \(notes/answers.ipynb\)"):
        rel.release([ref], out=out)
    assert not (out / "week01").exists()


def test_release_never_overwrites_a_filled_in_notebook(tmp_path, capsys):
    ref = _course(tmp_path)
    out = tmp_path / "out"
    (out / "README.txt").parent.mkdir(parents=True)
    (out / "README.txt").write_text("hand-outs for week 1\n")  # not empty, but no course material: fine
    [copy] = rel.release([ref], out=out)
    assert rel.release([ref], out=out) == [copy]  # the same copy again: nothing lost, allowed
    nb = nbformat.read(copy, as_version=4)
    ex = next(c for c in nb.cells if "exercise" in c.metadata.get("tags", []))
    ex.source = ex.source.replace("raise NotImplementedError()", "return 42  # the student's answer")
    nbformat.write(nb, copy)
    filled = copy.read_bytes()
    with pytest.raises(ConfigError) as info:
        rel.release([ref], out=out)
    assert "1 notebook(s) in" in str(info.value) and "week01/02_sample.ipynb" in str(info.value)
    assert "move them elsewhere" in str(info.value) and "--force" in str(info.value)
    assert copy.read_bytes() == filled
    assert main(["release", str(ref), "--out", str(out)]) == 1
    assert "week01/02_sample.ipynb" in capsys.readouterr().err and copy.read_bytes() == filled
    assert main(["release", str(ref), "--out", str(out), "--force"]) == 0
    assert b"the student's answer" not in copy.read_bytes()
