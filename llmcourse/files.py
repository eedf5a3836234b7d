"""Files the course writes: atomically (a reader sees the old file or the whole new one), under stable cache keys.

Introduced in week 3 (`week03/02_finetune_classifier.ipynb`, whose fine-tuned classifier is cached for later
lessons); the grader writes its results and reports the same way.

The course's cache may be read-only: the grader's sandbox mounts it so (a kernel must not change what the next
submission, or the reference, reads), and so may a shared install on a lab machine. What the cache keeps can always
be made again, so `cache_path` and `cache_writable` let the code that stores an entry carry on without storing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "cache_key", "cache_path", "cache_writable"]


@contextmanager
def atomic_path(target: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """A temporary file (or folder) next to `target`, moved onto `target` when the block ends without an error.

    A file replaces what was there. A folder cannot replace a complete one: when another process renamed its copy
    into place first, that copy is kept and this one is dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if folder:
            tmp.chmod(0o755)  # mkdtemp makes it private to this user; the cache is shared like any other folder
        try:
            os.replace(tmp, target)
        except OSError:
            if not (folder and target.exists()):
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def cache_writable(folder: str | os.PathLike) -> bool:
    """Whether a file can be made in `folder` (made if missing): False on a read-only mount, whoever runs."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
        return True
    except OSError:
        return False


@contextmanager
def cache_path(target: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """`atomic_path` for an entry of the course's cache. Where the cache cannot be written (see the module's
    docstring) the block writes to a temporary path that is deleted after it, and a warning says that the entry is
    not kept: read what the block wrote inside the block, or keep the object it saved."""
    target = Path(target)
    if cache_writable(target.parent):
        with atomic_path(target, folder=folder) as tmp:
            yield tmp
        return
    warnings.warn(f"the course cache cannot be written here ({target.parent} is read-only): {target.name} is made "
                  "for this run only and made again next time.", stacklevel=3)
    with tempfile.TemporaryDirectory(prefix="llmcourse-uncached-") as scratch:
        tmp = Path(scratch) / target.name
        if folder:
            tmp.mkdir()
        yield tmp


def _digest_bytes(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"cache_key cannot hash a {type(value).__name__}")


def cache_key(value: Any, length: int = 10) -> str:
    """A stable hex key of `length` characters for a JSON value (bytes inside it count by their content)."""
    text = json.dumps(value, sort_keys=True, default=_digest_bytes)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
