"""Grading: a failure of the grader's own work on one submission becomes that submission's status, never the batch's.

Every step that can fail for reasons outside the student's notebook (building the notebook to run, running it,
reading it back, storing it, storing the result) runs inside `stage(...)`. What it raises becomes a `StageFailed`,
whose status is ``disk`` for a full disk and ``error`` otherwise, with the real cause and the step in its message.
Such a record is marked ``retry``: the next run of the same command grades the submission again.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from .reference import RefExercise

__all__ = ["StageFailed", "failed_rows", "is_disk_full", "stage"]

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says that a disk (or this user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


class StageFailed(Exception):
    """A step of grading one submission failed; `status` is disk or error, `message` the cause and the fix."""

    def __init__(self, step: str, exc: BaseException):
        self.step, self.exc = step, exc
        cause = f"{type(exc).__name__}: {exc}"
        if is_disk_full(exc):
            self.status = "disk"
            self.message = (f"the disk is full ({step}: {cause}). Fix: free space on that disk and run the same "
                            "command again: this submission is graded again.")
        else:
            self.status = "error"
            self.message = (f"the grader failed {step} ({cause}). This is not the student's doing: run the same "
                            "command again to grade it again; if it fails the same way, report it with this file.")
        super().__init__(self.message)


@contextmanager
def stage(step: str) -> Iterator[None]:
    """Turn any exception raised in the block into a `StageFailed` naming `step` ("storing the result"...)."""
    try:
        yield
    except StageFailed:
        raise
    except Exception as exc:
        raise StageFailed(step, exc) from exc


def failed_rows(refs: list[RefExercise], status: str, message: str) -> list[dict]:
    """One row per exercise, all with `status`, no points and `message`."""
    return [{"exercise": ex.id, "status": status, "points": 0.0, "max_points": ex.points, "message": message}
            for ex in refs]
