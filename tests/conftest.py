"""Markers that skip by themselves: `gpu` without CUDA, `platform(...)` on another operating system.

    @pytest.mark.gpu                         # skipped when torch.cuda.is_available() is False
    @pytest.mark.platform("linux")           # reads /proc: skipped on macOS and Windows
    @pytest.mark.platform("linux", "darwin") # POSIX process groups: skipped on Windows

Tiny model configs for the tests are in tests/tiny_configs.py. The fixture `smollm2_tokenizer` is SmolLM2's tokenizer
(its ChatML template), skipping the test where the packaged model is not installed.
"""

from __future__ import annotations

import os
import sys

import pytest

PLATFORMS = ("linux", "darwin", "win32")  # sys.platform values
# Variables that change how fast every process started later runs: the notebooks' kernels inherit this process's
# environment (nbval --nbval-current-env), so a test that leaves one set makes CI's notebook runtimes wrong.
SPEED_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "OMP_WAIT_POLICY", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
                   "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "LLMCOURSE_THREADS")


@pytest.fixture(autouse=True)
def _no_speed_variable_left_behind():
    """Fail the test that leaves a SPEED_VARIABLES entry changed (and put it back): Dask's nanny once did, and every
    notebook CI ran afterwards had one OpenMP thread and glibc trimming every 64 KiB (week 6.2 took 2x its time)."""
    before = {name: os.environ.get(name) for name in SPEED_VARIABLES}
    yield
    changed = {name: (was, os.environ.get(name)) for name, was in before.items() if os.environ.get(name) != was}
    for name, (was, _) in changed.items():
        if was is None:
            del os.environ[name]
        else:
            os.environ[name] = was
    if changed:
        pytest.fail(f"this test left {changed} (before, after) in os.environ, which every process started later "
                    "inherits. Fix: use monkeypatch.setenv, or undo what the code under test writes there.")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if "torch" in sys.modules:  # imported by the test modules just collected
        # One intra-op thread: these models are tiny, and on a 2-core machine shared with other work two threads
        # waiting on each other made 30 steps of test_gpt's GPT take 16 s instead of 0.4 s.
        sys.modules["torch"].set_num_threads(1)
    cuda = None  # torch is imported only when a collected test is marked gpu
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            if cuda is None:
                cuda = _cuda_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))
        for marker in item.iter_markers("platform"):
            names = marker.args
            if not names or set(names) - set(PLATFORMS):
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.platform takes names from {PLATFORMS}, "
                                        f"got {names}")
            if not sys.platform.startswith(names):
                item.add_marker(pytest.mark.skip(reason=f"runs on {' or '.join(names)} only, not {sys.platform}"))


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    import llmcourse
    from llmcourse.errors import AssetUnavailable

    try:
        return AutoTokenizer.from_pretrained(llmcourse.resolve("HuggingFaceTB/SmolLM2-135M-Instruct"))
    except AssetUnavailable as exc:
        pytest.skip(f"SmolLM2's tokenizer is not available here: {exc}")
