"""llmcourse: the helper package of a course on large language models for a modest laptop.

The public API below is imported explicitly, so editors and type checkers see it; every module it comes from
imports torch and transformers only inside the functions that need them, so `import llmcourse` (and the
`llmcourse` command) starts in a fraction of a second. Lesson modules (`llmcourse.data`, `llmcourse.checks`,
`llmcourse.gpt`, ...) load on first use. Instructor tools live in `llmcourse.teaching`.
"""

import importlib
import importlib.util

from .assets import is_offline, list_assets, resolve
from .device import HardwareCard, detect, seed_everything
from .environment import setup
from .errors import AssetUnavailable, ConfigError, CourseError, GradingError, HardwareError, MemoryBudgetError
from .loading import load_model
from .memory import Estimate, estimate
from .planner import Plan, plan
from .qlora import prepare_lora, prepare_qlora

__version__ = "0.1.0"

__all__ = [
    "AssetUnavailable",
    "ConfigError",
    "CourseError",
    "Estimate",
    "GradingError",
    "HardwareCard",
    "HardwareError",
    "MemoryBudgetError",
    "Plan",
    "detect",
    "estimate",
    "is_offline",
    "list_assets",
    "load_model",
    "plan",
    "prepare_lora",
    "prepare_qlora",
    "resolve",
    "seed_everything",
    "setup",
]


def __getattr__(name: str):
    """A submodule on first use (`llmcourse.data`, `llmcourse.checks`, ...): some import torch, so not up front."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'llmcourse' has no attribute {name!r}")
