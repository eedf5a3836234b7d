"""The course's cache may be read-only (the grader's sandbox mounts it so; so may a shared install): the code that
stores cache entries carries on without storing them, and data sets load in memory so that `map` needs no cache
files. Found by grading week 2.2 and week 5.2 in the sandbox, where the reference notebook itself failed with
"Read-only file system" until then."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from llmcourse.files import cache_path, cache_writable
from llmcourse.teaching import isolation

HAVE = isolation.detect()
needs_sandbox = pytest.mark.skipif(
    HAVE.level != "bubblewrap" and os.environ.get("LLMCOURSE_REQUIRE_SANDBOX") != "1",
    reason=f"needs bubblewrap to mount the cache read-only: {HAVE.reason}")

IN_SANDBOX = textwrap.dedent('''
    import warnings
    from pathlib import Path

    from llmcourse import data
    from llmcourse.assets import cache_dir
    from llmcourse.files import cache_path, cache_writable

    root = cache_dir()
    assert not cache_writable(root / "data"), "the cache should be read-only here"
    tweets = data.load("tweets_binary")  # prepared by make setup, read from the read-only cache
    lengths = tweets["test"].map(lambda row: {"n": len(row["text"])})  # datasets writes cache files for this
    assert len(lengths) == len(tweets["test"]) and "n" in lengths.column_names
    target = root / "nowhere" / "entry.txt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cache_path(target) as tmp:
            tmp.write_text("made for this run")
            assert tmp.read_text() == "made for this run"
    assert not target.exists() and not tmp.exists()
    assert any("read-only" in str(w.message) for w in caught), [str(w.message) for w in caught]
    print("ok")
''')


@needs_sandbox
def test_a_read_only_cache_is_read_and_not_written(tmp_path):
    """In a submission's sandbox (the grader's own `kernel_prefix`), where the cache is mounted read-only."""
    assert HAVE.level == "bubblewrap", HAVE.reason
    work, runtime = tmp_path / "work", tmp_path / "runtime"
    work.mkdir()
    runtime.mkdir()
    prefix = isolation.kernel_prefix(HAVE, work, runtime)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([*prefix, sys.executable, "-c", IN_SANDBOX], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_writable_cache_stores_the_entry_whole(tmp_path):
    target = tmp_path / "cache" / "entry.txt"
    assert cache_writable(target.parent) and not list(target.parent.iterdir())  # the probe leaves nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the cache can be written
        with cache_path(target) as tmp:
            tmp.write_text("kept")
            assert not target.exists()  # not there until the block ends
    assert target.read_text() == "kept"
    with pytest.raises(RuntimeError), cache_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the block failed")
    assert target.read_text() == "kept" and sorted(p.name for p in target.parent.iterdir()) == ["entry.txt"]


@needs_sandbox
def test_only_the_reference_run_may_write_the_cache(tmp_path, monkeypatch):
    """The grader runs the instructor's reference notebook with the cache writable, so that what it trains once is
    there for every submission; a submission's kernel gets the same cache read-only."""
    assert HAVE.level == "bubblewrap", HAVE.reason
    home = tmp_path / "course-cache"
    (home / "vision").mkdir(parents=True)
    monkeypatch.setenv("LLMCOURSE_HOME", str(home))
    work, runtime = tmp_path / "work", tmp_path / "runtime"
    work.mkdir()
    runtime.mkdir()
    write = f"open({str(home / 'vision' / 'model.pt')!r}, 'w').write('trained once')"
    for writable, code in ((False, 1), (True, 0)):
        prefix = isolation.kernel_prefix(HAVE, work, runtime, writable_cache=writable)
        done = subprocess.run([*prefix, sys.executable, "-c", write], capture_output=True, text=True, timeout=60)
        assert (done.returncode != 0) == bool(code), done.stderr[-500:]
        assert ("Read-only file system" in done.stderr) == (not writable), done.stderr[-500:]
    assert (home / "vision" / "model.pt").read_text() == "trained once"
