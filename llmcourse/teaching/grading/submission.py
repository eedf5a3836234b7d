"""Grading, stage 2 (before `assemble`): the student's file, as a notebook the later stages can rely on, or why not.

Jupyter, Colab and VS Code write notebooks the grader can read. A file that was cut short, edited by hand or made by
another tool may be JSON that nbformat accepts and still break the grader later (tags that are a number, a cell
without a type or a source, a lone surrogate character that no file can store). Each of those is an
`InvalidSubmission` here, whose message names the first problem and its place, so that it becomes that submission's
status (`invalid`) and never stops the batch.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["InvalidSubmission", "parse_submission"]

CELL_TYPES = ("code", "markdown", "raw")
FIX = "Fix: open it in Jupyter (or Colab), run it, save it, and resubmit the saved .ipynb file."


class InvalidSubmission(Exception):
    """The submission is not a notebook the grader can run; the message says why and what the student can do."""

    def __init__(self, cause: str):
        self.cause = cause
        super().__init__(f"not a notebook Jupyter can open: {cause}. {FIX}")


def parse_submission(raw: bytes) -> Any:
    """The notebook (nbformat 4) in `raw`; `InvalidSubmission` naming the first problem when there is one."""
    import nbformat

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidSubmission(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        cause = f"not JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else "not JSON"
        raise InvalidSubmission(cause) from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", data.get("worksheets")), list):
        raise InvalidSubmission("the file holds JSON but no list of cells")
    where = _surrogate(data)
    if where:
        raise InvalidSubmission(f"{where} holds a lone surrogate character, which no notebook file can store")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # an unknown nbformat version, a v3 file nbformat cannot convert...
        raise InvalidSubmission(f"nbformat cannot read it ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(nb.get("metadata"), dict) or not isinstance(nb.get("cells"), list):
        raise InvalidSubmission("the notebook's metadata is not a mapping, or its cells are not a list")
    for index, cell in enumerate(nb.cells):
        problem = _cell_problem(cell)
        if problem:
            raise InvalidSubmission(f"cell {index} {problem}")
        if cell.cell_type == "code":  # harmless gaps that papermill would trip on
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
    return nb


def _cell_problem(cell: Any) -> str:
    """What makes `cell` unusable by the grader ("" when nothing)."""
    if not isinstance(cell, dict):
        return f"is a {type(cell).__name__}, not a mapping"
    if cell.get("cell_type") not in CELL_TYPES:
        found = "no cell_type" if "cell_type" not in cell else f"cell_type {cell['cell_type']!r}"
        return f"has {found} (expected one of {', '.join(CELL_TYPES)})"
    source = cell.get("source")
    if not (isinstance(source, str) or isinstance(source, list) and all(isinstance(s, str) for s in source)):
        return "has no source" if "source" not in cell else f"has a source that is a {type(source).__name__}, not text"
    if "id" in cell and not isinstance(cell["id"], str):
        return f"has an id that is a {type(cell['id']).__name__}, not text"
    metadata = cell.get("metadata", {})
    if not isinstance(metadata, dict):
        return f"has metadata that is a {type(metadata).__name__}, not a mapping"
    tags = metadata.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return f"has tags {json.dumps(tags)[:80]}, not a list of text"
    if cell["cell_type"] == "code" and not isinstance(cell.get("outputs", []), list):
        return "has outputs that are not a list"
    return ""


def _has_surrogate(value: Any) -> bool:
    """Whether any text in `value` (keys included) holds a lone surrogate; iterative, so deep nesting is fine."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _surrogate(data: dict) -> str:
    """Where the first lone surrogate character in the notebook `data` is ("" when there is none)."""
    for index, cell in enumerate(data.get("cells") or []):
        for key, value in (cell.items() if isinstance(cell, dict) else [("content", cell)]):
            if _has_surrogate(key) or _has_surrogate(value):
                return f"cell {index}'s {key}"
    for key, value in data.items():
        if key != "cells" and (_has_surrogate(key) or _has_surrogate(value)):
            return f"the notebook's {key}"
    return ""
