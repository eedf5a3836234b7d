"""Grading: the batch's temporary folder, where each submission's kernel runs, kept outside the output folder.

A kernel's working folder must not lie inside the output folder: code that knows where it runs would find the other
students' results next to it. Each batch gets a private folder in the system's temporary folder (``TMPDIR``), one
subfolder per submission, all removed when the batch ends. Folders left by a batch that was killed (the grader's
process is gone) are removed by the next batch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from ...errors import GradingError

__all__ = ["PREFIX", "batch_workdir"]

PREFIX = "llmcourse-grade-"
OWNER = "grader.json"  # pid and start time of the grader that made the folder
ORPHAN_AGE_S = 3600  # a folder without its owner file is left alone this long (it may be starting)


@contextmanager
def batch_workdir(out: Path) -> Iterator[Path]:
    """A private temporary folder for the kernels of one batch, outside `out`; removed when the block ends."""
    _sweep()
    try:
        root = Path(tempfile.mkdtemp(prefix=PREFIX)).resolve()
    except OSError as exc:
        raise GradingError(f"cannot make a temporary folder for the kernels in {tempfile.gettempdir()} ({exc}). "
                           "Fix: free space there, or set TMPDIR to a folder with space.") from None
    try:
        resolved = Path(out).resolve()
        if resolved == root or resolved in root.parents:
            raise GradingError(f"the kernels' temporary folder {root} lies inside the output folder {out}: a "
                               f"submission could change the grades. Fix: choose an --out outside "
                               f"{tempfile.gettempdir()}, or set TMPDIR to a folder outside {out}.")
        me = psutil.Process()
        (root / OWNER).write_text(json.dumps({"pid": me.pid, "started": me.create_time()}), encoding="utf-8")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _alive(owner: Path) -> bool:
    try:
        info = json.loads(owner.read_text(encoding="utf-8"))
        return psutil.Process(int(info["pid"])).create_time() == info["started"]
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return False


def _sweep() -> None:
    """Remove this user's batch folders whose grader is gone."""
    for folder in Path(tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not folder.is_dir() or folder.is_symlink() or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            continue
        owner = folder / OWNER
        if _alive(owner) or (not owner.exists() and time.time() - info.st_mtime < ORPHAN_AGE_S):
            continue
        shutil.rmtree(folder, ignore_errors=True)
