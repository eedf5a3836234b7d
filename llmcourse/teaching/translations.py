"""The Chinese edition: each notebook rebuilt from its English original and one translation file.

    weekNN/NN_topic.ipynb                       English, executed: the one source of code cells and outputs
    curriculum/zh-CN/weekNN/NN_topic.yaml       its markdown cells in Chinese, keyed by a hash of the English text
    curriculum/zh-CN/glossary.yaml              the fixed terms every translation uses (注意力, 微调, 量化 ...)
    weekNN/zh-CN/NN_topic.ipynb                 built by `llmcourse translations build`: never edited by hand

A translation entry names the English cell it translates by `cell_key`, a hash of that cell's text. When the English
text changes, its key changes, the old entry no longer matches anything, and `check` names the cell to translate
again. Code cells and their stored outputs are copied, so CI executes only the English notebooks and a learner who runs
the Chinese one gets the same results. `llmcourse translations todo NOTEBOOK` adds the missing entries to the file and
prints the English text a translator works from.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import atomic_write
from .notebooks import cell_source, cell_tags, notebook_text, read_notebook, write_notebook
from .syllabus import load_syllabus, project_root

__all__ = ["LANGUAGE", "Problem", "build", "build_all", "cell_key", "check", "edition_path", "english_prose_lines",
           "glossary", "load_translations", "save_translations", "todo", "translation_path"]

LANGUAGE = "zh-CN"
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`]*`")
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
_LINK_TARGET = re.compile(r"(\]\()([^)\s]+)(\))")
_HTML = re.compile(r"<[^>\n]+>")
_WORD = re.compile(r"[A-Za-z]{2,}")
PROSE_WORDS = 8  # a line with this many English words and no Chinese character is an untranslated line


@dataclass(frozen=True)
class Problem:
    """One thing `check` found: which notebook, which cell (or None), and what to do."""

    notebook: str
    cell: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.notebook} cell {self.cell}" if self.cell is not None else self.notebook
        return f"{where}: {self.message}"


# ---------------------------------------------------------------- names and paths
def cell_key(text: str) -> str:
    """The key of an English markdown cell: 12 hex digits of the SHA-256 of its text, trailing spaces ignored."""
    normal = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()[:12]


def edition_path(english: str) -> str:
    """'week02/01_tiny_gpt.ipynb' -> 'week02/zh-CN/01_tiny_gpt.ipynb' (paths relative to the course folder)."""
    p = Path(english)
    return (p.parent / LANGUAGE / p.name).as_posix()


def translation_path(english: str) -> str:
    """'week02/01_tiny_gpt.ipynb' -> 'curriculum/zh-CN/week02/01_tiny_gpt.yaml'."""
    p = Path(english)
    return (Path("curriculum") / LANGUAGE / p.parent / (p.stem + ".yaml")).as_posix()


def _translatable(cell: Any) -> bool:
    # the badge cell is written by `llmcourse badges`; the build writes the Chinese edition's own
    return cell["cell_type"] == "markdown" and "badges" not in cell_tags(cell)


# ---------------------------------------------------------------- translation files
def load_translations(english: str, root: Path | None = None) -> list[dict]:
    """The entries of `english`'s translation file, in file order ([] when it does not exist yet)."""
    import yaml

    path = (root or project_root()) / translation_path(english)
    if not path.exists():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({_first_line(exc)}). Fix: check the quoting of the entry "
                          "it names; a `zh: |` block keeps any text as it is.") from None
    entries = data.get("cells") or []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or "zh" not in entry:
            raise ConfigError(f"{path} entry {i} needs `key` (12 hex digits) and `zh` (the translation). Fix: run "
                              f"`llmcourse translations todo {english}` to rewrite the file's skeleton.")
    return entries


class _Literal(str):
    pass


def _dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Literal, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"))
    return Dumper


def save_translations(english: str, entries: list[dict], root: Path | None = None) -> Path:
    """Write `entries` ({key, en, zh[, stale]}) as the translation file of `english`, multi-line text as blocks."""
    import yaml

    path = (root or project_root()) / translation_path(english)
    rows = []
    for e in entries:
        zh = e.get("zh") or ""
        row = {"key": e["key"], "en": e.get("en", ""), "zh": _Literal(zh) if "\n" in zh else zh}
        if e.get("stale"):
            row["stale"] = True
        rows.append(row)
    head = (f"# Simplified Chinese markdown of {english}. `key` is the hash of the English cell, `en` its first line "
            "(for orientation only);\n# `zh` is the translation. Rebuild with `llmcourse translations build`.\n")
    body = yaml.dump({"notebook": english, "cells": rows}, Dumper=_dumper(), allow_unicode=True, sort_keys=False,
                     width=1000)
    atomic_write(path, head + body)
    return path


def _first_line(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:80] if lines else ""


def todo(english: str, root: Path | None = None) -> list[tuple[int, str, str]]:
    """Rewrite `english`'s translation file in cell order: keep every translation whose key still matches, add an
    empty entry for each new cell, keep entries that match nothing at the end marked `stale`. Return the cells still
    to translate as (cell index, key, English text)."""
    root = root or project_root()
    nb = read_notebook(root / english)
    old = {e["key"]: e for e in load_translations(english, root)}
    entries, missing, seen = [], [], set()
    for i, cell in enumerate(nb.cells):
        if not _translatable(cell):
            continue
        text = cell_source(cell)
        key = cell_key(text)
        if key in seen:
            continue
        seen.add(key)
        zh = (old.get(key) or {}).get("zh") or ""
        entries.append({"key": key, "en": _first_line(text), "zh": zh})
        if not zh.strip():
            missing.append((i, key, text))
    entries += [dict(e, stale=True) for k, e in old.items() if k not in seen and (e.get("zh") or "").strip()]
    save_translations(english, entries, root)
    return missing


# ---------------------------------------------------------------- the glossary
def glossary(root: Path | None = None) -> list[tuple[re.Pattern, str, str]]:
    """The fixed terms: (pattern of the English term, the term as written, its Chinese)."""
    import yaml

    path = (root or project_root()) / "curriculum" / LANGUAGE / "glossary.yaml"
    rows = yaml.safe_load(path.read_text(encoding="utf-8"))["terms"]
    return [(re.compile(r"\b" + r["pattern"], re.I), r["en"], r["zh"]) for r in rows]


def _prose(text: str) -> str:
    """Markdown with code, formulas, link targets and HTML tags removed: the words a reader reads."""
    for pattern in (_FENCE, _INLINE_CODE, _MATH, _HTML):
        text = pattern.sub(" ", text)
    return _LINK_TARGET.sub(r"\1\3", text)


def english_prose_lines(text: str) -> list[str]:
    """Lines of a markdown cell that read as English prose: at least PROSE_WORDS English words and no Chinese."""
    return [line.strip() for line in _prose(text).splitlines()
            if len(_WORD.findall(line)) >= PROSE_WORDS and not _CJK.search(line)]


# ---------------------------------------------------------------- building
def _relink(text: str, english: str, notebooks: set[str]) -> str:
    """Relative links of a markdown cell rewritten for the Chinese edition's folder; links to syllabus notebooks
    point to their Chinese editions."""
    here = Path(english).parent
    there = Path(edition_path(english)).parent

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, re.I):
            return m.group(0)
        path, _, anchor = target.partition("#")
        if not path:
            return m.group(0)
        resolved = os.path.normpath((here / path).as_posix()).replace(os.sep, "/")
        if resolved in notebooks:
            resolved = edition_path(resolved)
        new = os.path.relpath(resolved, there.as_posix()).replace(os.sep, "/")
        return f"{m.group(1)}{new}{'#' + anchor if anchor else ''}{m.group(3)}"

    return _LINK_TARGET.sub(fix, text)


def _badge_source(english: str, english_badges: str) -> str:
    """The English notebook's badges (whatever repository `llmcourse badges` wrote) pointed at the Chinese edition."""
    return f"{english_badges.replace(english, edition_path(english))} · [English edition](../{Path(english).name})"


def build(english: str, root: Path | None = None, notebooks: set[str] | None = None):
    """The Chinese edition of `english` as a notebook object. ConfigError naming every cell without a translation."""
    root = root or project_root()
    if notebooks is None:
        notebooks = {nb.path for nb in load_syllabus(root / "curriculum" / "syllabus.yaml")["notebooks"]}
    nb = copy.deepcopy(read_notebook(root / english))
    zh = {e["key"]: e["zh"] for e in load_translations(english, root) if (e.get("zh") or "").strip()}
    missing = []
    for i, cell in enumerate(nb.cells):
        if cell["cell_type"] != "markdown":
            continue
        if "badges" in cell_tags(cell):
            cell["source"] = _badge_source(english, cell_source(cell))
            continue
        key = cell_key(cell_source(cell))
        if key not in zh:
            missing.append(f"cell {i} ({_first_line(cell_source(cell))!r}, key {key})")
            continue
        cell["source"] = _relink(zh[key].rstrip("\n"), english, notebooks)
    if missing:
        raise ConfigError(f"{english}: {len(missing)} markdown cell(s) have no translation: {'; '.join(missing[:5])}"
                          f"{' ...' if len(missing) > 5 else ''}. Fix: run `llmcourse translations todo {english}`, "
                          f"fill in `zh` in {translation_path(english)}, then build again.")
    nb.metadata["llmcourse"] = {"edition": LANGUAGE, "english": Path(english).name}
    return nb


def _syllabus_paths(root: Path) -> list[str]:
    return [nb.path for nb in load_syllabus(root / "curriculum" / "syllabus.yaml")["notebooks"]]


def build_all(notebooks: list[str] | None = None, root: Path | None = None) -> list[str]:
    """Write the Chinese edition of each notebook (default: the whole syllabus); return the paths that changed."""
    root = root or project_root()
    every = _syllabus_paths(root)
    changed = []
    for english in notebooks or every:
        english = Path(english).as_posix()
        if english not in every:
            raise ConfigError(f"{english} is not in curriculum/syllabus.yaml. Fix: give a syllabus notebook, e.g. "
                              f"{every[0]}.")
        target = root / edition_path(english)
        nb = build(english, root, set(every))
        if not target.exists() or target.read_text(encoding="utf-8") != notebook_text(nb):
            target.parent.mkdir(parents=True, exist_ok=True)
            write_notebook(nb, target)
            changed.append(edition_path(english))
    return changed


# ---------------------------------------------------------------- checking
def _check_one(english: str, root: Path, every: set[str], terms) -> list[Problem]:
    out: list[Problem] = []
    nb = read_notebook(root / english)
    entries = load_translations(english, root)
    if not entries:
        return [Problem(english, None, f"no translation file. Fix: run `llmcourse translations todo {english}` and "
                        f"translate {translation_path(english)}.")]
    zh = {e["key"]: (e.get("zh") or "") for e in entries}
    current = {cell_key(cell_source(c)) for c in nb.cells if _translatable(c)}
    stale = [e["key"] for e in entries if e["key"] not in current]
    for i, cell in enumerate(nb.cells):
        if not _translatable(cell):
            continue
        text = cell_source(cell)
        key = cell_key(text)
        if not zh.get(key, "").strip():
            why = ("no translation matches its text: it is new, or its English changed since it was translated"
                   if stale else "it has no translation yet")
            out.append(Problem(english, i, f"{_first_line(text)!r} (key {key}): {why}. Fix: run `llmcourse "
                               f"translations todo {english}` and translate it in {translation_path(english)}."))
            continue
        prose = _prose(text)
        for pattern, en, term in terms:
            if pattern.search(prose) and term not in zh[key]:
                out.append(Problem(english, i, f"the English says {en!r} but the translation lacks the glossary term "
                                   f"{term!r}. Fix: use {term} (curriculum/{LANGUAGE}/glossary.yaml)."))
        left = english_prose_lines(zh[key])
        if left:
            out.append(Problem(english, i, f"the translation still has English prose: {left[0][:70]!r}. Fix: "
                               "translate it (code, names and formulas may stay)."))
    if stale:
        out.append(Problem(english, None, f"{len(stale)} translation(s) match no English cell ({', '.join(stale[:4])})"
                           f". Fix: reuse their text for the changed cells, then delete them."))
    target = root / edition_path(english)
    if not out:
        built = notebook_text(build(english, root, every))
        if not target.exists():
            out.append(Problem(english, None, f"{edition_path(english)} does not exist. Fix: run `llmcourse "
                               "translations build`."))
        elif target.read_text(encoding="utf-8") != built:
            out.append(Problem(english, None, f"{edition_path(english)} is out of date with its English notebook or "
                               "its translations. Fix: run `llmcourse translations build` and commit the result."))
    return out


def check(root: Path | None = None, notebooks: list[str] | None = None) -> list[Problem]:
    """Every syllabus notebook (or those given): translated cell by cell, glossary terms used, no English prose
    left, and its Chinese edition on disk equal to what `build` makes. Returns the problems (empty: all good)."""
    root = root or project_root()
    every = _syllabus_paths(root)
    terms = glossary(root)
    problems: list[Problem] = []
    for english in notebooks or every:
        problems += _check_one(Path(english).as_posix(), root, set(every), terms)
    return problems
