"""`llmcourse badges`: "Open in Colab" / "Open in Kaggle" badges for every notebook, from one repository setting.

The repository address lives in one place, `llmcourse.environment.REPO_URL` (override with --repo). The command
writes (or refreshes) a markdown cell tagged `badges` at the top of every notebook in the syllabus, points the setup
cell's install line at the same repository, and refreshes the badge tables between marker comments: README.md's
(with a link to each Chinese edition) and README.zh-CN.md's (the Chinese editions, titled from their own headings).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..environment import BRANCH, REPO_URL
from ..errors import ConfigError
from .notebooks import cell_source, cell_tags, read_notebook_json, write_notebook_json
from .syllabus import load_syllabus, project_root

__all__ = ["badge_markdown", "colab_url", "kaggle_url", "write_badges"]

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
README_BEGIN, README_END = "<!-- badges:begin -->", "<!-- badges:end -->"
_INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+(?:@[\w./-]+)?")


def _github_path(repo: str) -> str:
    m = re.match(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?$", repo)
    if not m:
        raise ConfigError(f"repository {repo!r} is not a GitHub address. Fix: --repo https://github.com/OWNER/NAME.")
    return m.group(1)


def colab_url(path: str, repo: str = REPO_URL, branch: str = BRANCH) -> str:
    """The address that opens notebook `path` of `repo` in Colab."""
    return f"https://colab.research.google.com/github/{_github_path(repo)}/blob/{branch}/{path}"


def kaggle_url(path: str, repo: str = REPO_URL, branch: str = BRANCH) -> str:
    """The address that opens notebook `path` of `repo` in Kaggle."""
    return f"https://kaggle.com/kernels/welcome?src=https://github.com/{_github_path(repo)}/blob/{branch}/{path}"


def badge_markdown(path: str, repo: str = REPO_URL, branch: str = BRANCH) -> str:
    """The markdown of the two badges of notebook `path`."""
    return (f"[![Open In Colab]({COLAB_BADGE})]({colab_url(path, repo, branch)}) "
            f"[![Open In Kaggle]({KAGGLE_BADGE})]({kaggle_url(path, repo, branch)})")


def _badge_cell(path: str, repo: str, branch: str) -> dict:
    return {"cell_type": "markdown", "metadata": {"tags": ["badges"]}, "source": badge_markdown(path, repo, branch)}


def _update_notebook(file: Path, rel: str, repo: str, branch: str) -> bool:
    nb = read_notebook_json(file)
    cells = nb["cells"]
    new = _badge_cell(rel, repo, branch)
    if cells and "badges" in cell_tags(cells[0]):
        # compare the text: a notebook on disk stores its source as a list of lines, the new cell as one string
        changed = cell_source(cells[0]) != new["source"]
        if changed:
            new["id"] = cells[0].get("id", "badges")
            cells[0] = new
    else:
        if nb.get("nbformat", 4) >= 4 and nb.get("nbformat_minor", 0) >= 5:
            new["id"] = "badges"
        cells.insert(0, new)
        changed = True
    install = f"git+{repo}"
    for cell in cells:
        if cell["cell_type"] == "code":
            src = cell_source(cell)
            if "llmcourse.setup(" in src and _INSTALL.search(src):
                fixed = _INSTALL.sub(install, src)
                if fixed != src:
                    cell["source"], changed = fixed, True
    if changed:
        write_notebook_json(nb, file)
    return changed


def _readme_table(notebooks, repo: str, branch: str) -> str:
    from .translations import edition_path

    rows = ["| week | notebook | open | 中文 |", "|---|---|---|---|"]
    for nb in notebooks:
        rows.append(f"| {nb.week} | [{nb.title}]({nb.path}) | {badge_markdown(nb.path, repo, branch)} | "
                    f"[中文]({edition_path(nb.path)}) |")
    return "\n".join(rows)


def _chinese_title(root: Path, nb) -> str:
    """The title of a notebook's Chinese edition: its first heading without the "第 N.M 讲 —" part."""
    from .translations import edition_path

    path = root / edition_path(nb.path)
    if path.exists():
        for cell in read_notebook_json(path)["cells"]:
            m = re.match(r"#\s+(.+)", cell_source(cell).strip()) if cell["cell_type"] == "markdown" else None
            if m:
                return m.group(1).split("—", 1)[-1].strip()
    return nb.title


def _readme_table_zh(root: Path, notebooks, repo: str, branch: str) -> str:
    from .translations import edition_path

    rows = ["| 周 | 笔记本 | 打开 | English |", "|---|---|---|---|"]
    for nb in notebooks:
        zh = edition_path(nb.path)
        rows.append(f"| {nb.week} | [{_chinese_title(root, nb)}]({zh}) | {badge_markdown(zh, repo, branch)} | "
                    f"[English]({nb.path}) |")
    return "\n".join(rows)


def _refresh_table(readme: Path, table: str) -> bool:
    if not readme.exists():
        return False
    text = readme.read_text(encoding="utf-8")
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def write_badges(root: Path | None = None, repo: str = REPO_URL, branch: str = BRANCH) -> list[str]:
    """Write badges into every syllabus notebook and README.md; return the paths that changed."""
    _github_path(repo)  # a bad address fails here, before any file changes
    root = root or project_root()
    notebooks = load_syllabus(root / "curriculum" / "syllabus.yaml")["notebooks"]
    changed = [nb.path for nb in notebooks
               if (root / nb.path).exists() and _update_notebook(root / nb.path, nb.path, repo, branch)]
    if _refresh_table(root / "README.md", _readme_table(notebooks, repo, branch)):
        changed.append("README.md")
    if _refresh_table(root / "README.zh-CN.md", _readme_table_zh(root, notebooks, repo, branch)):
        changed.append("README.zh-CN.md")
    return changed
