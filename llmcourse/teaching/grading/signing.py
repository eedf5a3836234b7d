"""Grading: result records signed with an HMAC (SHA-256) under a key that the output folder keeps.

The key is made once per output folder (`DIR/.grading-key`, 32 random bytes as hex, mode 0600) and never leaves
the grader: the kernels run in temporary folders outside `DIR`. Every record the batch writes carries
``signature``, an HMAC of the rest of the record (its canonical JSON), which names the submission, the hash of its
file and of its executed notebook. A record whose signature is missing or wrong was not written by this grader as it
stands (changed by hand, by a submission's code, or made before signatures): a rerun grades that submission again,
and the reports show it as ``unverified`` until then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from ...errors import GradingError

__all__ = ["KEY_FILE", "batch_key", "sign", "verify"]

KEY_FILE = ".grading-key"
KEY_BYTES = 32


def _canonical(record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(record: dict, key: bytes) -> dict:
    """`record` with its ``signature`` (hex HMAC-SHA256 of everything else in it)."""
    return {**record, "signature": hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()}


def verify(record: object, key: bytes) -> bool:
    """Whether `record` carries a valid signature under `key`."""
    if not isinstance(record, dict) or not isinstance(record.get("signature"), str):
        return False
    try:
        expected = hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()
    except (TypeError, ValueError):  # not JSON-able: nothing the grader wrote
        return False
    return hmac.compare_digest(expected, record["signature"])


def batch_key(out: Path) -> bytes:
    """The signing key of output folder `out`, made on first use (mode 0600)."""
    path = Path(out) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise GradingError(f"cannot create the grading key {path} ({exc}). Fix: make {out} writable, or free space "
                           "on its disk, then run the same command again.") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise GradingError(f"cannot write the grading key {path} ({exc}). Fix: free space on the disk that holds "
                           f"{out}, then run the same command again.") from None
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    fix = (f"Fix: delete {path} (every result in {path.parent} is then graded again on the next run), or restore "
           "the key this folder was graded with.")
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise GradingError(f"{path} is not a regular file (a link?), so it cannot be trusted as the grading key. {fix}")
    if os.name == "posix":
        if info.st_uid != os.geteuid():
            raise GradingError(f"the grading key {path} belongs to another user. {fix}")
        if info.st_mode & 0o077:
            raise GradingError(f"the grading key {path} can be read by others (mode {stat.S_IMODE(info.st_mode):o}), "
                               f"so its signatures prove nothing. Fix: chmod 600 {path} if nobody else read it; "
                               f"otherwise delete it: every result in {path.parent} is then graded again.")
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise GradingError(f"the grading key {path} is damaged (expected {2 * KEY_BYTES} hex digits). {fix}")
    return key
