"""Markers that skip by themselves: `gpu` without CUDA, `platform(...)` on another operating system.

    @pytest.mark.gpu                         # skipped when torch.cuda.is_available() is False
    @pytest.mark.platform("linux")           # reads /proc: skipped on macOS and Windows
    @pytest.mark.platform("linux", "darwin") # POSIX process groups: skipped on Windows

Tiny model configs for the tests are in tests/tiny_configs.py. The fixture `smollm2_tokenizer` is SmolLM2's tokenizer
(its ChatML template), skipping the test where the packaged model is not installed.
"""

from __future__ import annotations

import sys

import pytest

PLATFORMS = ("linux", "darwin", "win32")  # sys.platform values


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
