"""`make site` (`llmcourse site`): the course as a static website, from the executed notebooks, never re-run.

Built with Sphinx, MyST-NB and the Sphinx Book Theme (the engine of Jupyter Book 1): every part installs from PyPI
with `make setup` and builds with no network at all. Jupyter Book 2 fetches its web theme from the internet at build
time, and Quarto's PyPI package downloads its binary at install time; neither works on an offline machine.

    build/site-src/   staged sources: the student copy of each notebook (solutions stubbed, exercise and check
                      outputs cleared), progress-bar widgets frozen at their final state, a header cell with the
                      measured runtime, the exercises, the download of the student copy and the other language;
                      index pages made from curriculum/syllabus.yaml (weeks and objectives)
    build/site/       the HTML (open build/site/index.html, or serve the folder)
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .execute import stored_seconds
from .notebooks import cell_source, read_notebook, write_notebook
from .release import make_student_copy
from .syllabus import load_syllabus, project_root
from .translations import LANGUAGE, edition_path

__all__ = ["build_site", "freeze_widgets", "stage"]

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_EXERCISE = re.compile(r"^###\s+(?:Exercise|练习)\s+(\d+\.\d+)\s*[—-]\s*(.+?)\s*$", re.M)


# ---------------------------------------------------------------- widgets
def _render(state: dict, model_id: str, depth: int = 0) -> str:
    model = state.get(model_id)
    if model is None or depth > 8:
        return ""
    name, s = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        inner = "".join(_render(state, c.replace("IPY_MODEL_", ""), depth + 1) for c in s.get("children", []))
        return f'<span class="llmc-widget">{inner}</span>'
    if name in ("HTMLModel", "LabelModel"):
        return f"<span>{s.get('value', '')}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        value, top = float(s.get("value") or 0), float(s.get("max") or 1)
        return f'<progress value="{value:g}" max="{top:g}"></progress>'
    return ""


def freeze_widgets(nb: Any) -> int:
    """Replace each widget output (a tqdm bar, most often) by HTML of its final state from the notebook's saved widget
    state, so that a page shows "100% 1400/1400" instead of the "0%" text a viewer without widgets falls back to.
    Returns how many outputs changed."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    changed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if not view:
                continue
            rendered = _render(state, view.get("model_id", ""))
            if rendered:
                text = re.sub(r"<[^>]+>", " ", rendered)
                out["data"] = {"text/html": rendered, "text/plain": html.unescape(" ".join(text.split()))}
                changed += 1
    return changed


# ---------------------------------------------------------------- staging
def _exercises(nb: Any) -> dict[str, str]:
    found = [m.groups() for c in nb.cells if c.cell_type == "markdown" for m in _EXERCISE.finditer(cell_source(c))]
    return {k: re.sub(r"\s*[（(][^()（）]*(?:points?|分)[)）]\s*$", "", v) for k, v in found}


def _header(entry, nb: Any, zh: bool, student: str) -> str:
    stored, _ = stored_seconds(nb)
    titles = _exercises(nb)
    unit = "分" if zh else "pts"
    points = ", ".join(f"{e.id} {titles.get(e.id, '')} ({e.points:g} {unit})" for e in entry.exercises)
    depth = "../" * len(Path(entry.path).parent.parts)
    name = Path(entry.path).with_suffix(".html").as_posix()
    other = (f'<a href="../{depth}{name}">English</a>' if zh else f'<a href="{depth}{LANGUAGE}/{name}">中文</a>')
    if zh:
        return (f"**运行时间**：2 核 CPU 上声明 {entry.runtime_min:g} 分钟，"
                f"保存的这次运行用了 {stored / 60:.1f} 分钟。 **练习**：{points}。 "
                f"**下载**：{{download}}`学生版笔记本 <{student}>`（答案已替换为待填写的桩代码）。 **语言**：{other}")
    return (f"**Runtime:** {entry.runtime_min:g} min declared on a 2-core CPU; the stored run took "
            f"{stored / 60:.1f} min. **Exercises:** {points}. **Download:** {{download}}`the student copy <{student}>` "
            f"(solutions replaced by stubs). **Language:** {other}")


def _stage_notebook(root: Path, src: Path, entry, zh: bool) -> str:
    """Stage the page of `entry` (its Chinese edition when `zh`) at the English path inside `src`; return its title."""
    import nbformat

    source = read_notebook(root / (edition_path(entry.path) if zh else entry.path))
    student = make_student_copy(source, name=entry.path)
    write_notebook(student, src / "student" / entry.path)
    nb = nbformat.from_dict(student)
    freeze_widgets(nb)
    if zh and nb.cells and "badges" in nb.cells[0].metadata.get("tags", []):  # the header links the other language
        nb.cells[0].source = cell_source(nb.cells[0]).split(" · [English edition]")[0]
    rel = "../" * len(Path(entry.path).parent.parts) + "student/" + entry.path
    header = nbformat.v4.new_markdown_cell(_header(entry, source, zh, rel))
    header.metadata["tags"] = ["site-header"]
    nb.cells.insert(1, header)
    write_notebook(nb, src / entry.path)
    title = next((m.group(1) for c in nb.cells if c.cell_type == "markdown"
                  for m in [re.match(r"#\s+(.+)", cell_source(c).strip())] if m), entry.title)
    return title


def _index(syllabus: dict, titles: dict[str, str], zh: bool) -> str:
    if zh:
        lines = ["# llmcourse：用你手上的笔记本电脑学大模型", "",
                 "八周课程，每个笔记本都在 2 核 CPU 上运行，使用随软件包安装的真实模型和数据；"
                 "每页展示保存的那次运行的实测结果。"
                 '练习的学生版可在每页下载。<a href="../index.html">English</a> · [课程说明](readme.md)', ""]
    else:
        lines = ["# llmcourse: large language models on the laptop you already have", "",
                 "An eight-week course: every notebook runs on a 2-core CPU with real models and data that install "
                 "from PyPI, and each page shows the measured results of its stored run, with the student copy of its "
                 f'exercises to download. <a href="{LANGUAGE}/index.html">中文</a> · [About the course](readme.md)', ""]
    for week in syllabus["weeks"]:
        n = week["week"]
        heading = f"第 {n} 周" if zh else f"Week {n}: {week['title']}"
        lines += [f"## {heading}", ""]
        if not zh:
            lines += ["Objectives:", ""] + [f"- {o}" for o in week.get("objectives", [])] + [""]
        paths = [nb["path"] for nb in week["notebooks"]]
        lines += ["Notebooks:" if not zh else "笔记本：", ""] + [f"- [{titles[p]}]({p})" for p in paths] + [""]
        lines += ["```{toctree}", f":caption: {heading}", ":hidden:", ""]
        lines += ["/" + p[:-len(".ipynb")] for p in paths] + ["```", ""]
    lines += ["```{toctree}", ":hidden:", "", "readme", "```", ""]
    return "\n".join(lines)


_CONF = """# Written by `llmcourse site`; edit llmcourse/teaching/site.py instead.
project = "llmcourse"
author = "the llmcourse developers"
language = "{language}"
extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"  # the stored outputs are the results: never re-run
nb_merge_streams = True
html_theme = "sphinx_book_theme"
html_title = "{title}"
html_theme_options = {{"show_toc_level": 2, "home_page_in_toc": True}}
exclude_patterns = ["student/**", "_build"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure", "toc.not_included",
                     "myst.xref_missing", "image.not_readable", "docutils"]
html_css_files = ["llmcourse.css"]
html_static_path = ["_static"]
"""
_CSS = ".llmc-widget progress { width: 12em; vertical-align: middle; margin: 0 .5em; }\n"


def stage(root: Path | None = None, out: str | Path = "build/site-src", zh: bool = False) -> Path:
    """Write the Sphinx sources of one language of the site under `out` (emptied first); return it."""
    from tqdm.auto import tqdm

    root = root or project_root()
    syllabus = load_syllabus(root / "curriculum" / "syllabus.yaml")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "_static").mkdir(parents=True)
    (out / "conf.py").write_text(_CONF.format(language="zh_CN" if zh else "en",
                                              title="llmcourse 中文版" if zh else "llmcourse"), encoding="utf-8")
    (out / "_static" / "llmcourse.css").write_text(_CSS, encoding="utf-8")
    readme = root / ("README.zh-CN.md" if zh else "README.md")
    (out / "readme.md").write_text(readme.read_text(encoding="utf-8"), encoding="utf-8")
    titles = {}
    entries = [e for e in syllabus["notebooks"] if not zh or (root / edition_path(e.path)).exists()]
    for entry in tqdm(entries, desc=f"staging {'zh-CN' if zh else 'en'} pages", unit="nb"):
        titles[entry.path] = _stage_notebook(root, out, entry, zh)
    syllabus = dict(syllabus, weeks=[dict(w, notebooks=[n for n in w["notebooks"] if n["path"] in titles])
                                     for w in syllabus["weeks"]])
    (out / "index.md").write_text(_index(syllabus, titles, zh), encoding="utf-8")
    return out


def _sphinx(src: Path, out: Path, jobs: int) -> None:
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", str(jobs), str(src), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"sphinx failed ({result.returncode}): {result.stderr.strip()[-600:]}. Fix: run "
                          f"`{' '.join(cmd)}` to see the whole log; is the `site` extra installed (make setup)?")


def build_site(root: Path | None = None, out: str | Path = "build/site", jobs: int = 2) -> Path:
    """Stage and build the English site in `out` and the Chinese one in `out/zh-CN`; return `out` (index.html)."""
    root = root or project_root()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    sources = out.parent / (out.name + "-src")
    _sphinx(stage(root, sources / "en"), out, jobs)
    _sphinx(stage(root, sources / LANGUAGE, zh=True), out / LANGUAGE, jobs)
    print(f"site: {out}/index.html, built in {time.perf_counter() - start:.0f} s")
    return out
