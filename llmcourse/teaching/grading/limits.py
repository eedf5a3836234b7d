"""Grading: how much of a submission's output the grader keeps, and text that every file can store.

A notebook that prints without end is stopped once the notebook the runner saves passes the output limit
(`OutputWatch`), and its status is ``output-limit``, with the size and the time, whatever else the runner reported
(a flood of output also makes the runner's own clock misfire: 200 MiB once came out as "ran past 240 s" after 45 s).
The executed notebook is stored with its outputs cut to the limit and a note where they were cut (`cap_outputs`);
the verdicts are read before that, from the whole notebook. Text from the student's code (error messages, outputs)
is made storable (`clean`): lone surrogate characters are written as escapes and long messages are clipped.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ... import checks
from ...threads import ENV_VAR as THREADS_VAR
from .assemble import GRADER_KEY

__all__ = ["FILES_LIMIT_GIB", "MESSAGE_CHARS", "OUTPUT_LIMIT_MIB", "THREAD_VARS", "OutputWatch", "cap_outputs", "clean",
           "mib", "thread_env"]

# What sets a kernel's thread count: the course's thread policy (llmcourse.setup) reads LLMCOURSE_THREADS first, the
# numeric libraries the others. A kernel in the sandbox cannot see the other kernels (its own PID namespace), so the
# policy alone would give each all the cores: with --jobs 2 on 2 cores, week 2.2 was graded at 4x its time.
THREAD_VARS = (THREADS_VAR, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(kernels: int) -> dict[str, str]:
    """The thread settings for each of `kernels` kernels sharing this machine's cores (the grader's own settings,
    where it has them, win)."""
    threads = max(1, (os.cpu_count() or 1) // max(1, kernels))
    return {var: os.environ.get(var, str(threads)) for var in THREAD_VARS}

OUTPUT_LIMIT_MIB = 20.0  # default: the course's largest notebook stores under 1 MiB of outputs
FILES_LIMIT_GIB = 4.0  # files a submission may keep in its working and temporary folders (a saved model: 0.5)
MESSAGE_CHARS = 2000  # longest message kept in a result record
CHECK_RESULT_BYTES = 64 * 1024  # an inserted check's result is kept whole up to this size, whatever the limit
POLL_S = 0.5
SETTLE_S = 10.0  # past the limit, how long to wait for the runner to finish saving the notebook before stopping it


def mib(n: float) -> str:
    """`n` bytes for messages: '212.4 MiB', or '3.2 KiB' below a MiB."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def clean(value: Any, chars: int | None = None) -> Any:
    """`value` with every text storable as UTF-8 (lone surrogates escaped) and, when `chars`, clipped to it."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        if chars is not None and len(text) > chars:
            text = f"{text[:chars]}… [{len(text) - chars} characters cut]"
        return text
    if isinstance(value, dict):
        return {clean(k): clean(v, chars) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, chars) for v in value]
    return value


def _size(output: Any) -> int:
    return len(json.dumps(output, ensure_ascii=False).encode("utf-8", "backslashreplace"))


def _is_check_result(output: Any) -> bool:
    return checks.RESULT_MIME in (output.get("data") or {})


def _is_check_cell(cell: Any) -> bool:
    """Whether the grader inserted `cell` to check an exercise (the student's cells lose that mark in `assemble`)."""
    meta = cell.get("metadata", {}).get(GRADER_KEY)
    return isinstance(meta, dict) and meta.get("role") == "check"


def _cut_stream(output: Any, room: int) -> None:
    """Cut the text of the stream `output` so that the output takes at most `room` bytes."""
    text = "".join(output.get("text") or "")[:room]
    output["text"] = text
    while text and _size(output) > room:  # JSON escapes can make text longer than its characters
        text = text[: len(text) * 3 // 4]
        output["text"] = text


def cap_outputs(nb: Any, limit_bytes: int) -> int:
    """Cut the outputs of `nb`, in order, to `limit_bytes` in all, with a note in each cell cut; return bytes cut.

    The first result of each inserted check cell stays (up to 64 KiB): the stored notebook shows every verdict.
    """
    import nbformat

    used = cut = 0
    full = False
    for cell in nb.cells:
        kept, dropped = [], 0
        verdict_kept = not _is_check_cell(cell)
        for output in cell.get("outputs") or []:
            size = _size(output)
            if not verdict_kept and _is_check_result(output) and size <= CHECK_RESULT_BYTES:
                kept.append(output)
                verdict_kept = True
                continue
            if not full and used + size <= limit_bytes:
                kept.append(output)
                used += size
                continue
            if not full and output.get("output_type") == "stream" and limit_bytes - used > 1024:
                _cut_stream(output, limit_bytes - used)  # the start of a flood shows what it was
                kept.append(output)
                used += _size(output)
                size -= _size(output)
            full = True
            dropped += size
        if dropped:
            note = (f"[llmcourse grade: {mib(dropped)} of this cell's output not stored; the grader stores "
                    f"{mib(limit_bytes)} of output per notebook]\n")
            kept.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            cell["outputs"] = kept
            cut += dropped
    return cut


class OutputWatch:
    """Sets `halt` when the file at `path` grows past `limit_bytes`, or when the batch's `stop` is set.

    Past the limit it waits until the file's size holds still (the runner finished saving it; at most 10 s). Pass
    `halt` to the runner as its stop event; after the run, `tripped` says whether the output limit stopped it.
    """

    def __init__(self, path: Path, limit_bytes: int, stop: threading.Event | None = None):
        self.path, self.limit_bytes, self.stop = Path(path), limit_bytes, stop
        self.halt = threading.Event()
        self.tripped = False
        self.size = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> OutputWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        last, deadline = -1, 0.0
        while not self._done.wait(POLL_S):
            if self.stop is not None and self.stop.is_set():
                self.halt.set()
                return
            try:
                size = self.path.stat().st_size
            except OSError:
                continue
            self.size = max(self.size, size)
            if not self.tripped and self.size > self.limit_bytes:
                self.tripped, deadline = True, time.monotonic() + SETTLE_S
            # once tripped, stop between two saves, so that the notebook saved last can be read back
            if self.tripped and (size == last or time.monotonic() > deadline):
                self.halt.set()
                return
            last = size
