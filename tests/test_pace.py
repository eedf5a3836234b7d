"""The pace probe that the notebook runtime check divides by (llmcourse.teaching.pace, used by the root conftest.py)."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from llmcourse.teaching import pace


def test_slowdown_forgives_a_slower_machine_up_to_its_cap_and_never_tightens():
    ref = pace.REFERENCE_S
    assert pace.slowdown(ref) == 1.0
    assert pace.slowdown(0.5 * ref) == 1.0  # a faster machine is judged on the declared minutes
    assert pace.slowdown(1.8 * ref) == pytest.approx(1.8)
    assert pace.slowdown(10 * ref) == pace.MAX_SLOWDOWN  # past the cap, the notebook is too slow after all


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.platform("linux", "darwin")
def test_the_probe_sees_a_busy_machine():
    """Two busy processes on this machine's cores: the probe runs at least 1.3x longer than without them."""
    quiet = pace.probe()
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, args=(20.0,)) for _ in range(2)]
    for p in spinners:
        p.start()
    try:
        time.sleep(1.0)
        busy = pace.probe()
    finally:
        for p in spinners:
            p.terminate()
            p.join()
    print(f"\nprobe quiet {quiet:.3f} s, two cores busy {busy:.3f} s ({busy / quiet:.2f}x)")
    assert busy >= 1.3 * quiet
