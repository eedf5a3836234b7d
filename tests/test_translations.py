"""The Chinese edition: built from the English notebooks, in sync with them, and translated cell by cell."""

import copy
import json
import shutil

import pytest

from llmcourse.cli import main
from llmcourse.teaching import translations as tr
from llmcourse.teaching.notebooks import cell_source, cell_tags, read_notebook_json
from llmcourse.teaching.syllabus import load_syllabus, project_root

ROOT = project_root()
NOTEBOOKS = [nb.path for nb in load_syllabus()["notebooks"]]
ONE = "week07/01_reading_library_code.ipynb"  # small, with a glossary term (attention) in its prose


@pytest.mark.parametrize("english", NOTEBOOKS)
def test_chinese_edition_has_the_english_code_and_outputs(english):
    en = read_notebook_json(ROOT / english)
    zh = read_notebook_json(ROOT / tr.edition_path(english))
    assert [c["cell_type"] for c in zh["cells"]] == [c["cell_type"] for c in en["cells"]]
    for a, b in zip(en["cells"], zh["cells"]):
        if a["cell_type"] == "code":
            assert b == a  # source, outputs, execution counts and metadata: the English run's
    assert zh["metadata"]["llmcourse"]["edition"] == "zh-CN"


@pytest.mark.parametrize("english", NOTEBOOKS)
def test_every_markdown_cell_is_translated(english):
    en = read_notebook_json(ROOT / english)["cells"]
    zh = read_notebook_json(ROOT / tr.edition_path(english))["cells"]
    for i, (a, b) in enumerate(zip(en, zh)):
        if a["cell_type"] != "markdown":
            continue
        if "badges" in cell_tags(a):
            assert tr.edition_path(english) in cell_source(b)  # the badges open the Chinese notebook
            continue
        text = cell_source(b)
        if len(tr._WORD.findall(tr._prose(cell_source(a)))) >= 3:  # the English cell has words to translate
            assert tr._CJK.search(text), f"{english} cell {i} has no Chinese"
        assert cell_source(a) != text or not tr._CJK.search(cell_source(a)), f"{english} cell {i} is the English"
        assert tr.english_prose_lines(text) == [], f"{english} cell {i} keeps English prose"


def test_check_passes_on_this_checkout():
    assert [str(p) for p in tr.check()] == []
    assert main(["translations", "check", ONE]) == 0


@pytest.fixture
def course(tmp_path):
    """A copy of the curriculum folder, one English notebook and its Chinese edition."""
    shutil.copytree(ROOT / "curriculum", tmp_path / "curriculum")
    for path in (ONE, tr.edition_path(ONE)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    assert tr.check(tmp_path, [ONE]) == []
    return tmp_path


def _edit(path, index, new_source):
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["cells"][index]["source"] = new_source
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _first_prose_cell(path):
    cells = read_notebook_json(path)["cells"]
    return next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "badges" not in cell_tags(c)
                and "attention" in cell_source(c) and i > 2)


def test_an_edited_english_cell_is_named(course):
    index = _first_prose_cell(course / ONE)
    text = cell_source(read_notebook_json(course / ONE)["cells"][index])
    _edit(course / ONE, index, text.replace("attention", "the attention layer", 1))
    problems = [str(p) for p in tr.check(course, [ONE])]
    assert any(f"{ONE} cell {index}:" in p and "English changed" in p for p in problems), problems
    assert any("match no English cell" in p for p in problems)
    with pytest.raises(Exception, match=f"cell {index}"):
        tr.build_all([ONE], root=course)
    missing = tr.todo(ONE, course)  # the translator's view: exactly that cell, with its new text
    assert [(i, t) for i, _, t in missing] == [(index, text.replace("attention", "the attention layer", 1))]


def test_a_reexecuted_english_notebook_needs_a_rebuild(course):
    nb = json.loads((course / ONE).read_text(encoding="utf-8"))
    code = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and c.get("outputs"))
    outputs = copy.deepcopy(nb["cells"][code]["outputs"])
    outputs.append({"name": "stdout", "output_type": "stream", "text": ["one more line\n"]})
    nb["cells"][code]["outputs"] = outputs
    (course / ONE).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert any("out of date" in str(p) for p in tr.check(course, [ONE]))
    assert tr.build_all([ONE], root=course) == [tr.edition_path(ONE)]
    assert tr.check(course, [ONE]) == []
    assert read_notebook_json(course / tr.edition_path(ONE))["cells"][code]["outputs"] == outputs


@pytest.mark.parametrize("wrong, complaint", [
    ("drop the glossary term", "glossary term '注意力'"),
    ("leave it in English", "still has English prose"),
])
def test_wrong_translations_are_refused(course, wrong, complaint):
    index = _first_prose_cell(course / ONE)
    key = tr.cell_key(cell_source(read_notebook_json(course / ONE)["cells"][index]))
    entries = tr.load_translations(ONE, course)
    entry = next(e for e in entries if e["key"] == key)
    if wrong == "drop the glossary term":
        entry["zh"] = entry["zh"].replace("注意力", "关注")
    else:
        entry["zh"] = cell_source(read_notebook_json(course / ONE)["cells"][index]) + "\n\n（中文）"
    tr.save_translations(ONE, entries, course)
    problems = [str(p) for p in tr.check(course, [ONE])]
    assert any(f"cell {index}:" in p and complaint in p for p in problems), problems


def test_relative_links_follow_the_edition():
    notebooks = {"week03/01_small.ipynb", "week02/01_gpt.ipynb"}
    text = ("see [3.1](../week03/01_small.ipynb#sec), [docs](../docs/memory.md), [same](01_gpt.ipynb), "
            "[web](https://example.org/a.ipynb) and [here](#top)")
    assert tr._relink(text, "week02/01_gpt.ipynb", notebooks) == (
        "see [3.1](../../week03/zh-CN/01_small.ipynb#sec), [docs](../../docs/memory.md), [same](01_gpt.ipynb), "
        "[web](https://example.org/a.ipynb) and [here](#top)")
