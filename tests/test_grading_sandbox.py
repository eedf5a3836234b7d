"""The sandbox around each graded kernel (issue 21, item 2), and the submissions that try to get out of it.

The hostile cells below (reading the instructor's reference and running its solutions, rewriting the grader's
package and other students' results, a loopback connection to a port the test opens, a double-forked process that
outlives its kernel, a grandchild that holds memory past the limit) are graded in test_grading_hostile's one batch.
Each solves nothing itself: full marks would mean it got out. Here: what the sandbox shows a program, that
everything it started dies with its runner, what it costs, and what happens without bubblewrap.

Needs bubblewrap (`bwrap`); without it these tests skip, saying so, except where LLMCOURSE_REQUIRE_SANDBOX=1 (CI
installs bubblewrap and sets it), where they fail. What the fallback gives is tested too.
"""

from __future__ import annotations

import hashlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import psutil
import pytest
from test_grading import FIXTURE, student_copy
from test_grading_robust import FULL, honest, write

from llmcourse.teaching import isolation
from llmcourse.teaching.grading import grade

ROOT = Path(__file__).resolve().parents[1]
MARK = f"llmcourse-escapee-{uuid.uuid4().hex[:8]}"  # in the command line of every process a submission leaves behind
HAVE = isolation.detect()

needs_sandbox = pytest.mark.skipif(
    HAVE.level != "bubblewrap" and os.environ.get("LLMCOURSE_REQUIRE_SANDBOX") != "1",
    reason=f"no sandbox on this machine: {HAVE.describe()}")

# Each hostile cell runs right after the data cell, and prints what it managed; none of them solves an exercise.
STEAL_SOLUTIONS = '''import json, pathlib
ref = pathlib.Path({reference!r})
try:  # the instructor's reference holds the solutions: run its exercise cells here
    nb = json.loads(ref.read_text())
    for c in nb["cells"]:
        if "exercise" in c["metadata"].get("tags", []):
            exec("".join(c["source"]))
    print("read the reference: True")
except OSError as exc:
    print("read the reference: False", type(exc).__name__)'''

REWRITE = '''import glob, json, os, pathlib
hits = []
for pattern in [{out!r} + "/results/*.json", {out!r} + "/.grading-key", {package!r} + "/checks.py",
                {checkout!r} + "/tests/fixtures/*.ipynb", {submitted!r} + "/*.ipynb"]:
    for path in glob.glob(pattern) + [pattern.replace("*", "honest")]:
        try:
            with open(path, "a") as f:
                f.write("\\n# rewritten by a submission\\n")
            hits.append(path)
        except OSError:
            pass
print("files rewritten:", len(hits), hits[:3])
print("visible in the checkout:", sorted(os.listdir({checkout!r})) if os.path.isdir({checkout!r}) else None)'''

NETWORK = '''import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", {port}))
    s.sendall(b"escaped")
    print("connected to the grader's loopback: True")
except OSError as exc:
    print("connected to the grader's loopback: False", type(exc).__name__)'''

ORPHAN = f'''import os, subprocess, sys, time
# a double fork: the grandchild is nobody's child once its parent exits, and sleeps for ten minutes
subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys; "
                  "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {MARK!r}], "
                  "start_new_session=True); os._exit(0)"]).wait()
time.sleep(1)
print("left a process behind")'''

HOG = f'''import subprocess, sys, time
# a double-forked child holds 2.5 GiB while the kernel itself stays small
subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys; "
                  "subprocess.Popen([sys.executable, '-c', 'import time; b = b\\"x\\" * (5 * 2**29); time.sleep(600)', "
                  "{MARK!r}], start_new_session=True); os._exit(0)"]).wait()
time.sleep(30)'''


def hostile(source: str) -> nbformat.NotebookNode:
    nb = student_copy()
    i = next(k for k, c in enumerate(nb.cells) if c.get("id") == "data")
    nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source))
    return nb


def package_digest(*more: Path) -> dict[str, str]:
    """A hash of every file of the grader's package, the reference notebook and `more`."""
    files = sorted((ROOT / "llmcourse").rglob("*.py")) + [FIXTURE, *more]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def escapees() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if MARK in (p.info["cmdline"] or []):
            found.append(p)
    return found


class Listener:
    """A loopback port that records whether anything connected to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.done.set()
        self.thread.join()
        self.sock.close()


@pytest.mark.platform("linux")
@needs_sandbox
def test_the_sandbox_prefix_hides_the_checkout_and_drops_privileges(tmp_path):
    work, runtime = tmp_path / "work", tmp_path / "runtime"
    work.mkdir()
    runtime.mkdir()
    prefix = isolation.kernel_prefix(HAVE, work, runtime)
    probe = (f"import os, sys; print(os.getuid()); print(os.path.exists({str(FIXTURE)!r})); "
             f"print(os.path.exists({str(ROOT / 'llmcourse' / 'checks.py')!r})); "
             "open('made-inside', 'w').write('x'); import llmcourse; print(llmcourse.__name__)")
    done = subprocess.run([*prefix, sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(isolation.NOBODY), "False", "True", "llmcourse"]
    assert (work / "made-inside").read_text() == "x"  # its working folder is its own, and writable


def test_without_bubblewrap_the_record_says_what_the_kernel_got(monkeypatch):
    monkeypatch.setenv("LLMCOURSE_SANDBOX", "off")
    isolation.detect.cache_clear()
    try:
        got = isolation.detect()
        assert got.level == "process" and "LLMCOURSE_SANDBOX" in got.reason
        assert isolation.kernel_prefix(got, Path("w"), Path("r")) == []
        monkeypatch.delenv("LLMCOURSE_SANDBOX")
        monkeypatch.setenv("PATH", "/nonexistent")
        isolation.detect.cache_clear()
        missing = isolation.detect()
        assert missing.level == "process" and "bubblewrap" in missing.describe() and "Fix:" in missing.reason
    finally:
        isolation.detect.cache_clear()


@pytest.mark.slow
@pytest.mark.platform("linux")
@needs_sandbox
def test_the_sandbox_costs_under_two_seconds_a_submission(tmp_path, monkeypatch):
    """The same honest submission graded 3 times in the sandbox and 3 times without: the medians differ < 2 s."""
    sub = write(tmp_path / "submitted", "honest", honest())
    times = {"bubblewrap": [], "process": []}
    for round_ in range(3):
        for level in ("process", "bubblewrap"):
            monkeypatch.setenv("LLMCOURSE_SANDBOX", "on" if level == "bubblewrap" else "off")
            isolation.detect.cache_clear()
            records = grade([sub], FIXTURE, out=tmp_path / f"{level}{round_}", timeout=120, memory_gib=1.5,
                            progress=False)
            assert records[0]["isolation"].split(" ")[0].rstrip(",") == level
            assert float(sum(r["points"] for r in records[0]["rows"])) == FULL
            times[level].append(records[0]["seconds"])
    isolation.detect.cache_clear()
    extra = statistics.median(times["bubblewrap"]) - statistics.median(times["process"])
    print(f"\nsandbox: {times['bubblewrap']} s, without: {times['process']} s; median cost {extra:+.2f} s")
    assert extra < 2.0


@pytest.mark.platform("linux")
@needs_sandbox
def test_everything_a_sandboxed_kernel_started_dies_with_its_runner(tmp_path):
    """A runner (here a plain process) starts a sandboxed program that leaves a double-forked grandchild behind; the
    runner is killed with SIGKILL, as a lost cluster worker is: the grandchild goes with it."""
    work, runtime = tmp_path / "work", tmp_path / "runtime"
    work.mkdir()
    runtime.mkdir()
    prefix = isolation.kernel_prefix(HAVE, work, runtime)
    leave = ("import os, subprocess, sys, time; "
             f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {MARK!r}], "
             "start_new_session=True); time.sleep(600)")
    program = [*prefix, sys.executable, "-c", leave]
    runner = subprocess.Popen([sys.executable, "-c", f"import subprocess, time; subprocess.Popen({program!r}); "
                                                     "time.sleep(600)"])
    try:
        deadline = time.monotonic() + 30
        while not escapees() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert escapees(), "the sandboxed program did not start its grandchild"
        runner.kill()
        runner.wait()
        gone, alive = psutil.wait_procs(escapees(), timeout=10)
        assert not alive, f"outlived its runner: {alive}"
    finally:
        runner.kill()
        for p in escapees():
            p.kill()


def test_the_sandbox_binds_over_its_tmpfs_not_under_it(tmp_path):
    """bubblewrap mounts in order: /tmp's tmpfs must come before the read-only views, or a checkout under /tmp (a CI
    clone) would be hidden from its own kernel."""
    fake = isolation.Isolation("bubblewrap", bwrap="/usr/bin/bwrap")
    prefix = isolation.kernel_prefix(fake, tmp_path / "work", tmp_path / "runtime")
    tmpfs = prefix.index("--tmpfs")
    binds = [i for i, arg in enumerate(prefix) if arg in ("--ro-bind", "--bind")]
    assert binds and tmpfs < min(binds)
    assert prefix[prefix.index("--bind") + 1] == str(tmp_path / "work")


def test_each_kernel_is_told_its_share_of_the_cores(monkeypatch):
    """In the sandbox a kernel cannot see the others (its own PID namespace), so the course's thread policy would give
    each all the cores: the grader sets the policy's override too. Week 2.2, --jobs 2 on 2 cores: 366 s a submission
    with 2 threads each, against about 85 s for the notebook alone."""
    from llmcourse.teaching.grading.limits import THREAD_VARS, thread_env
    from llmcourse.threads import ENV_VAR, choose

    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert ENV_VAR in THREAD_VARS
    assert thread_env(2) == {var: "2" for var in THREAD_VARS}
    assert thread_env(8) == {var: "1" for var in THREAD_VARS}  # never 0
    assert choose(4, 0.0, thread_env(4)[ENV_VAR]).threads == 1  # the override wins over a quiet-looking machine
    monkeypatch.setenv(ENV_VAR, "3")  # the instructor's own setting is kept
    assert thread_env(2)[ENV_VAR] == "3"


@pytest.mark.platform("linux")
@needs_sandbox
def test_temporary_files_go_to_disk_and_count_against_the_files_limit(tmp_path):
    """A sandboxed kernel's TMPDIR lies in its working folder, on disk: the capstone saves a 540 MB merged model with
    tempfile.mkdtemp, which the 256 MiB tmpfs refused ('No space left on device'). The files it keeps there count
    against the files limit, which stops the run with status `files`."""
    from llmcourse.teaching.sandbox import run_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, tempfile\n"
        "folder = tempfile.mkdtemp()\n"
        "for i in range(6):  # 300 MiB, over the tmpfs\n"
        "    with open(os.path.join(folder, f'part{i}.bin'), 'wb') as f:\n"
        "        f.write(os.urandom(50 * 2**20))\n"
        "kept = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))\n"
        "print(folder.startswith(os.getcwd()), kept)"
    )])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "saves.ipynb"
    nbformat.write(nb, src)
    outcomes = {}
    for limit_mib in (1024, 100):
        work = tmp_path / f"work{limit_mib}"
        work.mkdir()
        outcomes[limit_mib] = run_notebook(src, work / "out.ipynb", work, timeout=120, sandboxed=True,
                                           files_bytes=limit_mib * 2**20)
    assert outcomes[1024].status == "completed", outcomes[1024].message
    printed = "".join(o.get("text", "") for o in nbformat.read(tmp_path / "work1024" / "out.ipynb", 4).cells[0].outputs)
    assert printed.split() == ["True", str(300 * 2**20)]
    assert outcomes[100].status == "files", outcomes[100].message
    assert "over the limit of 0.10 GiB" in outcomes[100].message


CAN_LIMIT_MEMORY = (isolation.MEMORY_V1 / "cgroup.procs").exists() and os.access(isolation.MEMORY_V1, os.W_OK)


@pytest.mark.platform("linux")
@needs_sandbox
@pytest.mark.skipif(not CAN_LIMIT_MEMORY, reason="no cgroup v1 memory controller this process may write (needs root)")
def test_the_control_group_stops_a_burst_of_memory_the_watchdog_misses(tmp_path, monkeypatch):
    """The runner reads the kernel's resident memory five times a second; a burst between two reads went unseen, and a
    fast one could take the machine's memory before the next. The memory control group is the hard stop: 1.5 GiB
    touched and freed at once under a 0.5 GiB limit, with the watchdog slowed to one read every 5 s, is killed by the
    system and recorded as `memory` (without the group it completed: the burst fell between two reads)."""
    from llmcourse.teaching import sandbox

    probe = isolation.cgroup_create(memory_bytes=2**29)
    isolation.cgroup_cleanup(probe)
    if probe is None or not probe.memory_bytes:
        pytest.skip("this machine lets the grader make no memory control group with a limit")
    monkeypatch.setattr(sandbox, "POLL_S", 5.0)
    made = []
    create = isolation.cgroup_create
    monkeypatch.setattr(isolation, "cgroup_create", lambda *a, **kw: made.append(create(*a, **kw)) or made[-1])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import numpy as np\n"
        "burst = np.ones(3 * 2**26)  # 1.5 GiB, every page touched\n"
        "del burst\n"
        "print('survived')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "burst.ipynb"
    nbformat.write(nb, src)
    work = tmp_path / "work"
    work.mkdir()
    limit = 2**29
    outcome = sandbox.run_notebook(src, work / "out.ipynb", work, timeout=120, sandboxed=True, memory_bytes=limit)
    assert outcome.status == "memory", (outcome.status, outcome.message)
    assert f"hard memory limit of {isolation.hard_memory_bytes(limit) / 2**30:.2f} GiB" in outcome.isolation
    assert made and made[0].memory_bytes and not any(path.exists() for path in made[0].paths)  # removed after


def test_a_kernel_joins_every_control_group_before_it_starts(tmp_path):
    """The sandbox's first process writes its pid into each group's cgroup.procs, then becomes the sandbox: nothing
    it starts is outside the groups' count."""
    groups = isolation.ControlGroups((tmp_path / "pids g", tmp_path / "memory"), 512, 2**30)
    fake = isolation.Isolation("bubblewrap", bwrap="/usr/bin/bwrap")
    prefix = isolation.kernel_prefix(fake, tmp_path / "work", tmp_path / "runtime", groups)
    assert prefix[:2] == ["/bin/sh", "-c"] and prefix[4] == "/usr/bin/bwrap"
    for group in groups.paths:
        (group).mkdir()
    out = subprocess.run([*prefix[:4], "sh", "-c", "echo joined"], capture_output=True, text=True)
    assert out.stdout == "joined\n"
    pids = {(group / "cgroup.procs").read_text().strip() for group in groups.paths}
    assert len(pids) == 1 and pids.pop().isdigit()
    assert groups.describe() == "at most 512 tasks, a hard memory limit of 1.00 GiB"


@pytest.mark.platform("linux")
@pytest.mark.skipif(not CAN_LIMIT_MEMORY, reason="no cgroup v1 memory controller this process may write (needs root)")
def test_groups_a_killed_grader_left_behind_are_swept_and_groups_in_use_are_not(monkeypatch):
    """A grader killed with SIGKILL cannot remove its groups (the slow grading tests kill some): they piled up, one
    per killed run. The next batch removes the empty ones older than a minute; one with a process in it stays."""
    left = isolation._make_group(isolation.MEMORY_V1, {})
    busy = isolation._make_group(isolation.MEMORY_V1, {})
    sleeper = subprocess.Popen(["/bin/sh", "-c", f'echo $$ > "{busy}/cgroup.procs" && exec sleep 60'])
    try:
        for _ in range(50):
            if (busy / "cgroup.procs").read_text().split():
                break
            time.sleep(0.1)
        isolation.sweep_stale_groups((isolation.MEMORY_V1,))
        assert left.exists() and busy.exists()  # both younger than a minute
        monkeypatch.setattr(isolation, "STALE_GROUP_S", 0)
        isolation.sweep_stale_groups((isolation.MEMORY_V1,))
        assert not left.exists() and busy.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        isolation._remove_group(busy)
        if left.exists():
            isolation._remove_group(left)
