import json
import shutil
from pathlib import Path

import pytest

from llmcourse.environment import REPO_URL
from llmcourse.teaching.badges import badge_markdown, colab_url, kaggle_url, write_badges
from llmcourse.teaching.syllabus import load_syllabus

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [nb.path for nb in load_syllabus(ROOT / "curriculum" / "syllabus.yaml")["notebooks"]]


def test_urls_point_at_the_notebook():
    path = "week04/01_lora_and_qlora.ipynb"
    assert colab_url(path, "https://github.com/acme/course") == (
        "https://colab.research.google.com/github/acme/course/blob/main/week04/01_lora_and_qlora.ipynb")
    assert kaggle_url(path, "https://github.com/acme/course", "dev").endswith("acme/course/blob/dev/" + path)
    with pytest.raises(ValueError):
        colab_url(path, "https://example.org/not-github")


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_notebook_carries_its_own_badge(path):
    nb = json.loads((ROOT / path).read_text(encoding="utf-8"))
    first = nb["cells"][0]
    assert "badges" in first["metadata"].get("tags", []), "run `llmcourse badges`"
    src = "".join(first["source"]) if isinstance(first["source"], list) else first["source"]
    assert src == badge_markdown(path, REPO_URL)
    setup = [c for c in nb["cells"] if c["cell_type"] == "code" and "llmcourse.setup(" in "".join(c["source"])]
    assert setup and f"git+{REPO_URL}" in "".join(setup[0]["source"])


def test_write_badges_is_idempotent_and_follows_the_setting(tmp_path):
    shutil.copytree(ROOT / "curriculum", tmp_path / "curriculum")
    path = NOTEBOOKS[0]
    (tmp_path / path).parent.mkdir(parents=True)
    shutil.copy(ROOT / path, tmp_path / path)
    (tmp_path / "README.md").write_text("x\n<!-- badges:begin -->\nold\n<!-- badges:end -->\ny\n", encoding="utf-8")
    changed = write_badges(tmp_path, repo="https://github.com/acme/fork")
    assert path in changed and "README.md" in changed
    nb = json.loads((tmp_path / path).read_text(encoding="utf-8"))
    assert "github/acme/fork/blob/main/" + path in "".join(nb["cells"][0]["source"])
    assert sum("badges" in c["metadata"].get("tags", []) for c in nb["cells"]) == 1
    assert "git+https://github.com/acme/fork" in json.dumps(nb)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "old" not in readme and readme.startswith("x\n") and readme.endswith("y\n")
    assert write_badges(tmp_path, repo="https://github.com/acme/fork") == []


def test_write_badges_leaves_a_committed_notebook_untouched(tmp_path):
    # a notebook on disk stores each cell's source as a list of lines: an up-to-date badge must not count as changed
    shutil.copytree(ROOT / "curriculum", tmp_path / "curriculum")
    path = NOTEBOOKS[-1]
    (tmp_path / path).parent.mkdir(parents=True)
    shutil.copy(ROOT / path, tmp_path / path)
    before = (tmp_path / path).read_bytes()
    assert write_badges(tmp_path) == []
    assert (tmp_path / path).read_bytes() == before
