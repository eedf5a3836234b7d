"""The thread policy: the rule itself, the override, the card, and the load measurement against real spinners."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from llmcourse import threads
from llmcourse.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.delenv(threads.ENV_VAR, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, busy, expected", [
    (2, 0.0, 2),    # quiet: torch's default, all physical cores
    (2, 0.45, 2),   # a browser tab idling: still quiet
    (2, 0.6, 1),    # one busy process: one thread fewer
    (2, 1.0, 1),
    (2, 1.9, 1),    # both cores busy elsewhere: never fewer than one thread
    (2, 5.0, 1),
    (8, 1.0, 7),
    (8, 2.4, 6),    # busy cores are rounded to the nearest whole core: 2.4 -> 2
    (8, 2.6, 5),    # 2.6 -> 3
    (1, 3.0, 1),
])
def test_policy_gives_one_thread_fewer_per_busy_core(cores, busy, expected):
    choice = threads.choose(cores, busy)
    assert choice.threads == expected
    assert choice.physical_cores == cores and choice.busy_cores == busy
    assert ("quiet" in choice.reason) == (busy < threads.QUIET_BELOW)


def test_unknown_load_keeps_torchs_default():
    choice = threads.choose(4, None)
    assert choice.threads == 4 and "unknown" in choice.reason


def test_override_wins_over_the_policy(monkeypatch):
    assert threads.choose(2, 1.5, override=2).threads == 2  # busy, yet the learner asked for 2
    monkeypatch.setenv(threads.ENV_VAR, "3")
    choice = threads.apply()
    assert choice.threads == 3 and torch.get_num_threads() == 3
    assert choice.reason == f"set by {threads.ENV_VAR}=3"
    assert threads.apply(1).threads == 1 and torch.get_num_threads() == 1  # the argument beats the variable


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_bad_override_says_what_to_do(monkeypatch, bad):
    monkeypatch.setenv(threads.ENV_VAR, bad)
    with pytest.raises(ConfigError, match=r"not a thread count: use a whole number >= 1"):
        threads.apply()


def test_setup_sets_threads_and_the_card_shows_why(monkeypatch):
    import llmcourse

    monkeypatch.setenv(threads.ENV_VAR, "1")
    card = llmcourse.setup(quiet=True)
    assert torch.get_num_threads() == 1
    assert card.threads == 1 and card.threads_reason == f"set by {threads.ENV_VAR}=1"
    assert f"torch threads        1: set by {threads.ENV_VAR}=1" in str(card)
    assert "torch threads" in card._repr_html_()


def _spinner(*prefix: str, own_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-c", "while True: pass"], start_new_session=own_session)


def _busy_while(spin: subprocess.Popen) -> float:
    try:
        time.sleep(0.3)
        return threads.busy_cores(1.0)
    finally:
        spin.kill()
        spin.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def _quiet_baseline() -> float:
    """The load before a spinner starts; a machine already using more than a core cannot show a spinner's full core."""
    baseline = threads.busy_cores(0.6)
    if baseline > threads.physical_cores() - 1:
        pytest.skip(f"{baseline:.1f} cores already busy on {threads.physical_cores()}: no core free to measure one")
    return baseline


def test_busy_cores_counts_a_spinner_at_our_priority_and_not_a_niced_one():
    baseline = _quiet_baseline()
    busy = _busy_while(_spinner())
    busy_niced = _busy_while(_spinner("nice", "-n", "19"))  # our session: the scheduler honours its nice
    assert busy - baseline > 0.6, (baseline, busy)
    assert busy_niced - baseline < 0.3, (baseline, busy_niced)
    assert threads.choose(2, busy).threads == 1


@pytest.mark.skipif(not threads.nice_competes(), reason="needs Linux autogroup scheduling")
def test_a_niced_process_in_another_session_is_load_under_autogroup():
    """Between sessions only the session's nice counts, so `nice -n 19` from another terminal still competes."""
    baseline = _quiet_baseline()
    busy = _busy_while(_spinner("nice", "-n", "19", own_session=True))
    assert busy - baseline > 0.6, (baseline, busy)


def test_own_work_is_not_load():
    """The measuring process's own threads are excluded: spinning here while measuring must not count."""
    import threading

    stop = threading.Event()
    worker = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    baseline = threads.busy_cores(0.5)
    worker.start()
    try:
        busy = threads.busy_cores(1.0)
    finally:
        stop.set()
        worker.join()
    assert busy - baseline < 0.3, (baseline, busy)



def _fake_proc(monkeypatch, autogroups: dict[str, str]) -> None:
    """/proc/<pid>/autogroup reads autogroups[pid] (else autogroups['*']); autogroup scheduling reads as enabled."""
    import builtins
    import io

    def fake_open(path, *args, **kwargs):
        path = str(path)
        if path.endswith("/autogroup"):
            pid = path.split("/")[2]
            return io.StringIO(autogroups.get(pid, autogroups["*"]))
        if path == "/proc/sys/kernel/sched_autogroup_enabled":
            return io.StringIO("1\n")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(threads, "open", fake_open, raising=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_process_in_no_autogroup_is_in_the_root_group_at_nice_0(monkeypatch):
    """Linux prints nothing for a process outside any autogroup (CI runners, containers): that is the root group."""
    _fake_proc(monkeypatch, {"*": ""})
    assert threads._autogroup("self") == ("", 0)
    assert threads.nice_competes() is True
    busy = threads.busy_cores(0.2, samples=1)
    assert busy is not None and busy >= 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_spinner_in_the_root_group_is_load_for_a_kernel_in_its_own_autogroup(monkeypatch):
    """A notebook kernel (own session, own autogroup) beside a busy process in the root group: that process competes
    at nice 0 whatever its own nice, and must count; before, its empty autogroup file made it invisible."""
    baseline = _quiet_baseline()
    spin = _spinner("nice", "-n", "19")
    _fake_proc(monkeypatch, {"self": "/autogroup-7 nice 0\n", str(spin.pid): "", "*": "/autogroup-7 nice 0\n"})
    busy = _busy_while(spin)
    assert busy - baseline > 0.6, (baseline, busy)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_autogroup_file_in_another_shape_falls_back_to_each_process_nice(monkeypatch):
    _fake_proc(monkeypatch, {"*": "garbage\n"})
    with pytest.raises(ValueError, match="not '<group> nice <n>'"):
        threads._autogroup("self")
    assert threads.nice_competes() is False
    busy = threads.busy_cores(0.2, samples=1)
    assert busy is not None and busy >= 0.0
