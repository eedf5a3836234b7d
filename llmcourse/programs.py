"""Where the programs that run a student's code are confined, when the grader runs them.

The course's helpers that start a program on a learner's code (Python on their package, pytest on their tests, ruff:
`llmcourse.contrib`, `llmcourse.upstream`) put `prefix(cwd)` before its command line. In a learner's own kernel it is
empty: the programs run as the learner does. When the grader gathers facts from a student's work (the answer
derivations of `llmcourse.teaching.grading.judge`), it installs a confiner (`confiner`: the sandbox's command,
`llmcourse.teaching.isolation.command_prefix`), and the derivation names the one folder the programs may write
(`confined_to`). This module holds only that state, so the learner's modules need nothing of the grader's.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from pathlib import Path

__all__ = ["confined_to", "confiner", "folder", "prefix"]

Confiner = Callable[[Path, Path], list]  # (the writable folder, the program's working folder) -> command prefix

_CONFINER: contextvars.ContextVar[Confiner | None] = contextvars.ContextVar("llmcourse_confiner", default=None)
_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("llmcourse_confined_to", default=None)


@contextlib.contextmanager
def confiner(make_prefix: Confiner):
    """Within this block, programs started inside a `confined_to` block run behind `make_prefix(folder, cwd)`."""
    token = _CONFINER.set(make_prefix)
    try:
        yield
    finally:
        _CONFINER.reset(token)


@contextlib.contextmanager
def confined_to(folder: Path):
    """Within this block, `folder` is the only folder the programs the helpers start may write (where a confiner is
    installed), and where they keep their temporary files."""
    token = _FOLDER.set(Path(folder).resolve())
    try:
        yield
    finally:
        _FOLDER.reset(token)


def folder() -> Path | None:
    """The folder of the enclosing `confined_to` block, or None."""
    return _FOLDER.get()


def prefix(cwd: Path) -> list:
    """What goes before the command line of a program started in `cwd`: the confiner's prefix inside a `confined_to`
    block under a `confiner`, else nothing."""
    make_prefix, where = _CONFINER.get(), _FOLDER.get()
    return [] if make_prefix is None or where is None else list(make_prefix(where, Path(cwd).resolve()))
